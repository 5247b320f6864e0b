"""The training loop (forward -> loss -> backward -> step -> hooks) and the validation of every exit.

The loop and the exit metrics are the trainer's own; everything else (averaging, early stopping, the
best and the last checkpoint, recording, pruning) is a callback. Validation runs every exit over the
validation split once; the cached logits give the validation loss, per-exit accuracy, the exit
policy's accuracy and depth at the trial's thresholds, and the curve's hypervolume: the metrics every
callback reads. The trainer imports neither optuna nor mlflow. Metrics are accumulated on the device
and read once per epoch (one host sync per epoch, not per step).

Its own resumable state (`state_dict`) is the loop's: epoch, step, stop flag, history, the running
sums of an epoch in progress, model, optimizer, the data order and torch's RNG states.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import torch

from ee_search.exits.logits import ExitLogits, collect_exit_logits
from ee_search.exits.operating_points import curve_hypervolume, operating_points
from ee_search.exits.policy import ExitPolicy, evaluate, per_exit_accuracy
from ee_search.models.base import EarlyExitNetwork
from ee_search.train.callbacks import Callback, CallbackList
from ee_search.train.outcome import MAX_EPOCHS, FitResult, TrainingInterrupted

C = TypeVar("C", bound=Callback)


class Trainer:
    def __init__(
        self,
        model: EarlyExitNetwork,
        optimizer: torch.optim.Optimizer,
        train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        val_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        *,
        max_epochs: int,
        policy: ExitPolicy,
        callbacks: Sequence[Callback] = (),
        autocast_dtype: torch.dtype | None = None,
        compile_model: bool = False,
    ) -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1 but got {max_epochs}")
        self.model = model
        self.eval_model: torch.nn.Module = model  # weight averaging swaps in its averaged copy
        self.optimizer = optimizer
        self.train_batches = train_batches
        self.val_batches = val_batches
        self.max_epochs = max_epochs
        self.policy = policy
        self.callbacks = CallbackList(callbacks)
        self.autocast_dtype = autocast_dtype
        # Compile the forward only: the module itself (state_dict keys, AveragedModel's deepcopy,
        # checkpoints) stays the plain nn.Module.
        self._forward = torch.compile(model) if compile_model else model
        self.global_step = 0
        self.epoch = 0
        self.should_stop = False
        self.stop_reason: str | None = None
        self.history: list[dict[str, float]] = []
        self.val_logits: ExitLogits | None = None
        self.interrupt_reason: str | None = None
        # Running sums of the epoch in progress (loss sum, correct, seen): what an interrupted epoch
        # saves, and what a resumed one starts from, so its train_loss is exact.
        self.epoch_sums: tuple[torch.Tensor | None, torch.Tensor | None, int] = (None, None, 0)
        self.mid_epoch = False  # inside train_epoch's loop: a state saved now continues that epoch

    def find_callback(self, kind: type[C]) -> C:
        """This trainer's one callback of type `kind` (how a callback finds a sibling it reads)."""
        found = [cb for cb in self.callbacks.callbacks if isinstance(cb, kind)]
        if len(found) != 1:
            raise LookupError(f"the trainer has {len(found)} {kind.__name__} callbacks; exactly one is needed")
        return found[0]

    def request_stop(self, reason: str | None) -> None:
        """Callbacks end training through this; the first reason given is kept."""
        self.should_stop = True
        self.stop_reason = self.stop_reason or reason

    def request_interrupt(self, reason: str) -> None:
        """Stop at the next batch boundary (a signal handler only sets this flag; the loop raises
        `TrainingInterrupted` between two steps, never in the middle of one)."""
        self.interrupt_reason = self.interrupt_reason or reason

    def fit(self) -> FitResult:
        cbs = self.callbacks
        try:
            cbs.on_fit_start(self)  # a resumed fit has its epoch, history and stop flag restored here
            while self.epoch < self.max_epochs and not self.should_stop:
                self.epoch += 1
                epoch = self.epoch
                cbs.on_epoch_start(self, epoch)
                started = time.perf_counter()
                metrics = self.train_epoch()
                cbs.on_validation_start(self, epoch)
                metrics.update(self._validate())
                metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
                metrics["epoch_seconds"] = time.perf_counter() - started
                self.history.append(metrics)
                cbs.on_validation_end(self, epoch, metrics)
                cbs.on_epoch_end(self, epoch, metrics)
            result = FitResult(self.epoch, self.stop_reason or MAX_EPOCHS, self.history)
            cbs.on_fit_end(self, result)
            return result
        except BaseException as error:
            cbs.on_exception(self, error)
            raise

    def train_epoch(self) -> dict[str, float]:
        model, opt = self.model, self.optimizer
        model.train()
        loss_sum, correct, seen = self.epoch_sums
        self.mid_epoch = True
        for x, y in self.train_batches:
            with torch.autocast(x.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                logits = self._forward(x)
                loss = model.exit_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.global_step += 1
            # Device-side running sums; read once after the loop.
            batch_loss = loss.detach() * y.shape[0]
            batch_right = logits[-1].detach().argmax(dim=-1).eq(y).sum()
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            correct = batch_right if correct is None else correct + batch_right
            seen += y.shape[0]
            self.epoch_sums = (loss_sum, correct, seen)
            self.callbacks.on_train_batch_end(self, self.global_step)
            if self.interrupt_reason is not None:
                raise TrainingInterrupted(self.interrupt_reason)
        if seen == 0:
            raise ValueError("the training split produced no batches: lower train.batch_size")
        self.epoch_sums = (None, None, 0)
        self.mid_epoch = False
        totals = torch.stack([loss_sum.float(), correct.float()]).tolist()
        return {"train_loss": totals[0] / seen, "train_accuracy": totals[1] / seen}

    def _validate(self) -> dict[str, float]:
        self.val_logits = collect_exit_logits(self.eval_model, self.val_batches, self.autocast_dtype)
        cached = self.val_logits
        outcome = evaluate(cached.logits, cached.labels, self.policy.thresholds, self.policy.criterion)
        # The area under this network's whole trade-off curve: a signal for early stopping and
        # pruning that does not depend on the trial's own thresholds.
        points = operating_points(cached.logits, cached.labels, self.policy.criterion, None)
        metrics = {
            "val_loss": cached.loss(self.model.exit_loss_weights),
            "val_accuracy": outcome.accuracy,
            "val_avg_exit_depth": outcome.avg_exit_depth,
            "val_curve_hypervolume": curve_hypervolume(points),
        }
        for k, acc in enumerate(per_exit_accuracy(cached.logits, cached.labels), start=1):
            metrics[f"val_accuracy_exit_{k}"] = acc
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The loop's resumable state now: at an epoch boundary, or mid-epoch after a batch."""
        mid = self.mid_epoch
        batches = self.train_batches
        data = batches.state_dict() if hasattr(batches, "state_dict") else None
        if data is not None and not mid:  # the finished epoch's order is spent: the next draws anew
            data = {**data, "order": None, "next": 0}
        loss_sum, correct, seen = self.epoch_sums if mid else (None, None, 0)
        device = _device(self.model)
        return {
            "epoch": self.epoch - 1 if mid else self.epoch,  # epochs completed
            "mid_epoch": mid,
            "global_step": self.global_step,
            "should_stop": self.should_stop,
            "stop_reason": self.stop_reason,
            "history": [dict(h) for h in self.history],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch_sums": {"loss_sum": loss_sum, "correct": correct, "seen": seen},
            "rng": {"torch": torch.get_rng_state(), "data": data,
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = _device(self.model)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.should_stop = state["should_stop"]
        self.stop_reason = state["stop_reason"]
        self.history = [dict(h) for h in state["history"]]
        sums = state["epoch_sums"]
        on_device = (lambda t: None if t is None else t.to(device))  # noqa: E731
        self.epoch_sums = (on_device(sums["loss_sum"]), on_device(sums["correct"]), sums["seen"])
        rng = state["rng"]
        if rng["data"] is not None and hasattr(self.train_batches, "load_state_dict"):
            self.train_batches.load_state_dict(rng["data"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
