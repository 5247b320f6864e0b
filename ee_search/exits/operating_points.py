"""Operating points (docs/design.md §4): every per-exit threshold setting of one trained network, evaluated
on its cached logits, reduced to the non-dominated set of (max accuracy, min average exit depth).

Candidate thresholds are spread where the samples are: each side exit's confidence quantiles, plus
the bound at which no sample leaves. With Q candidates at each of K-1 side exits there are Q^(K-1)
settings, too many to evaluate one by one (4 exits, Q = 100, 7,326 samples: 7e9 comparisons). But a
sample's exit under a setting depends only on how many of each exit's candidates its score passes,
so every sample falls in one cell of a (Q+1)^(K-1) grid. Histograms of the cells (weighted by
"exit k is right") turn into the accuracy and exit counts of every setting at once through prefix
and suffix sums along the grid's axes: O(N + K Q^(K-1)) instead of O(N Q^(K-1)). Hand-written
because no library does it; `evaluate` (the one-setting path) is the test oracle for each point.

Scores and thresholds are compared in float32, as `policy.evaluate` and the exported model compare
them, so each point's accuracy and depth are exactly what `evaluate` gives at its thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ee_search.exits.policy import scores_and_correct

DEFAULT_MAX_SETTINGS = 2**20  # threshold settings per trial: ~100 candidates per exit at 4 exits
MAX_PER_EXIT = 256  # at 2 side exits: 65k settings, fine enough and a few ms per epoch


@dataclass(frozen=True)
class OperatingPoint:
    thresholds: tuple[float, ...]  # one per side exit
    accuracy: float
    avg_exit_depth: float
    relative_flops: float | None  # None when the exits' costs were not given
    exit_fractions: tuple[float, ...]

    def row(self) -> dict:
        out = {"thresholds": list(self.thresholds), "accuracy": self.accuracy,
               "avg_exit_depth": self.avg_exit_depth, "relative_flops": self.relative_flops}
        out.update({f"exit_{k}_fraction": share for k, share in enumerate(self.exit_fractions, start=1)})
        return out


def candidate_thresholds(scores: torch.Tensor, criterion: str, count: int) -> torch.Tensor:
    """Up to `count` ascending candidates in "higher passes" form (the score for max_softmax, minus the
    entropy): the side exit's score quantiles, so candidates are dense where samples are, plus the
    bound where nobody leaves (1 for max_softmax, entropy 0)."""
    passing = scores if criterion == "max_softmax" else -scores
    levels = torch.linspace(0.0, 1.0, max(2, count - 1), dtype=torch.float64, device=passing.device)
    quantiles = torch.quantile(passing.double(), levels).to(passing.dtype)
    bound = torch.tensor([1.0 if criterion == "max_softmax" else 0.0], dtype=passing.dtype, device=passing.device)
    return torch.unique(torch.cat([quantiles, passing.min().reshape(1), bound]))


def _per_exit_count(num_side_exits: int, num_samples: int, max_settings: int) -> int:
    if num_side_exits == 0:
        return 1
    # Beyond N + 1 candidates an exit has no new settings to offer.
    root = int(math.floor(max_settings ** (1.0 / num_side_exits) + 1e-9))
    return max(2, min(num_samples + 1, MAX_PER_EXIT, root))


def grid_outcomes(scores, correct, candidates, relative_costs):
    """Accuracy, avg exit depth, relative FLOPs [grid] and exit counts [K, grid] of every setting,
    grid = (len(c) for c in candidates): setting (i_1..i_{K-1}) uses candidates[k][i_k] at exit k."""
    k_exits, n = correct.shape
    side = k_exits - 1
    passing = [scores[k] for k in range(side)]
    passed = [torch.searchsorted(candidates[k], passing[k].contiguous(), right=True) for k in range(side)]
    sizes = [len(c) + 1 for c in candidates]  # a sample passes 0..len(c) of its exit's candidates
    device = scores.device
    cell = torch.zeros(n, dtype=torch.long, device=device)
    for k in range(side):
        cell = cell * sizes[k] + passed[k]
    total = int(np.prod(sizes)) if sizes else 1

    def histogram(weights: torch.Tensor | None) -> torch.Tensor:
        return torch.bincount(cell, weights=weights, minlength=total).double().reshape(sizes or [1])

    def region(hist: torch.Tensor, k: int) -> torch.Tensor:
        """Sum of `hist` over the cells whose samples leave at exit k (0-based) under each setting:
        they pass no candidate up to i_j at every earlier exit j (passed_j <= i_j, a prefix sum) and
        pass candidate i_k at exit k (passed_k > i_k, a suffix sum); later exits do not matter."""
        out = hist
        if k + 1 < side:
            out = out.sum(dim=tuple(range(k + 1, side)), keepdim=True)
        for j in range(min(k, side)):
            out = out.cumsum(dim=j)
        if k < side:
            out = out.sum(dim=k, keepdim=True) - out.cumsum(dim=k)
        index = tuple(slice(0, sizes[j] - 1) if out.shape[j] > 1 else slice(None) for j in range(side))
        return out[index]

    shape = [s - 1 for s in sizes]
    counts = torch.stack([region(histogram(None), k).expand(shape) for k in range(k_exits)])  # [K, grid]
    right = sum(region(histogram(correct[k].double()), k).expand(shape) for k in range(k_exits))
    exit_numbers = torch.arange(1, k_exits + 1, dtype=torch.float64, device=device).reshape([-1] + [1] * side)
    costs = torch.as_tensor(list(relative_costs), dtype=torch.float64, device=device).reshape([-1] + [1] * side)
    # Whole numbers held exactly in float64: samples right, and the sum of exit numbers taken.
    return right, (counts * exit_numbers).sum(dim=0), (counts * costs).sum(dim=0) / n, counts


def operating_points(
    logits: torch.Tensor,
    labels: torch.Tensor,
    criterion: str,
    relative_costs: Sequence[float] | None,
    max_settings: int = DEFAULT_MAX_SETTINGS,
    include: Sequence[float] | None = None,
) -> list[OperatingPoint]:
    """The trial's own trade-off curve: the non-dominated per-exit threshold settings, shallowest
    first (each point strictly more accurate than the one before it). `include` (the trial's own
    thresholds) joins the candidates, so the trial's sampled point is dominated by or on the curve."""
    k_exits, n = logits.shape[0], logits.shape[1]
    if n == 0:
        raise ValueError("no samples to evaluate")
    if relative_costs is not None and len(relative_costs) != k_exits:
        raise ValueError(f"{k_exits} exits need {k_exits} relative costs but got {len(relative_costs)}")
    scores, correct = scores_and_correct(logits, labels, criterion)
    per_exit = _per_exit_count(k_exits - 1, n, max_settings)
    candidates = [candidate_thresholds(scores[k], criterion, per_exit) for k in range(k_exits - 1)]
    if include is not None:
        sign = 1.0 if criterion == "max_softmax" else -1.0
        own = torch.tensor([sign * t for t in include], dtype=scores.dtype, device=scores.device)
        candidates = [torch.unique(torch.cat([c, own[k : k + 1]])) for k, c in enumerate(candidates)]
    passing = scores if criterion == "max_softmax" else -scores
    costs = [0.0] * k_exits if relative_costs is None else relative_costs
    right, exit_sum, flops, counts = grid_outcomes(passing, correct, candidates, costs)
    shape = right.shape
    right, exit_sum, flops = right.flatten(), exit_sum.flatten(), flops.flatten()
    chosen = _front_of_grid(right, exit_sum, flops)
    # Only the front leaves the device: a few hundred settings, not the grid.
    right, exit_sum, flops = right[chosen].cpu(), exit_sum[chosen].cpu(), flops[chosen].cpu()
    counts = counts.reshape(k_exits, -1)[:, chosen].cpu()
    candidates = [c.cpu() for c in candidates]
    points = []
    for i, flat in enumerate(chosen.tolist()):
        setting = np.unravel_index(flat, shape) if shape else ()
        points.append(OperatingPoint(
            thresholds=tuple(_threshold(candidates[k][i], criterion) for k, i in enumerate(setting)),
            # The same operations, in the same order, as policy.outcomes: bit-for-bit its numbers.
            accuracy=float(right[i] / n),
            avg_exit_depth=float(exit_sum[i] / n / k_exits),
            relative_flops=float(flops[i]) if relative_costs is not None else None,
            exit_fractions=tuple(float(c) / n for c in counts[:, i].tolist()),
        ))
    return points


