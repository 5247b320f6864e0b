"""A resumable trial (DESIGN.md §9): what `last.pt` holds, how it is captured and restored.

`last.pt` is plain data that `torch.load(weights_only=True)` reads: the model, the optimizer, the
averaged model, early stopping's state, the best checkpoint (weights, epoch and that epoch's
validation logits, so the trial's final outcome does not depend on having been resumed), the metric
history (and the pruner's, which is its monitored column), the epoch, and every random state the
rest of training draws from: the data generator (shuffles and augmentation), the epoch's order and
position when it was interrupted mid-epoch, and torch's global RNG (dropout). Restored into a trainer
built the same way, training goes on bit for bit as if it had never stopped (on CPU; CUDA kernels
are not all deterministic).

It is written at an epoch boundary every `every_epochs` epochs, after early stopping and the best
checkpoint have judged the epoch and BEFORE the epoch's metrics are logged, so a run never holds a
logged epoch that no `last.pt` covers when every_epochs is 1. An interrupt (SIGTERM, Ctrl-C) writes it
at the batch boundary where training stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ee_search.exits.logits import ExitLogits
from ee_search.train.averaging import WeightAveraging
from ee_search.train.callbacks import Callback
from ee_search.train.checkpoint import BestCheckpoint
from ee_search.train.early_stopping import EarlyStopping, StopState
from ee_search.train.outcome import TrainingInterrupted

FORMAT = 1


@dataclass
class ResumeSpec:
    """How a fit saves (and optionally continues from) its resumable state."""

    path: Path  # where last.pt is written locally (atomically) before `on_written` publishes it
    every_epochs: int = 1
    state: dict[str, Any] | None = None  # a loaded last.pt to continue from
    on_written: Callable[[Path], None] | None = None  # publish last.pt (the objective uploads it)
    on_best: Callable[[Path], None] | None = None  # publish best.pt each time it improves
    extra: Callable[[], dict[str, Any]] | None = None  # caller's own entries (trial numbers, ...)
    write_seconds: list[float] = field(default_factory=list)  # measured, per write

    def __post_init__(self) -> None:
        if self.every_epochs < 1:
            raise ValueError(f"every_epochs must be at least 1 but got {self.every_epochs}")


def to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def capture(trainer, stopper: EarlyStopping, best: BestCheckpoint, averaging: WeightAveraging | None,
            *, mid_epoch: bool) -> dict[str, Any]:
    """The resumable state of `trainer` now: at an epoch boundary, or mid-epoch after a batch."""
    batches = trainer.train_batches
    data = batches.state_dict() if hasattr(batches, "state_dict") else None
    if data is not None and not mid_epoch:
        data = {**data, "order": None, "next": 0}
    loss_sum, correct, seen = trainer.epoch_sums if mid_epoch else (None, None, 0)
    device = _device(trainer.model)
    rng = {"torch": torch.get_rng_state(), "data": to_cpu(data),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    best_logits = best.best_val_logits
    monitor = stopper.monitor
    return {
        "format": FORMAT,
        "epoch": trainer.epoch - 1 if mid_epoch else trainer.epoch,  # epochs completed
        "mid_epoch": mid_epoch,
        "global_step": trainer.global_step,
        "should_stop": trainer.should_stop,
        "stop_reason": trainer.stop_reason,
        "history": [dict(h) for h in trainer.history],
        "pruner_history": [h[monitor] if math.isfinite(h[monitor]) else None for h in trainer.history],
        "model": to_cpu(trainer.model.state_dict()),
        "optimizer": to_cpu(trainer.optimizer.state_dict()),
        "averaged": None if averaging is None else to_cpu(averaging.averaged.state_dict()),
        "early_stopping": {"best": stopper.state.best, "best_epoch": stopper.state.best_epoch,
                           "stale": stopper.state.stale},
        "best": None if best.best_state is None else {
            "state_dict": to_cpu(best.best_state),
            "epoch": best.best_epoch,
            "val_logits": None if best_logits is None else {"logits": to_cpu(best_logits.logits),
                                                            "labels": to_cpu(best_logits.labels)},
        },
        "epoch_sums": {"loss_sum": to_cpu(loss_sum), "correct": to_cpu(correct), "seen": seen},
        "rng": rng,
    }


def restore(trainer, state: dict[str, Any], stopper: EarlyStopping, best: BestCheckpoint,
            averaging: WeightAveraging | None) -> None:
    """Put a captured state back into a trainer built the same way (after the callbacks' on_fit_start)."""
    if state.get("format") != FORMAT:
        raise ValueError(f"last.pt has format {state.get('format')!r}; this version reads {FORMAT}")
    device = _device(trainer.model)
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if averaging is not None and state["averaged"] is not None:
        averaging.averaged.load_state_dict(state["averaged"])
    es = state["early_stopping"]
    stopper.state = StopState(es["best"], es["best_epoch"], es["stale"])
    saved_best = state["best"]
    if saved_best is not None:
        best.best_state = {k: v.to(device) for k, v in saved_best["state_dict"].items()}
        best.best_epoch = saved_best["epoch"]
        logits = saved_best["val_logits"]
        best.best_val_logits = None if logits is None else ExitLogits(logits["logits"].to(device),
                                                                      logits["labels"].to(device))
    trainer.epoch = state["epoch"]
    trainer.global_step = state["global_step"]
    trainer.should_stop = state["should_stop"]
    trainer.stop_reason = state["stop_reason"]
    trainer.history = [dict(h) for h in state["history"]]
    sums = state["epoch_sums"]
    on = (lambda t: None if t is None else t.to(device))
    trainer.epoch_sums = (on(sums["loss_sum"]), on(sums["correct"]), sums["seen"])
    rng = state["rng"]
    if rng["data"] is not None and hasattr(trainer.train_batches, "load_state_dict"):
        trainer.train_batches.load_state_dict(rng["data"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def write_atomically(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a reader sees the previous last.pt or this one, never half of one


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a `last.pt` safely: tensors and plain data only."""
    return torch.load(path, map_location="cpu", weights_only=True)


class ResumeCheckpoint(Callback):
    """Writes last.pt (and publishes best.pt when it improves); restores a saved state at fit start.

    Sits after the best checkpoint and before the recorders in `standard_order`."""

    def __init__(self, spec: ResumeSpec, stopper: EarlyStopping, best: BestCheckpoint,
                 averaging: WeightAveraging | None = None) -> None:
        self.spec = spec
        self.stopper = stopper
        self.best = best
        self.averaging = averaging
        self.resumed_epoch: int | None = None  # epochs the restored state had completed

    def on_fit_start(self, trainer) -> None:
        if self.spec.state is not None:
            restore(trainer, self.spec.state, self.stopper, self.best, self.averaging)
            self.resumed_epoch = trainer.epoch

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.best.best_epoch == epoch and self.best.path is not None:
            # A crash must never lose the best weights: they reach the run as soon as they change.
            self.best.save()
            if self.spec.on_best is not None:
                self.spec.on_best(self.best.path)
        if epoch % self.spec.every_epochs == 0:
            self._write(trainer, mid_epoch=False)

    def on_exception(self, trainer, error: BaseException) -> None:
        if isinstance(error, TrainingInterrupted):
            self._write(trainer, mid_epoch=True)

    def _write(self, trainer, *, mid_epoch: bool) -> None:
        started = time.perf_counter()
        payload = capture(trainer, self.stopper, self.best, self.averaging, mid_epoch=mid_epoch)
        if self.spec.extra is not None:
            payload["extra"] = self.spec.extra()
        write_atomically(payload, self.spec.path)
        if self.spec.on_written is not None:
            self.spec.on_written(self.spec.path)
        self.spec.write_seconds.append(time.perf_counter() - started)


class InterruptWhen(Callback):
    """Asks the trainer to stop at the next batch boundary once `reason()` says why (a signal flag)."""

    def __init__(self, reason: Callable[[], str | None]) -> None:
        self.reason = reason

    def on_train_batch_end(self, trainer, step: int) -> None:
        why = self.reason()
        if why is not None:
            trainer.request_interrupt(why)
