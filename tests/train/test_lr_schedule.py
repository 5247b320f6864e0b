"""train.lr_schedule: the learning rate of every optimizer step against the schedule written out by
hand (linear warm-up, then constant or a half cosine), in isolation and inside a real fit; a constant
lr builds nothing. Resuming mid-schedule is in test_resume.py (its fits run a schedule)."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from ee_search.config import validate_raw
from ee_search.errors import UserInputError
from ee_search.fit import train_network
from ee_search.train.lr_schedule import build_lr_scheduler
from tests.conftest import TINY_STUDY

LR = 0.3


def expected_lr(step: int, *, steps_per_epoch: int, max_epochs: int, warmup_epochs: float = 0.0,
                warmup_start_factor: float = 0.1, decay: str = "none", min_factor: float = 0.0) -> float:
    """The lr of optimizer step `step` (0-based), from the formulas of docs/design.md §8."""
    total = steps_per_epoch * max_epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    if step < warmup:
        return LR * (warmup_start_factor + (1 - warmup_start_factor) * step / warmup)
    if decay == "none":
        return LR
    low = LR * min_factor
    return low + (LR - low) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def _stepped_lrs(steps_per_epoch: int, max_epochs: int, **schedule) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR, momentum=0.9)
    scheduler = build_lr_scheduler(optimizer, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs, **schedule)
    lrs = []
    for _ in range(steps_per_epoch * max_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("schedule", [
    {"warmup_epochs": 2},
    {"warmup_epochs": 1.5, "warmup_start_factor": 0.25},
    {"decay": "cosine"},
    {"decay": "cosine", "min_factor": 0.05},
    {"warmup_epochs": 1, "decay": "cosine", "min_factor": 0.01},
    {"warmup_epochs": 0.3, "decay": "cosine"},  # 3 warm-up steps of 10
])
def test_every_step_gets_the_schedules_lr(schedule):
    lrs = _stepped_lrs(10, 5, **schedule)
    assert lrs == pytest.approx([expected_lr(s, steps_per_epoch=10, max_epochs=5, **schedule) for s in range(50)],
                                rel=1e-9, abs=1e-12)
    assert max(lrs) == pytest.approx(LR)


def test_a_constant_lr_builds_no_scheduler_and_bad_settings_are_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    assert build_lr_scheduler(optimizer, steps_per_epoch=10, max_epochs=5) is None
    with pytest.raises(ValueError, match="decay must be one of"):
        build_lr_scheduler(optimizer, steps_per_epoch=10, max_epochs=5, decay="step")


def _tiny(**lr_schedule):
    raw = yaml.safe_load(TINY_STUDY)
    raw["data"]["train_subset"] = 320  # 5 batches of 64 an epoch
    raw["train"].update(lr=LR, max_epochs=3, lr_schedule=lr_schedule,
                        early_stopping={"monitor": "val_loss", "patience": 50, "tol": 0.0})
    return raw


def test_a_fit_trains_on_the_schedule(tmp_path):
    """The `lr` logged after each epoch is the lr the next epoch's first step gets."""
    schedule = {"warmup_epochs": 1.4, "decay": "cosine", "min_factor": 0.1}
    result = train_network(validate_raw(_tiny(**schedule), "tiny"), device=torch.device("cpu"), seed=7)
    logged = [epoch["lr"] for epoch in result.fit.history]
    assert logged == pytest.approx([expected_lr(5 * e, steps_per_epoch=5, max_epochs=3, **schedule)
                                    for e in (1, 2, 3)], rel=1e-9)
    assert logged[0] < LR and logged[-1] == pytest.approx(LR * 0.1)


@pytest.mark.parametrize("field, value, says", [
    ("decay", "step", "train.lr_schedule.decay"),
    ("warmup_start_factor", 0, "train.lr_schedule.warmup_start_factor"),
    ("warmup_epochs", -1, "train.lr_schedule.warmup_epochs"),
    ("warm_up", 2, "train.lr_schedule.warm_up"),
])
def test_a_bad_schedule_names_its_field(field, value, says):
    with pytest.raises(UserInputError, match=says.replace(".", r"\.")):
        validate_raw(_tiny(**{field: value}), "tiny")
