"""FLOPs per exit, counted by `torch.utils.flop_counter.FlopCounterMode` (docs/design.md §4).

Each stage and head is counted on its own, once per model shape; the cost of leaving at exit k is the
backbone up to stage k plus heads 1..k (a sample that reaches exit k has run every side head before
it), and `relative` divides that by the plain network's cost: the backbone plus the final head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ee_search.models.base import EarlyExitNetwork


@dataclass(frozen=True)
class ExitCosts:
    stage_flops: list[int]
    head_flops: list[int]

    @property
    def cumulative(self) -> list[int]:
        """FLOPs to leave at each exit: stages 1..k plus heads 1..k."""
        out, total = [], 0
        for stage, head in zip(self.stage_flops, self.head_flops):
            total += stage + head
            out.append(total)
        return out

    @property
    def full_network(self) -> int:
        """The backbone plus the final head: the network without any side exits."""
        return sum(self.stage_flops) + self.head_flops[-1]

    @property
    def relative(self) -> list[float]:
        return [c / self.full_network for c in self.cumulative]


@torch.no_grad()
def exit_costs(model: EarlyExitNetwork, input_shape: tuple[int, int, int]) -> ExitCosts:
    """Forward FLOPs per image, by stage and head, for inputs of shape (C, H, W)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype)
        stage_flops, head_flops = [], []
        for stage, head in zip(model.stages, model.heads):
            with FlopCounterMode(display=False) as counter:
                x = stage(x)
            stage_flops.append(int(counter.get_total_flops()))
            with FlopCounterMode(display=False) as counter:
                head(x)
            head_flops.append(int(counter.get_total_flops()))
    finally:
        model.train(was_training)
    return ExitCosts(stage_flops, head_flops)


def training_flops_per_image(model: EarlyExitNetwork, input_shape: tuple[int, int, int]) -> int:
    """Forward + backward FLOPs of one training image through every exit, for MFU figures."""
    was_training = model.training
    model.train()
    try:
        param = next(model.parameters())
        x = torch.zeros((2, *input_shape), device=param.device, dtype=param.dtype)  # BN needs > 1
        target = torch.zeros(2, dtype=torch.long, device=param.device)
        with FlopCounterMode(display=False) as counter:
            model.exit_loss(model(x), target).backward()
        model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
