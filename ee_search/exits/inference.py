"""Early-exit inference that really skips work: after each side exit, the samples that leave are
dropped from the batch, and later stages run only on the survivors.

Predictions and exit indices are scattered back into batch order. In eval mode every layer treats
samples independently (BatchNorm uses its running statistics), so this path must agree with the dense
all-exits path (`policy.exit_predictions` over `model(x)`). The tests and the benchmark check that it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ee_search.exits.policy import CRITERIA, exit_predictions, may_leave, score_logits
from ee_search.models.base import EarlyExitNetwork


@dataclass
class EarlyExitPrediction:
    prediction: torch.Tensor  # int64 [B]
    exit_index: torch.Tensor  # int64 [B], 0-based
    survivors: list[int]  # samples entering each stage (how much work each stage did)


class CompactedEarlyExit(nn.Module):
    """A network's stages and heads run with one operating point's thresholds, dropping the samples
    that leave after each side exit. Returns (prediction, exit 1..K, max softmax at the exit taken).

    The exported model runs the same loop over `torch.export` programs of the stages
    (deploy/early_exit_torch.py). Here there is no `break`: once everyone has left, the remaining
    stages run on an empty batch, for free."""

    def __init__(self, network: EarlyExitNetwork, thresholds: Sequence[float], criterion: str) -> None:
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA} but got {criterion!r}")
        if len(thresholds) != network.num_exits - 1:
            raise ValueError(f"{network.num_exits} exits need {network.num_exits - 1} thresholds "
                             f"but got {len(thresholds)}")
        self.stages = network.stages
        self.heads = network.heads
        self.num_exits = network.num_exits
        self.max_softmax = criterion == "max_softmax"
        # The final exit takes everyone left: its "threshold" always passes.
        always = -1.0 if self.max_softmax else float("inf")
        self.register_buffer("thresholds", torch.tensor([*thresholds, always], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        prediction = torch.zeros(batch, dtype=torch.long, device=x.device)
        taken = torch.full((batch,), self.num_exits, dtype=torch.long, device=x.device)
        top = torch.zeros(batch, dtype=torch.float32, device=x.device)
        alive = torch.arange(batch, device=x.device)
        k = 0
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            logits = head(x).float()
            leave = may_leave(score_logits(logits, self.max_softmax), self.thresholds[k], self.max_softmax)
            gone = alive[leave]
            prediction[gone] = logits[leave].argmax(dim=-1)
            top[gone] = torch.softmax(logits[leave], dim=-1).amax(dim=-1)
            taken[gone] = k + 1
            stay = ~leave
            alive = alive[stay]
            x = x[stay]
            k += 1
        return prediction, taken, top


@torch.no_grad()
def predict_early_exit(
    model: EarlyExitNetwork,
    x: torch.Tensor,
    thresholds: Sequence[float],
    criterion: str,
) -> EarlyExitPrediction:
    if model.training:
        raise ValueError("early-exit inference needs eval mode (call model.eval() first)")
    prediction, taken, _ = CompactedEarlyExit(model, thresholds, criterion).to(x.device)(x)
    # Stage k ran on the samples that had not left before it: those taking exit k or later.
    survivors = [int((taken >= k).sum()) for k in range(1, model.num_exits + 1)]
    return EarlyExitPrediction(prediction, taken - 1, survivors)


@torch.no_grad()
def predict_dense(
    model: EarlyExitNetwork, x: torch.Tensor, thresholds: Sequence[float], criterion: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: run every exit on every sample, then decide as the evaluation does."""
    return exit_predictions(torch.stack([z.float() for z in model(x)]), thresholds, criterion)
