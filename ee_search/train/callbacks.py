"""Callback base with typed no-op hooks, and the list that dispatches them in order.

Hooks are plain methods, not event strings, so a typo is an AttributeError at once and an editor can
list them. The trainer calls them in this order each epoch:

    on_epoch_start -> on_train_batch_end (per optimizer step) -> on_validation_start
    -> on_validation_end -> on_epoch_end

with on_fit_start / on_fit_end around the loop and on_exception when anything escapes it. Within a
hook, callbacks run in list order; `standard_order` in this package writes that order down once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ee_search.train.trainer import FitResult, Trainer


class Callback:
    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (swap in an averaged model, move state to the device)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before an epoch's first batch; `epoch` is 1-based."""

    def on_train_batch_end(self, trainer: Trainer, step: int) -> None:
        """After each optimizer step; `step` counts steps since the fit began (1-based)."""

    def on_validation_start(self, trainer: Trainer, epoch: int) -> None:
        """After training, before validation: averaged weights and BN statistics get ready here."""

    def on_validation_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """After validation: stop decisions, checkpoints, logging, pruning (which may raise)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """Last hook of an epoch, after every on_validation_end."""

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        """After the loop ended normally (max epochs or an early stop)."""

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """Something escaped the loop (pruning, divergence, Ctrl-C, a bug); it is re-raised after."""


class CallbackList(Callback):
    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_fit_start(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(trainer)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_start(trainer, epoch)

    def on_train_batch_end(self, trainer: Trainer, step: int) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_end(trainer, step)

    def on_validation_start(self, trainer: Trainer, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_validation_start(trainer, epoch)

    def on_validation_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_validation_end(trainer, epoch, metrics)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, epoch, metrics)

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        for cb in self.callbacks:
            cb.on_fit_end(trainer, result)

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        # Every callback gets to clean up even if an earlier one fails while doing so.
        failures: list[BaseException] = []
        for cb in self.callbacks:
            try:
                cb.on_exception(trainer, error)
            except Exception as exc:  # noqa: BLE001 - reported below, original error wins
                failures.append(exc)
        if failures:
            error.add_note(f"{len(failures)} callback(s) failed in on_exception: {failures!r}")
