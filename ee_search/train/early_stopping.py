"""Early stopping: a pure judgement of each epoch (`judge_epoch`), and the callback around it.

An epoch improves when the monitored value beats the best so far by MORE than `tol` (so an
improvement of exactly `tol` does not count: the seed code let that case fall through both branches
and never counted it). After `patience` epochs in a row without improvement, training stops with
`patience_exhausted`. A non-finite monitored value or training loss stops at once with
`non_finite_loss`. (The seed also compared its stop flag, a bool, with the string "True", so it
never stopped at all.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ee_search.metrics import monitor_mode
from ee_search.train.callbacks import Callback
from ee_search.train.outcome import NON_FINITE_LOSS, PATIENCE_EXHAUSTED


@dataclass(frozen=True)
class StopState:
    best: float | None = None
    best_epoch: int | None = None
    stale: int = 0  # epochs in a row without improvement


@dataclass(frozen=True)
class Decision:
    state: StopState
    improved: bool
    stop: bool
    reason: str | None


def judge_epoch(
    state: StopState,
    value: float,
    epoch: int,
    *,
    mode: str,
    patience: int,
    tol: float,
    train_loss: float | None = None,
) -> Decision:
    """Whether `value` at `epoch` improves on `state`, and whether training should stop now."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max' but got {mode!r}")
    if patience < 1:
        raise ValueError(f"patience must be at least 1 but got {patience}")
    if tol < 0:
        raise ValueError(f"tol cannot be negative but got {tol}")
    if not math.isfinite(value) or (train_loss is not None and not math.isfinite(train_loss)):
        return Decision(state, improved=False, stop=True, reason=NON_FINITE_LOSS)
    if state.best is None:
        return Decision(StopState(value, epoch, 0), improved=True, stop=False, reason=None)
    gain = state.best - value if mode == "min" else value - state.best
    if gain > tol:
        return Decision(StopState(value, epoch, 0), improved=True, stop=False, reason=None)
    stale = state.stale + 1
    exhausted = stale >= patience
    return Decision(
        StopState(state.best, state.best_epoch, stale),
        improved=False,
        stop=exhausted,
        reason=PATIENCE_EXHAUSTED if exhausted else None,
    )


class EarlyStopping(Callback):
    """Judges the validated (possibly averaged) model each epoch; sets the trainer's stop flag."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, tol: float = 1e-4) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1 but got {patience}")
        if tol < 0:
            raise ValueError(f"tol cannot be negative but got {tol}")
        self.monitor = monitor
        self.mode = monitor_mode(monitor)
        self.patience = patience
        self.tol = tol
        self.state = StopState()
        self.last: Decision | None = None

    @property
    def improved(self) -> bool:
        return self.last is not None and self.last.improved

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = StopState(**state)

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.last = judge_epoch(
            self.state,
            metrics[self.monitor],
            epoch,
            mode=self.mode,
            patience=self.patience,
            tol=self.tol,
            train_loss=metrics.get("train_loss"),
        )
        self.state = self.last.state
        if self.last.stop:
            trainer.request_stop(self.last.reason)
