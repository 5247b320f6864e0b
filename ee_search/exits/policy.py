"""Exit decisions (docs/design.md §4) and what they cost and earn, computed from cached exit logits.

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


def score_logits(logits: torch.Tensor, max_softmax: bool) -> torch.Tensor:
    """Per-sample score over the last (class) dimension: max softmax, or entropy in nats. The one
    formula every path uses: evaluation, sweeps, operating points and compacted inference; the
    exported model's routines (deploy/early_exit_torch.py, early_exit_onnx.py) carry copies of it,
    checked against it by the export's tests."""
    logits = logits.float()
    if max_softmax:
        return torch.softmax(logits, dim=-1).amax(dim=-1)
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def may_leave(score: torch.Tensor, threshold: torch.Tensor, max_softmax: bool) -> torch.Tensor:
    """Whether a sample may leave: confident enough (max_softmax >= t) or certain enough (entropy <= t).
    A bool rather than the criterion's name: the compacted loop decides it once, not per stage."""
    return score >= threshold if max_softmax else score <= threshold


def criterion_score(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """The criterion's per-sample score by its name: max softmax, or entropy (lower = more certain)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA} but got {criterion!r}")
    return score_logits(logits, criterion == "max_softmax")


@dataclass(frozen=True)
class ExitPolicy:
    """A trial's exit rule: one threshold per side exit, compared with the criterion's score."""

    thresholds: tuple[float, ...]
    criterion: str


def exit_index(scores: torch.Tensor, thresholds: torch.Tensor, criterion: str) -> torch.Tensor:
    """0-based exit taken by each sample. `scores`: [..., K, N] (the last exit's row is ignored);
    `thresholds`: [..., K-1] broadcastable against the leading dims. Returns [..., N]."""
    side = may_leave(scores[..., :-1, :], thresholds.unsqueeze(-1), criterion == "max_softmax")
    final = torch.ones_like(side[..., :1, :])
    # argmax over the exit axis returns the first True: the first exit whose criterion passes.
    return torch.cat([side, final], dim=-2).to(torch.uint8).argmax(dim=-2)


@dataclass(frozen=True)
class ExitOutcome:
    accuracy: float
    avg_exit_depth: float  # mean of k / K, in (0, 1]
    relative_flops: float | None  # mean cost of the exit taken / cost of backbone + final head
    exit_fractions: list[float]  # share of samples leaving at each exit

    def metrics(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy, "avg_exit_depth": self.avg_exit_depth}
        if self.relative_flops is not None:
            out["relative_flops"] = self.relative_flops
        for k, share in enumerate(self.exit_fractions, start=1):
            out[f"exit_{k}_fraction"] = share
        return out


@dataclass(frozen=True)
class Outcomes:
    """What T threshold settings earn and cost on one set of cached logits, one entry per setting."""

    accuracy: torch.Tensor  # float64 [T]
    avg_exit_depth: torch.Tensor  # float64 [T]
    relative_flops: torch.Tensor | None  # float64 [T]
    exit_fractions: torch.Tensor  # float64 [T, K]

    def outcome(self, i: int) -> ExitOutcome:
        flops = self.relative_flops
        return ExitOutcome(
            accuracy=float(self.accuracy[i]),
            avg_exit_depth=float(self.avg_exit_depth[i]),
            relative_flops=float(flops[i]) if flops is not None else None,
            exit_fractions=self.exit_fractions[i].tolist(),
        )


def outcomes(
    scores: torch.Tensor,
    correct: torch.Tensor,
    thresholds: torch.Tensor,
    criterion: str,
    relative_costs: Sequence[float] | None = None,
) -> Outcomes:
    """The one place exit decisions become metrics: accuracy, depth, FLOPs and exit shares for each
    row of `thresholds` [T, K-1], from per-exit `scores` [K, N] and `correct` [K, N] (whether exit k
    classifies sample n right). The single evaluation, the sweep and the dense front all call it."""
    k_exits = scores.shape[0]
    taken = exit_index(scores.unsqueeze(0), thresholds.to(scores), criterion)  # [T, N]
    right = correct.gather(0, taken)  # correct[taken[t, n], n]
    cost = None
    if relative_costs is not None:
        cost_t = torch.as_tensor(list(relative_costs), dtype=torch.float64, device=taken.device)
        cost = cost_t[taken].mean(dim=1)
    return Outcomes(
        accuracy=right.double().mean(dim=1),
        avg_exit_depth=(taken.double() + 1).mean(dim=1) / k_exits,
        relative_flops=cost,
        exit_fractions=torch.nn.functional.one_hot(taken.long(), k_exits).double().mean(dim=1),
    )


def scores_and_correct(logits: torch.Tensor, labels: torch.Tensor, criterion: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-exit criterion score [K, N] and correctness [K, N] of cached logits [K, N, C].

    Scores stay float32, and thresholds are compared in float32 too, as compacted inference and the
    exported model compare them: a sample on a threshold's edge exits at the same place everywhere."""
    return criterion_score(logits, criterion), logits.argmax(dim=-1).eq(labels.unsqueeze(0))


def exit_predictions(logits: torch.Tensor, thresholds: Sequence[float],
                     criterion: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction [N] and 0-based exit taken [N] of every sample, from all exits' logits [K, N, C]."""
    t = torch.tensor(list(thresholds), dtype=torch.float32, device=logits.device)
    taken = exit_index(criterion_score(logits, criterion), t, criterion)
    return logits.argmax(dim=-1).gather(0, taken.unsqueeze(0)).squeeze(0), taken


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
    scores, correct = scores_and_correct(logits, labels, criterion)
    t = torch.tensor([list(thresholds)], dtype=torch.float32)
    return outcomes(scores, correct, t, criterion, relative_costs).outcome(0)


def per_exit_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Accuracy of every exit on all samples, as if each were the only one."""
    return logits.argmax(dim=-1).eq(labels.unsqueeze(0)).float().mean(dim=1).tolist()
