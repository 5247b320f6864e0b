"""Optimizers of the seed recipe: SGD with momentum, RMSprop (alpha, momentum), AdamW; weight decay
for all. Which settings each takes is declared in the registry, `ee_search/optimizers.py`."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module

import torch

from ee_search.optimizers import OPTIMIZERS


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    alpha: float = 0.99,
) -> torch.optim.Optimizer:
    if lr <= 0:
        raise ValueError(f"lr must be positive but got {lr}")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)} but got {name!r}")
    spec = OPTIMIZERS[name]
    module, cls = spec.torch_class.split(":")
    settings = {"momentum": momentum, "alpha": alpha}
    taken = {setting: settings[setting] for setting in spec.settings}
    return getattr(import_module(module), cls)(params, lr=lr, weight_decay=weight_decay, **taken)
