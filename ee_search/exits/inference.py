"""Early-exit inference that really skips work: after each side exit, the samples that leave are
dropped from the batch, and later stages run only on the survivors.

Predictions and exit indices are scattered back into batch order. In eval mode every layer treats
samples independently (BatchNorm uses its running statistics), so this path must agree with the dense
all-exits path (`policy.decide` over `model(x)`). The tests and the benchmark check that it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ee_search.exits.policy import confidence, decide, passes
from ee_search.models.base import EarlyExitNetwork


@dataclass
class EarlyExitPrediction:
    prediction: torch.Tensor  # int64 [B]
    exit_index: torch.Tensor  # int64 [B], 0-based
    survivors: list[int]  # samples entering each stage (how much work each stage did)


@torch.no_grad()
def predict_early_exit(
    model: EarlyExitNetwork,
    x: torch.Tensor,
    thresholds: Sequence[float],
    criterion: str,
) -> EarlyExitPrediction:
    if model.training:
        raise ValueError("early-exit inference needs eval mode (call model.eval() first)")
    k_exits = model.num_exits
    if len(thresholds) != k_exits - 1:
        raise ValueError(f"{k_exits} exits need {k_exits - 1} thresholds but got {len(thresholds)}")
    batch = x.shape[0]
    prediction = torch.empty(batch, dtype=torch.long, device=x.device)
    taken = torch.full((batch,), k_exits - 1, dtype=torch.long, device=x.device)
    alive = torch.arange(batch, device=x.device)
    survivors: list[int] = []
    for k, (stage, head) in enumerate(zip(model.stages, model.heads)):
        survivors.append(int(alive.numel()))
        x = stage(x)
        logits = head(x)
        if k == k_exits - 1:
            prediction[alive] = logits.argmax(dim=-1)
            break
        leave = passes(confidence(logits, criterion), thresholds[k], criterion)
        gone = alive[leave]
        prediction[gone] = logits[leave].argmax(dim=-1)
        taken[gone] = k
        stay = ~leave
        alive = alive[stay]
        if alive.numel() == 0:  # everyone has left: the remaining stages cost nothing
            survivors += [0] * (k_exits - 1 - k)
            break
        x = x[stay]
    return EarlyExitPrediction(prediction, taken, survivors)


@torch.no_grad()
def predict_dense(
    model: EarlyExitNetwork, x: torch.Tensor, thresholds: Sequence[float], criterion: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: run every exit on every sample, then decide as the evaluation does."""
    return decide(torch.stack([z.float() for z in model(x)]), thresholds, criterion)
