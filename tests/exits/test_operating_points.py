"""Operating points over per-exit thresholds, checked against the one-setting path (`evaluate`) as
oracle: every point is exactly what `evaluate` gives at its thresholds, and the front equals the
brute-force non-dominated set over every candidate setting evaluated one by one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ee_search.exits import evaluate, hypervolume, operating_points
from ee_search.exits.operating_points import candidate_thresholds, curve_hypervolume
from ee_search.exits.policy import scores_and_correct
from ee_search.pareto import nondominated


def _logits(k_exits: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Later exits are sharper and more often right, as in a trained network."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=g)
    logits = torch.randn(k_exits, n, 5, generator=g) * torch.linspace(1.0, 3.0, k_exits).view(-1, 1, 1)
    logits[:, torch.arange(n), labels] += torch.linspace(0.3, 2.5, k_exits).view(-1, 1)
    return logits, labels


@pytest.mark.parametrize(("k_exits", "criterion"), [(2, "max_softmax"), (3, "entropy"), (4, "max_softmax")])
def test_every_point_is_exactly_what_evaluate_gives_at_its_thresholds(k_exits, criterion):
    logits, labels = _logits(k_exits, 400)
    costs = [0.1, 0.35, 0.7, 1.0][-k_exits:]
    points = operating_points(logits, labels, criterion, costs)
    assert len(points) >= 5
    for p in points:
        ref = evaluate(logits, labels, list(p.thresholds), criterion, costs)
        assert (p.accuracy, p.avg_exit_depth) == (ref.accuracy, ref.avg_exit_depth)  # bit for bit
        assert p.relative_flops == pytest.approx(ref.relative_flops, abs=1e-12)
        assert list(p.exit_fractions) == pytest.approx(ref.exit_fractions)
        if criterion == "max_softmax":
            assert all(0.0 <= t <= 1.0 for t in p.thresholds)
        else:
            assert all(t >= 0.0 for t in p.thresholds)
    # Shallowest first, each point strictly more accurate than the one before.
    assert all(a.avg_exit_depth < b.avg_exit_depth and a.accuracy < b.accuracy for a, b in zip(points, points[1:]))


@pytest.mark.parametrize("criterion", ["max_softmax", "entropy"])
def test_front_equals_brute_force_over_every_candidate_setting(criterion):
    logits, labels = _logits(3, 120, seed=1)
    costs = [0.2, 0.6, 1.0]
    points = operating_points(logits, labels, criterion, costs, max_settings=12**2)
    scores, _ = scores_and_correct(logits, labels, criterion)
    sign = 1.0 if criterion == "max_softmax" else -1.0
    grid = [[sign * float(c) + 0.0 for c in candidate_thresholds(scores[k], criterion, 12)] for k in range(2)]
    settings = list(itertools.product(*grid))
    outcomes = [evaluate(logits, labels, list(s), criterion, costs) for s in settings]
    values = np.array([[o.accuracy, o.avg_exit_depth] for o in outcomes])
    expected = {tuple(v) for v in values[nondominated(values, [True, False])]}
    assert {(p.accuracy, p.avg_exit_depth) for p in points} == expected
    # Among equal settings the cheapest is kept.
    for p in points:
        same = [o.relative_flops for o in outcomes if (o.accuracy, o.avg_exit_depth) == (p.accuracy, p.avg_exit_depth)]
        assert p.relative_flops == pytest.approx(min(same))


def test_the_trials_own_thresholds_are_dominated_by_or_on_the_curve():
    logits, labels = _logits(4, 300, seed=2)
    costs = [0.1, 0.3, 0.6, 1.0]
    own = [0.8123, 0.4567, 0.9011]  # between quantiles: only there because `include` adds them
    points = operating_points(logits, labels, "max_softmax", costs, max_settings=6**3, include=own)
    sampled = evaluate(logits, labels, own, "max_softmax", costs)
    assert any(p.accuracy >= sampled.accuracy and p.avg_exit_depth <= sampled.avg_exit_depth for p in points)


def test_curve_hypervolume_is_the_area_its_points_dominate():
    logits, labels = _logits(3, 200, seed=3)
    points = operating_points(logits, labels, "max_softmax", None)
    assert all(p.relative_flops is None for p in points)
    # Hand-computed staircase: each point adds (1 - depth) x (its accuracy - the previous one's).
    area, previous = 0.0, 0.0
    for p in points:
        area += (1.0 - p.avg_exit_depth) * (p.accuracy - previous)
        previous = p.accuracy
    assert curve_hypervolume(points) == pytest.approx(area)
    assert hypervolume([(p.accuracy, p.avg_exit_depth) for p in points]) == pytest.approx(area)


def test_inputs_are_checked():
    logits, labels = _logits(3, 10)
    with pytest.raises(ValueError, match="3 relative costs"):
        operating_points(logits, labels, "max_softmax", [0.5, 1.0])
    with pytest.raises(ValueError, match="no samples"):
        operating_points(logits[:, :0], labels[:0], "max_softmax", None)
