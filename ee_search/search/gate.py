"""One trial started at a time per study on this machine: a worker's budget check and the creation of
its next trial, made one step across processes (docs/design.md §9, "Counting").

`trials_to_start` counts RUNNING trials as ones that will finish, but between a worker's check (after
its trial) and Optuna creating the next one, another worker may check too: two workers that finish
together both see one trial left and both start it, and the study ends with n_trials + 1. The gate
closes that window. A worker takes an exclusive lock before it checks, keeps it while Optuna creates
the next trial, and that trial's objective opens the gate as its first act, so holding it costs
milliseconds. It is a file lock (flock) on a file named after the storage and the study: it holds
between processes, and the kernel drops it with a process that dies holding it.

Only for `n_jobs: 1`: with threads Optuna asks for several trials at once, outside any callback.
Workers on other machines share no lock file; a simultaneous finish there may still start one
trial too many (as Optuna's MaxTrialsCallback does).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from ee_search.search.budget import trials_to_start

TIME_MARGIN_S = 1.0  # this close to the timeout no trial is started: Optuna's own check may not have run


def lock_path(storage_url: str, study_name: str) -> Path:
    digest = hashlib.sha256(f"{storage_url}\0{study_name}".encode()).hexdigest()[:24]
    # Per user: a folder another user created in the shared temporary directory is not writable here.
    return Path(tempfile.gettempdir()) / f"ee-search-locks-{os.getuid()}" / f"{digest}.lock"


class TrialGate:
    """Also the Optuna callback (put it last) that stops this worker at the study's target."""

    def __init__(self, path: Path, n_trials: int, limit: int | None = None, timeout_s: float | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a")  # noqa: SIM115 - open for the run's whole life, closed by close()
        self.held = False
        self.n_trials, self.limit, self.started = n_trials, limit, 0
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def _acquire(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        self._file.close()

    def first(self, study: optuna.Study) -> int:
        """Trials this worker may start; when any, the gate stays shut until the first one exists."""
        self._acquire()
        left = trials_to_start(study, self.n_trials)
        if left == 0:
            self.release()
        return left

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.started += 1
        if self.limit is not None and self.started >= self.limit:
            return  # Optuna's own count ends the loop here: no next trial to wait for
        if self.deadline is not None and time.monotonic() > self.deadline - TIME_MARGIN_S:
            study.stop()
            return
        self._acquire()
        if trials_to_start(study, self.n_trials) == 0:
            self.release()
            study.stop()

    def gated(self, objective: Callable[[optuna.Trial], object]) -> Callable[[optuna.Trial], object]:
        def run(trial: optuna.Trial) -> object:
            self.release()  # the trial exists and counts as RUNNING: the next check sees it
            return objective(trial)

        return run
