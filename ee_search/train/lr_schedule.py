"""The learning rate over a fit: an optional linear warm-up, then constant or a cosine decay, stepped
after every optimizer step (docs/design.md §8, `train.lr_schedule`).

Built from torch's own schedulers (LinearLR, CosineAnnealingLR, joined by SequentialLR), so the
values are torch's; this module only turns the study's epochs into steps. The callback owns the
scheduler's state, so a trial resumed from last.pt (even mid-epoch) goes on at the same step of the
same schedule. The cosine runs to `max_epochs`: a trial that early stopping ends sooner simply ends
higher on the curve, as a live run with a fixed budget would.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from ee_search.train.callbacks import Callback, TrainerView

DECAYS = ("none", "cosine")


def build_lr_scheduler(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, max_epochs: int,
                       warmup_epochs: float = 0.0, warmup_start_factor: float = 0.1, decay: str = "none",
                       min_factor: float = 0.0) -> LRScheduler | None:
    """Torch's scheduler for this schedule, stepped once per optimizer step; None when the learning
    rate stays constant (no warm-up, no decay)."""
    if steps_per_epoch < 1 or max_epochs < 1:
        raise ValueError(f"steps_per_epoch and max_epochs must be at least 1 but got {steps_per_epoch}, {max_epochs}")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS} but got {decay!r}")
    total = steps_per_epoch * max_epochs
    warmup = min(round(warmup_epochs * steps_per_epoch), total)
    # CosineAnnealingLR takes one eta_min: the first group's lr sets it (a fit has one group).
    eta_min = optimizer.param_groups[0]["lr"] * min_factor  # read before LinearLR lowers the lr
    parts: list[LRScheduler] = []
    if warmup > 0:
        parts.append(LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=warmup))
    if decay == "cosine" and total > warmup:
        parts.append(CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return SequentialLR(optimizer, parts, milestones=[warmup])


class LearningRateSchedule(Callback):
    """Sets the learning rate of each optimizer step from the schedule; built at fit start, when the
    trainer's optimizer and its number of batches per epoch are known."""

    def __init__(self, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.1, decay: str = "none",
                 min_factor: float = 0.0) -> None:
        self.options = {"warmup_epochs": warmup_epochs, "warmup_start_factor": warmup_start_factor,
                        "decay": decay, "min_factor": min_factor}
        self.scheduler: LRScheduler | None = None

    def on_fit_start(self, trainer: TrainerView) -> None:
        # First in `standard_order`: last.pt (restored in LastCheckpoint's on_fit_start) finds the
        # scheduler built.
        self.scheduler = build_lr_scheduler(trainer.optimizer, steps_per_epoch=len(trainer.train_batches),
                                            max_epochs=trainer.max_epochs, **self.options)

    def on_train_batch_end(self, trainer: TrainerView, step: int) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["scheduler"]
        if (saved is None) != (self.scheduler is None):
            raise ValueError("last.pt was written under another train.lr_schedule than this fit's")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved)
            # The optimizer's lr came back with its own state; set it from the scheduler all the same,
            # so the two agree whatever order they were restored in.
            for group, lr in zip(self.scheduler.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
                group["lr"] = lr
