"""The accuracy-vs-compute trade-off curve: one shared threshold swept over its range, every setting
evaluated at once on the cached exit logits (no model runs)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ee_search.exits.policy import outcomes, scores_and_correct

# Bound on the [T, K, N] boolean block per chunk: a full SVHN val split with 101 thresholds and
# 4 exits is ~3e6 elements; the chunking only matters for big test splits and fine sweeps.
_MAX_BLOCK = 2**26


def threshold_grid(criterion: str, num_classes: int, points: int) -> torch.Tensor:
    """Evenly spaced thresholds from 'everything exits early' to 'nothing does'."""
    if criterion == "max_softmax":
        # Max softmax is at least 1/C, so the sweep starts there (all leave) and ends at 1.
        return torch.linspace(1.0 / num_classes, 1.0, points, dtype=torch.float64)
    return torch.linspace(0.0, math.log(num_classes), points, dtype=torch.float64).flip(0)


def tradeoff_curve(
    logits: torch.Tensor,
    labels: torch.Tensor,
    criterion: str,
    thresholds: torch.Tensor,
    relative_costs: Sequence[float],
) -> list[dict[str, float]]:
    """Rows of (threshold, accuracy, avg_exit_depth, relative_flops, exit_k_fraction...), one per
    threshold, the same threshold at every side exit."""
    k_exits, n = logits.shape[0], logits.shape[1]
    scores, correct = scores_and_correct(logits, labels, criterion)
    t_all = thresholds.to(device=scores.device)
    chunk = max(1, _MAX_BLOCK // max(1, k_exits * n))
    rows: list[dict[str, float]] = []
    for start in range(0, len(t_all), chunk):
        t = t_all[start : start + chunk]
        table = outcomes(scores, correct, t.unsqueeze(1).expand(-1, k_exits - 1), criterion, relative_costs)
        for i in range(len(t)):
            row = {"threshold": float(t[i])} | table.outcome(i).metrics()
            rows.append(row)
    return rows