def _front_of_grid(right: torch.Tensor, exit_sum: torch.Tensor, flops: torch.Tensor) -> torch.Tensor:
    """`front_indices` for a million settings in linear time: depth and accuracy are whole numbers
    here (the sum of exit numbers, the samples right), so one bucket per depth keeps its most
    accurate, cheapest setting, and the front is a running max over the buckets."""
    depth = exit_sum.long()
    buckets = int(depth.max()) + 1
    most_right = torch.full((buckets,), -1.0, dtype=right.dtype, device=right.device).scatter_reduce(
        0, depth, right, "amax")
    best = right == most_right[depth]
    cost = torch.where(best, flops, torch.full_like(flops, math.inf))
    cheapest = torch.full((buckets,), math.inf, dtype=flops.dtype, device=flops.device).scatter_reduce(
        0, depth, cost, "amin")
    chosen = best & (flops == cheapest[depth])
    index = torch.arange(len(right), device=right.device)
    first = torch.full((buckets,), len(right), dtype=torch.long, device=right.device).scatter_reduce(
        0, depth[chosen], index[chosen], "amin")
    filled = first < len(right)
    bucket_right, settings = most_right[filled], first[filled]  # by depth, shallowest first
    previous = torch.cat([torch.full((1,), -1.0, dtype=right.dtype, device=right.device),
                          torch.cummax(bucket_right, 0).values[:-1]])
    return settings[bucket_right > previous]


