"""Weight averaging over `torch.optim.swa_utils.AveragedModel`: EMA, SWA and T-ADEMA.

- ema: W <- d_n W + (1 - d_n) w, d_n = min(decay, (1 + n) / (warmup + n)), n = updates so far:
       an EMA with TensorFlow's `num_updates` warm-up. Without it (warmup 0: swa_utils'
       get_ema_multi_avg_fn) the average still weighs the random initial weights by decay^n, 72 % after
       a 32-step epoch at decay 0.99, so an EMA trial looks worst exactly when a pruner judges it
       (benchmarks/search_table.py measured it: docs/design.md §8).
- swa: equal running mean from `swa_start_epoch` on;   (swa_utils.get_swa_multi_avg_fn)
       BN statistics recomputed with `update_bn` before every evaluation
- t_adema: EMA whose decay grows with the number of updates n: decay = alpha * tanh(n), with
       alpha = `decay` (the seed's rule): early on the average follows the model closely, later it
       smooths like a plain EMA. Written here because swa_utils has no schedule-dependent EMA; it
       stays a multi-tensor `_foreach_lerp_` with the weight kept on the device.

Every method updates every `update_every` optimizer steps (AveragedModel's first-update check reads
its counter on the host, so updating less often also syncs less often). The averaged module becomes
`trainer.eval_model`: the model that is validated, early-stopped on, checkpointed and evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from ee_search.averaging_methods import AVERAGING_METHODS
from ee_search.train.callbacks import Callback

METHODS = tuple(AVERAGING_METHODS)  # "none" first


def get_t_adema_multi_avg_fn(alpha: float) -> Callable:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"T-ADEMA alpha must be in (0, 1] but got {alpha}")

    @torch.no_grad()
    def t_adema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        if not (torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0])):
            # Integer buffers (BN's num_batches_tracked) are counters, not weights: follow the model.
            torch._foreach_copy_(averaged, current)
            return
        n = torch.as_tensor(num_averaged, dtype=averaged[0].dtype, device=averaged[0].device)
        decay = alpha * torch.tanh(n)
        torch._foreach_lerp_(averaged, current, 1.0 - decay)

    return t_adema_update


def get_ema_warmup_multi_avg_fn(decay: float, warmup: int = 10) -> Callable:
    """EMA whose decay is min(decay, (1 + n) / (warmup + n)) after n updates; warmup 0 (or 1) is
    swa_utils' own EMA. Written here because swa_utils' EMA has a fixed decay."""
    if warmup < 0:
        raise ValueError(f"EMA warmup must be at least 0 but got {warmup}")
    if warmup <= 1:
        return get_ema_multi_avg_fn(decay)
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1] but got {decay}")

    @torch.no_grad()
    def ema_warmup_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        if not (torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0])):
            torch._foreach_copy_(averaged, current)  # integer counters follow the model, as in T-ADEMA
            return
        n = torch.as_tensor(num_averaged, dtype=averaged[0].dtype, device=averaged[0].device)
        step_decay = torch.clamp((1.0 + n) / (warmup + n), max=decay)
        torch._foreach_lerp_(averaged, current, 1.0 - step_decay)

    return ema_warmup_update


def averaged_model(model: torch.nn.Module, method: str, decay: float, warmup: int = 0) -> AveragedModel:
    """An AveragedModel of `model` updated as the registry (ee_search/averaging_methods.py) says."""
    if method not in METHODS[1:]:
        raise ValueError(f"method must be one of {METHODS[1:]} but got {method!r}")
    spec = AVERAGING_METHODS[method]
    module, factory = spec.multi_avg_fn.split(":")
    make = getattr(import_module(module), factory)
    args = ((decay,) if spec.takes_decay else ()) + ((warmup,) if spec.takes_warmup else ())
    return AveragedModel(model, multi_avg_fn=make(*args), use_buffers=spec.use_buffers)


class WeightAveraging(Callback):
    def __init__(self, method: str, decay: float = 0.999, update_every: int = 1, swa_start_epoch: int = 1,
                 warmup: int = 0) -> None:
        if method not in METHODS[1:]:
            raise ValueError(f"method must be one of {METHODS[1:]} but got {method!r}")
        if update_every < 1:
            raise ValueError(f"update_every must be at least 1 but got {update_every}")
        if swa_start_epoch < 1:
            raise ValueError(f"swa_start_epoch must be at least 1 but got {swa_start_epoch}")
        self.method = method
        self.decay = decay
        self.update_every = update_every
        self.swa_start_epoch = swa_start_epoch
        self.warmup = warmup
        self.averaged: AveragedModel | None = None
        self._epoch = 0

    def _active(self) -> bool:
        return self.method != "swa" or self._epoch >= self.swa_start_epoch

    def on_fit_start(self, trainer) -> None:
        self.averaged = averaged_model(trainer.model, self.method, self.decay, self.warmup)
        trainer.eval_model = self.averaged.module

    def state_dict(self) -> dict[str, Any]:
        # Before fit start there is no average yet; once there is, it is the whole state.
        return {} if self.averaged is None else {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, trainer, step: int) -> None:
        if self._active() and step % self.update_every == 0:
            self.averaged.update_parameters(trainer.model)

    def on_validation_start(self, trainer, epoch: int) -> None:
        if not self._active():
            # Before SWA starts there is nothing to average: evaluate the current weights.
            self.averaged.module.load_state_dict(trainer.model.state_dict())
        elif self.method == "swa":
            update_bn(trainer.train_batches, self.averaged.module)
