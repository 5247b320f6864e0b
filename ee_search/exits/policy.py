"""Exit decisions (DESIGN.md §4) and what they cost and earn, computed from cached exit logits.

A sample leaves at the first side exit whose criterion passes its threshold (max softmax >= t, or
entropy <= t, BranchyNet's two criteria); otherwise at the final exit K. Everything here is
vectorised over samples, and over thresholds in the sweep, so a trial's whole trade-off curve costs
milliseconds once the logits exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

CRITERIA = ("max_softmax", "entropy")


def confidence(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """Per-sample score over the last (class) dimension: max softmax, or entropy in nats."""
    logits = logits.float()
    if criterion == "max_softmax":
        return torch.softmax(logits, dim=-1).amax(dim=-1)
    if criterion == "entropy":
        log_p = torch.log_softmax(logits, dim=-1)
        return -(log_p.exp() * log_p).sum(dim=-1)
    raise ValueError(f"criterion must be one of {CRITERIA} but got {criterion!r}")


def passes(score: torch.Tensor, threshold: torch.Tensor | float, criterion: str) -> torch.Tensor:
    """Whether a sample may leave: confident enough (max_softmax >= t) or certain enough (entropy <= t)."""
    return score >= threshold if criterion == "max_softmax" else score <= threshold


def exit_index(scores: torch.Tensor, thresholds: torch.Tensor, criterion: str) -> torch.Tensor:
    """0-based exit taken by each sample. `scores`: [..., K, N] (the last exit's row is ignored);
    `thresholds`: [..., K-1] broadcastable against the leading dims. Returns [..., N]."""
    side = passes(scores[..., :-1, :], thresholds.unsqueeze(-1), criterion)
    final = torch.ones_like(side[..., :1, :])
    # argmax over the exit axis returns the first True: the first exit whose criterion passes.
    return torch.cat([side, final], dim=-2).to(torch.uint8).argmax(dim=-2)


@dataclass(frozen=True)
class ExitOutcome:
    accuracy: float
    avg_exit_depth: float  # mean of k / K, in (0, 1]
    relative_flops: float | None  # mean cost of the exit taken / cost of backbone + final head
    exit_fractions: list[float]  # share of samples leaving at each exit
    exit_accuracies: list[float | None]  # accuracy among the samples that leave at each exit

    def metrics(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy, "avg_exit_depth": self.avg_exit_depth}
        if self.relative_flops is not None:
            out["relative_flops"] = self.relative_flops
        for k, share in enumerate(self.exit_fractions, start=1):
            out[f"exit_{k}_fraction"] = share
        return out


def evaluate(
    logits: torch.Tensor,
    labels: torch.Tensor,
    thresholds: Sequence[float],
    criterion: str,
    relative_costs: Sequence[float] | None = None,
) -> ExitOutcome:
    """The outcome of one threshold setting on cached logits [K, N, C] with labels [N]."""
    k_exits, n = logits.shape[0], logits.shape[1]
    if len(thresholds) != k_exits - 1:
        raise ValueError(f"{k_exits} exits need {k_exits - 1} thresholds but got {len(thresholds)}")
    if n == 0:
        raise ValueError("no samples to evaluate")
    scores = confidence(logits, criterion)
    t = torch.tensor(list(thresholds), dtype=scores.dtype, device=scores.device)
    taken = exit_index(scores, t, criterion)
    correct = logits.argmax(dim=-1).eq(labels.unsqueeze(0))  # [K, N]
    right = correct.gather(0, taken.unsqueeze(0)).squeeze(0)
    counts = torch.bincount(taken, minlength=k_exits)
    right_per_exit = torch.bincount(taken, weights=right.float(), minlength=k_exits)
    cost = None
    if relative_costs is not None:
        cost_t = torch.tensor(list(relative_costs), dtype=torch.float64, device=taken.device)
        cost = float(cost_t[taken].mean())
    counts_l = counts.tolist()
    return ExitOutcome(
        accuracy=float(right.float().mean()),
        avg_exit_depth=float((taken.double() + 1).mean() / k_exits),
        relative_flops=cost,
        exit_fractions=[c / n for c in counts_l],
        exit_accuracies=[(float(r) / c if c else None) for r, c in zip(right_per_exit.tolist(), counts_l)],
    )


def per_exit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Accuracy of every exit on all samples, as if each were the only one."""
    return logits.argmax(dim=-1).eq(labels.unsqueeze(0)).float().mean(dim=1).tolist()