def _threshold(candidate: torch.Tensor, criterion: str) -> float:
    # float32 -> Python float is exact, so the threshold written to a file compares as it did here.
    value = float(candidate)
    return value if criterion == "max_softmax" else -value + 0.0  # + 0.0: no "-0.0" entropy threshold


def front_indices(accuracy: np.ndarray, depth: np.ndarray, flops: np.ndarray | None = None) -> np.ndarray:
    """Indices of the non-dominated points (max accuracy, min depth), shallowest first, one per
    distinct (accuracy, depth): among equal ones the cheapest in FLOPs. A sort and a running max."""
    keys = [-accuracy, depth] if flops is None else [flops, -accuracy, depth]
    order = np.lexsort(keys)  # by depth, then accuracy descending, then FLOPs
    best = np.maximum.accumulate(accuracy[order])
    previous = np.concatenate([[-np.inf], best[:-1]])
    return order[accuracy[order] > previous]


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float] = (0.0, 1.0)) -> float:
    """Area dominated by (accuracy, avg_exit_depth) points up to the reference (accuracy 0, depth 1):
    the `curve_hypervolume` of a trial's own points, or the hypervolume of a front.

    In two dimensions this is a sort and a sum: walk the points from shallowest to deepest, and each
    one that is more accurate than all before it adds the rectangle between its depth, the reference
    depth, its accuracy and the best accuracy so far. Dominated points add nothing."""
    ref_acc, ref_depth = reference
    inside = sorted((d, a) for a, d in points if a > ref_acc and d < ref_depth)
    area, best = 0.0, ref_acc
    for depth, accuracy in inside:
        if accuracy > best:
            area += (ref_depth - depth) * (accuracy - best)
            best = accuracy
    return area


def curve_hypervolume(points: Sequence[OperatingPoint]) -> float:
    return hypervolume([(p.accuracy, p.avg_exit_depth) for p in points])
