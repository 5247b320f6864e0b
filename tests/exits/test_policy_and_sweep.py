"""Exit decisions, metrics and the threshold sweep against hand-computed examples and against a
per-threshold loop (the sweep is the vectorised form of calling `evaluate` once per threshold)."""

from __future__ import annotations

import math

import pytest
import torch

from ee_search.exits import (
    criterion_score,
    evaluate,
    exit_index,
    threshold_grid,
    tradeoff_curve,
)


def _logits_from_probs(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float32))


# 3 exits, 4 samples, 2 classes; labels all 0. Max-softmax per exit and sample:
#   exit 1: 0.95 0.60 0.70 0.55     predictions: 0 1 0 1
#   exit 2: 0.80 0.90 0.65 0.52     predictions: 0 0 1 0
#   exit 3: 0.99 0.99 0.99 0.99     predictions: 0 0 0 1
PROBS = [
    [[0.95, 0.05], [0.40, 0.60], [0.70, 0.30], [0.45, 0.55]],
    [[0.80, 0.20], [0.90, 0.10], [0.35, 0.65], [0.52, 0.48]],
    [[0.99, 0.01], [0.99, 0.01], [0.99, 0.01], [0.01, 0.99]],
]
LABELS = torch.zeros(4, dtype=torch.long)
COSTS = [0.2, 0.6, 1.1]


def test_hand_computed_decisions_and_metrics():
    logits = _logits_from_probs(PROBS)
    # thresholds (0.9, 0.85): sample 0 leaves at exit 1 (0.95), sample 1 at exit 2 (0.90),
    # samples 2 and 3 reach exit 3.
    taken = exit_index(criterion_score(logits, "max_softmax"), torch.tensor([0.9, 0.85]), "max_softmax")
    assert taken.tolist() == [0, 1, 2, 2]
    out = evaluate(logits, LABELS, [0.9, 0.85], "max_softmax", COSTS)
    # right: sample 0 (exit 1 says 0), 1 (exit 2 says 0), 2 (exit 3 says 0); sample 3 wrong.
    assert out.accuracy == pytest.approx(3 / 4)
    assert out.avg_exit_depth == pytest.approx((1 + 2 + 3 + 3) / (4 * 3))
    assert out.relative_flops == pytest.approx((0.2 + 0.6 + 1.1 + 1.1) / 4)
    assert out.exit_fractions == [0.25, 0.25, 0.5]


def test_threshold_equal_to_score_passes_and_entropy_compares_downwards():
    logits = _logits_from_probs(PROBS)
    assert evaluate(logits, LABELS, [0.95, 2.0], "max_softmax").exit_fractions == [0.25, 0.0, 0.75]
    ent = criterion_score(logits, "entropy")
    p = 0.95
    assert ent[0, 0].item() == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), rel=1e-5)
    # entropy <= t leaves: only sample 0 at exit 1 is that certain
    out = evaluate(logits, LABELS, [0.25, 0.0], "entropy")
    assert out.exit_fractions == [0.25, 0.0, 0.75]


def test_sweep_equals_a_loop_over_evaluate():
    torch.manual_seed(0)
    logits = torch.randn(3, 500, 10) * 3
    labels = torch.randint(0, 10, (500,))
    grid = threshold_grid("max_softmax", 10, 41)
    rows = tradeoff_curve(logits, labels, "max_softmax", grid, COSTS)
    for row, t in zip(rows, grid.tolist()):
        ref = evaluate(logits, labels, [t, t], "max_softmax", COSTS)
        assert row["threshold"] == pytest.approx(t)
        assert row["accuracy"] == pytest.approx(ref.accuracy)
        assert row["avg_exit_depth"] == pytest.approx(ref.avg_exit_depth)
        assert row["relative_flops"] == pytest.approx(ref.relative_flops)
        assert [row[f"exit_{k}_fraction"] for k in (1, 2, 3)] == pytest.approx(ref.exit_fractions)


def test_sweep_end_points():
    logits = _logits_from_probs(PROBS)
    for criterion in ("max_softmax", "entropy"):
        rows = tradeoff_curve(logits, LABELS, criterion, threshold_grid(criterion, 2, 5), COSTS)
        assert rows[0]["avg_exit_depth"] == pytest.approx(1 / 3)  # everything leaves at exit 1
        assert rows[-1]["exit_3_fraction"] == pytest.approx(1.0)  # nothing leaves early (ties aside)
        assert rows[0]["accuracy"] == pytest.approx(0.5)  # exit 1 alone: samples 0 and 2 right


def test_sweep_chunks_give_the_same_rows(monkeypatch):
    from ee_search.exits import sweep

    torch.manual_seed(1)
    logits, labels = torch.randn(4, 300, 5), torch.randint(0, 5, (300,))
    grid = threshold_grid("entropy", 5, 23)
    full = tradeoff_curve(logits, labels, "entropy", grid, [0.1, 0.4, 0.7, 1.05])
    monkeypatch.setattr(sweep, "_MAX_BLOCK", 4 * 300 * 3)  # 3 thresholds per chunk
    assert tradeoff_curve(logits, labels, "entropy", grid, [0.1, 0.4, 0.7, 1.05]) == full


def test_wrong_threshold_count_is_refused():
    with pytest.raises(ValueError, match="need 2 thresholds"):
        evaluate(_logits_from_probs(PROBS), LABELS, [0.5], "max_softmax")
