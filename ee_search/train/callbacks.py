"""Callback base with typed no-op hooks, and the list that dispatches them in order.

Hooks are plain methods, not event strings, so a typo is an AttributeError at once and an editor can
list them. The trainer calls them in this order each epoch:

    on_epoch_start -> on_train_batch_end (per optimizer step) -> on_validation_start
    -> on_validation_end -> on_epoch_end

with on_fit_start / on_fit_end around the loop and on_exception when anything escapes it. Within a
hook, callbacks run in list order; `standard_order` in this package writes that order down once.

A callback that carries state across epochs owns it, as Lightning's do: `state_dict()` returns it as
plain data and `load_state_dict()` takes it back, filed in last.pt under the callback's `state_key`
(last_checkpoint.py). A callback that does not define `state_dict` has no state and is not filed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ee_search.train.outcome import FitResult

if TYPE_CHECKING:
    import torch

    from ee_search.exits.logits import ExitLogits


C = TypeVar("C", bound="Callback")


class TrainerView(Protocol):
    """What a callback may read and change on the trainer (`trainer.Trainer` is the one implementation).

    A protocol rather than an import of the trainer, so this module and the trainer's do not import
    each other."""

    model: torch.nn.Module
    eval_model: torch.nn.Module  # weight averaging swaps in its averaged copy
    optimizer: torch.optim.Optimizer
    train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    max_epochs: int
    epoch: int
    global_step: int
    should_stop: bool
    val_logits: ExitLogits | None
    callbacks: CallbackList

    def request_stop(self, reason: str | None) -> None: ...

    def request_interrupt(self, reason: str) -> None: ...

    def find_callback(self, kind: type[C]) -> C: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Callback:
    @property
    def state_key(self) -> str:
        """Where last.pt files this callback's state; unique among a trainer's stateful callbacks."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to go on as if the fit had never stopped; empty = stateless."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` returned (its tensors already on the trainer's device)."""

    def on_fit_start(self, trainer: TrainerView) -> None:
        """Before the first epoch (swap in an averaged model, move state to the device)."""

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        """Before an epoch's first batch; `epoch` is 1-based."""

    def on_train_batch_end(self, trainer: TrainerView, step: int) -> None:
        """After each optimizer step; `step` counts steps since the fit began (1-based)."""

    def on_validation_start(self, trainer: TrainerView, epoch: int) -> None:
        """After training, before validation: averaged weights and BN statistics get ready here."""

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        """After validation: stop decisions, checkpoints, logging, pruning (which may raise)."""

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        """Last hook of an epoch, after every on_validation_end."""

    def on_fit_end(self, trainer: TrainerView, result: FitResult) -> None:
        """After the loop ended normally (max epochs or an early stop)."""

    def on_exception(self, trainer: TrainerView, error: BaseException) -> None:
        """Something escaped the loop (pruning, divergence, Ctrl-C, a bug); it is re-raised after."""


class CallbackList(Callback):
    """Calls each hook on every callback, in list order (Lightning's `_call_callback_hooks`).

    The fan-out methods are generated from `Callback`'s own hooks below, so a new hook needs no new
    loop here; `on_exception` is written out because it must reach every callback even if one fails."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def stateful(self) -> dict[str, Callback]:
        """The callbacks that carry state (those that define `state_dict`), by `state_key`; a
        duplicate key is a wiring bug and raises."""
        found: dict[str, Callback] = {}
        for cb in self.callbacks:
            if type(cb).state_dict is not Callback.state_dict:
                if cb.state_key in found:
                    raise ValueError(f"two stateful callbacks share the state_key {cb.state_key!r}")
                found[cb.state_key] = cb
        return found

    def on_exception(self, trainer: TrainerView, error: BaseException) -> None:
        # Every callback gets to clean up even if an earlier one fails while doing so.
        failures: list[BaseException] = []
        for cb in self.callbacks:
            try:
                cb.on_exception(trainer, error)
            except Exception as exc:  # noqa: BLE001 - reported below, original error wins
                failures.append(exc)
        if failures:
            error.add_note(f"{len(failures)} callback(s) failed in on_exception: {failures!r}")


def _fan_out(hook: str):
    def call_all(self: CallbackList, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    call_all.__name__ = call_all.__qualname__ = hook
    call_all.__doc__ = getattr(Callback, hook).__doc__
    return call_all


HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))
for _hook in HOOKS:
    if _hook != "on_exception":
        setattr(CallbackList, _hook, _fan_out(_hook))


class InterruptWhen(Callback):
    """Asks the trainer to stop at the next batch boundary once `reason()` says why (a signal flag)."""

    def __init__(self, reason: Callable[[], str | None]) -> None:
        self.reason = reason

    def on_train_batch_end(self, trainer: TrainerView, step: int) -> None:
        why = self.reason()
        if why is not None:
            trainer.request_interrupt(why)
