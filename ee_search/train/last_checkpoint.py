"""last.pt, the resumable state of a fit (docs/design.md §9): what it holds, how it is written
and how a fit continues from it.

last.pt is plain data that `torch.load(weights_only=True)` reads:

    {"format": 2, "trainer": trainer.state_dict(),
     "callbacks": {cb.state_key: cb.state_dict() for every stateful callback}, "extra": {...}}

The trainer's own state is the loop's (epoch, step, history, model, optimizer, the data order and
torch's RNG states); each callback owns the rest (early stopping's best and patience, the best
checkpoint, the averaged weights, the pruner's record). Restored into a fit built the same way,
training goes on bit for bit as if it had never stopped (on CPU; CUDA kernels are not all
deterministic).

It is written at an epoch boundary every `every_epochs` epochs, after early stopping and the best
checkpoint have judged the epoch and BEFORE the epoch's metrics are logged, so a run never holds a
logged epoch that no last.pt covers when every_epochs is 1. An interrupt (SIGTERM, Ctrl-C) writes it
at the batch boundary where training stopped.

With an `alternate` file it is written to the two files in turn, so the state before the newest one
stays until the next write: a newest file torn or corrupted on its way to the store costs the epochs
since the previous write, not the trial. `newest_readable` picks what a retry continues from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ee_search.errors import CorruptArtifact
from ee_search.train.callbacks import Callback, TrainerView
from ee_search.train.checkpoint_files import load_checkpoint, write_atomically
from ee_search.train.outcome import TrainingInterrupted

FORMAT = 2


@dataclass
class ResumeSpec:
    """How a fit saves (and optionally continues from) its resumable state."""

    path: Path  # where last.pt is written locally (atomically, first) before `on_written` publishes it
    every_epochs: int = 1
    state: dict[str, Any] | None = None  # a loaded last.pt to continue from
    on_written: Callable[[Path], None] | None = None  # publish last.pt (the objective uploads it)
    extra: Callable[[], dict[str, Any]] | None = None  # caller's own entries (trial numbers, ...)
    write_seconds: list[float] = field(default_factory=list)  # measured, per write
    alternate: Path | None = None  # written in turn with `path` (path first): the previous state survives

    def __post_init__(self) -> None:
        if self.every_epochs < 1:
            raise ValueError(f"every_epochs must be at least 1 but got {self.every_epochs}")


def moved(obj: Any, device: torch.device | str) -> Any:
    """`obj` with every tensor in it copied to `device` (detached), containers rebuilt alike."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device, copy=True)
    if isinstance(obj, dict):
        return {k: moved(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(moved(v, device) for v in obj)
    return obj


def capture(trainer: TrainerView) -> dict[str, Any]:
    """The resumable state of `trainer` and its callbacks now, as CPU tensors and plain data."""
    callbacks = {key: cb.state_dict() for key, cb in trainer.callbacks.stateful().items()}
    return moved({"format": FORMAT, "trainer": trainer.state_dict(), "callbacks": callbacks}, "cpu")


def restore(trainer: TrainerView, state: dict[str, Any]) -> None:
    """Put a captured state back into a fit built the same way, after the callbacks' on_fit_start
    (weight averaging has its averaged copy by then). The callbacks' tensors go to the model's
    device; a callback without its saved state, or a saved state without its callback, is an error:
    either would silently break the bit-for-bit continuation."""
    _check_format(state)
    stateful = trainer.callbacks.stateful()
    saved = state["callbacks"]
    if saved.keys() != stateful.keys():
        raise ValueError(f"last.pt holds the state of {sorted(saved)} but this fit's stateful callbacks "
                         f"are {sorted(stateful)}")
    device = next(trainer.model.parameters()).device
    trainer.load_state_dict(state["trainer"])
    for key, cb in stateful.items():
        cb.load_state_dict(moved(saved[key], device))


def _check_format(state: dict[str, Any]) -> None:
    if state.get("format") != FORMAT:
        raise ValueError(f"last.pt has format {state.get('format')!r}; this version reads {FORMAT}")


def completed_epochs(state: dict[str, Any]) -> int:
    """How many epochs a loaded last.pt had finished."""
    _check_format(state)
    return int(state["trainer"]["epoch"])


def saved_history(state: dict[str, Any]) -> list[dict[str, float]]:
    """The per-epoch metrics a loaded last.pt holds, epoch 1 first."""
    _check_format(state)
    return state["trainer"]["history"]


@dataclass
class Found:
    """What a retry found among its run's last.pt files."""

    state: dict[str, Any] | None = None  # the newest that reads back whole; None: start over
    name: str | None = None  # the file it came from
    refused: list[CorruptArtifact] = field(default_factory=list)  # the files that did not, and why


def newest_readable(files: Mapping[str, Path]) -> Found:
    """The newest last.pt among `files` (keyed by the name a person knows them by) that loads with
    weights_only and has this format's shape; the others are refused with the reason. Newest is the
    most training steps: the files are written in turn by one fit, so they hold consecutive states."""
    found = Found()
    for name, path in files.items():
        try:
            state = _verified(load_checkpoint(path))
        except CorruptArtifact as error:
            found.refused.append(error.naming(name))
            continue
        if found.state is None or _steps(state) > _steps(found.state):
            found.state, found.name = state, name
    return found


def _verified(state: Any) -> dict[str, Any]:
    """`state` if it is a last.pt this version can continue from; a CorruptArtifact otherwise (named
    by the caller). Checked here, before the fit is built, so a bad file costs a fallback, not the trial."""
    if not isinstance(state, dict) or not isinstance(state.get("trainer"), dict) \
            or not isinstance(state.get("callbacks"), dict):
        raise CorruptArtifact("last.pt", "it is not an ee-search last.pt")
    if state.get("format") != FORMAT:
        raise CorruptArtifact("last.pt", f"it has format {state.get('format')!r}; this version reads {FORMAT}")
    trainer = state["trainer"]
    if not all(key in trainer for key in ("epoch", "global_step", "history", "model", "optimizer")):
        raise CorruptArtifact("last.pt", "it lacks the trainer's state")
    return state


def _steps(state: dict[str, Any]) -> int:
    return int(state["trainer"]["global_step"])


class LastCheckpoint(Callback):
    """Writes last.pt at epoch boundaries and on an interrupt; restores a saved one at fit start.

    Sits after the pruning callback and before the recorders in `standard_order`."""

    def __init__(self, spec: ResumeSpec) -> None:
        self.spec = spec
        self.slots = [spec.path] + ([spec.alternate] if spec.alternate is not None else [])
        self.writes = 0

    def on_fit_start(self, trainer: TrainerView) -> None:
        if self.spec.state is not None:
            restore(trainer, self.spec.state)

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        if epoch % self.spec.every_epochs == 0:
            self._write(trainer)

    def on_exception(self, trainer: TrainerView, error: BaseException) -> None:
        if isinstance(error, TrainingInterrupted):
            self._write(trainer)

    def _write(self, trainer: TrainerView) -> None:
        started = time.perf_counter()
        payload = capture(trainer)
        if self.spec.extra is not None:
            payload["extra"] = self.spec.extra()
        path = self.slots[self.writes % len(self.slots)]
        write_atomically(payload, path)
        if self.spec.on_written is not None:
            self.spec.on_written(path)
        self.writes += 1
        self.spec.write_seconds.append(time.perf_counter() - started)
