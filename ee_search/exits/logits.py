"""Running a model over a split once and keeping every exit's logits, so that exit decisions, the
validation loss and the whole threshold sweep are computed from the cache instead of new passes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ee_search.models.base import EarlyExitNetwork


@dataclass
class ExitLogits:
    logits: torch.Tensor  # float32 [K, N, C]
    labels: torch.Tensor  # int64 [N]

    @property
    def num_exits(self) -> int:
        return int(self.logits.shape[0])

    def loss(self, weights: tuple[float, ...]) -> float:
        """The weighted multi-exit loss (the training objective) on the cached logits."""
        total = torch.zeros((), dtype=torch.float64, device=self.logits.device)
        for w, out in zip(weights, self.logits):
            if w:
                total += w * torch.nn.functional.cross_entropy(out, self.labels).double()
        return float(total)


@torch.no_grad()
def collect_exit_logits(
    model: EarlyExitNetwork,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    autocast_dtype: torch.dtype | None = None,
) -> ExitLogits:
    """All exits' logits for every batch, in order, in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    outs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        for x, y in batches:
            with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(x)
            outs.append(torch.stack([z.float() for z in logits]))
            labels.append(y)
    finally:
        model.train(was_training)
    return ExitLogits(torch.cat(outs, dim=1), torch.cat(labels))
