"""One owner per trial: the fence (docs/design.md §9, "Storage outages").

A worker whose heartbeats stopped reaching the storage (an outage longer than the grace period, a
machine paused) may be alive: another worker then fails its trial as stale and resumes it from its
last.pt, and the two would train one trial and write one MLflow run together (a step logged twice,
the first worker's tell refused: "Cannot tell a FAIL trial"). So a worker takes its trial with a token
of its own (a system attribute), and before each epoch and each write to the trial's run checks that
the trial is still RUNNING and still holds its token. If not, it raises `TrialTakenOver` and writes
nothing more: not the epoch, not the run's status, not Optuna's tell. Optuna's own writes to a trial
another worker failed are refused by the storage itself (UpdateFinishedTrialError), in the same
transaction as the write.
"""

from __future__ import annotations

import uuid
from typing import Any

import optuna
from optuna.trial import TrialState

from ee_search.records import OWNER_TOKEN
from ee_search.search.resilient_storage import ResilientRDBStorage
from ee_search.train import Callback


class TrialTakenOver(BaseException):
    """Another worker took this worker's trial over: leave it, untouched, to that worker.

    A BaseException, so that nothing on its way out (the objective's error handling, Optuna's trial
    loop) writes the trial's ending; `run_study` catches it and goes on with the next trial."""

    def __init__(self, number: int, why: str) -> None:
        self.number = number
        super().__init__(f"trial {number} {why}: this worker left it to the worker that resumes it, unwritten")


class TrialOwnership:
    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.storage = trial.study._storage  # noqa: SLF001 - the trial's own row, read past the trial's cache
        self.token = uuid.uuid4().hex
        backend = getattr(self.storage, "_backend", self.storage)
        self.owned = backend.owned if isinstance(backend, ResilientRDBStorage) else set()

    def take(self) -> TrialOwnership:
        self.storage.set_trial_system_attr(self.trial._trial_id, OWNER_TOKEN, self.token)  # noqa: SLF001
        self.owned.add(self.trial._trial_id)  # noqa: SLF001
        return self

    def release(self) -> None:
        self.owned.discard(self.trial._trial_id)  # noqa: SLF001

    def check(self) -> None:
        """Raises TrialTakenOver unless the trial is RUNNING and holds this worker's token."""
        frozen = self.storage.get_trial(self.trial._trial_id)  # noqa: SLF001
        if frozen.state != TrialState.RUNNING:
            raise TrialTakenOver(self.trial.number, f"was marked {frozen.state.name} by another worker "
                                 "(its heartbeat had lapsed)")
        if frozen.system_attrs.get(OWNER_TOKEN) != self.token:
            raise TrialTakenOver(self.trial.number, "was taken by another worker")


class FenceCallback(Callback):
    """The fence before each epoch: a trial taken over trains no further."""

    def __init__(self, ownership: TrialOwnership) -> None:
        self.ownership = ownership

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.ownership.check()


class FencedRun:
    """A trial's MLflow run (tracking.TrialRun) whose every write is fenced: the check, then the write."""

    _READS = frozenset({"logged_steps"})

    def __init__(self, run: Any, ownership: TrialOwnership) -> None:
        self._run = run
        self._ownership = ownership

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._run, name)
        if not callable(attr) or name in self._READS:
            return attr

        def fenced(*args: Any, **kwargs: Any) -> Any:
            self._ownership.check()
            return attr(*args, **kwargs)

        return fenced
