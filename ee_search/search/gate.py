"""One trial started at a time per study: a worker's budget check and the creation of its next
trial, made one step across processes and machines (docs/design.md §9, "Counting").

`trials_to_start` counts RUNNING trials as ones that will finish, but between a worker's check (after
its trial) and Optuna creating the next one, another worker may check too: two workers that finish
together both see one trial left and both start it, and the study ends with n_trials + 1. The gate
closes that window. A worker takes an exclusive lock before it checks, keeps it while Optuna creates
the next trial, and that trial's objective opens the gate as its first act, so holding it costs
milliseconds. The lock goes away with a worker that dies holding it:
- on a PostgreSQL or MySQL storage, a session advisory lock of the database server itself
  (`DatabaseLock`), so workers on every machine that shares the storage (a Ray cluster's nodes,
  processes started by hand) take the same one; the server drops it with the worker's connection;
- otherwise (SQLite, a journal file: stores on one machine) a file lock (flock, `FileLock`) on a file
  named after the storage and the study; the kernel drops it with the process.

Only for `n_jobs: 1`: with threads Optuna asks for several trials at once, outside any callback.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial

from ee_search.search.budget import trials_to_start

TIME_MARGIN_S = 1.0  # this close to the timeout no trial is started: Optuna's own check may not have run
# A worker whose machine vanished holds its connection (and the lock, if it held it then) until the
# server notices; with the server's TCP keepalive defaults that is hours. These settings make it
# seconds (PostgreSQL ignores them on a Unix socket, where the kernel tells it at once).
PG_KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}


class Lock(Protocol):
    def acquire(self) -> None: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


def lock_path(storage_url: str, study_name: str) -> Path:
    digest = hashlib.sha256(f"{storage_url}\0{study_name}".encode()).hexdigest()[:24]
    # Per user: a folder another user created in the shared temporary directory is not writable here.
    return Path(tempfile.gettempdir()) / f"ee-search-locks-{os.getuid()}" / f"{digest}.lock"


class FileLock:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a")  # noqa: SIM115 - open for the run's whole life, closed by close()

    def acquire(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        self._file.close()


class DatabaseLock:
    """A session-level advisory lock on a connection of its own, outside any transaction (autocommit):
    an open transaction held for the run's life would keep PostgreSQL from vacuuming."""

    def __init__(self, url: str, study_name: str) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        self._engine = create_engine(url, poolclass=NullPool)
        self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        digest = hashlib.sha256(f"ee-search gate\0{study_name}".encode()).digest()
        if self._engine.dialect.name == "postgresql":  # advisory locks are per database: the study name suffices
            for name, value in PG_KEEPALIVES.items():
                self._conn.execute(text(f"SET {name} = {int(value)}"))
            self._key = {"key": int.from_bytes(digest[:8], "big", signed=True)}
            self._lock, self._unlock = text("SELECT pg_advisory_lock(:key)"), text("SELECT pg_advisory_unlock(:key)")
        else:  # MySQL / MariaDB: GET_LOCK names are server-wide, so the database is part of the name
            database = self._engine.url.database or ""
            name = hashlib.sha256(f"{database}\0".encode() + digest).hexdigest()[:48]
            self._key = {"key": f"ee-search:{name}"}
            self._lock, self._unlock = text("SELECT GET_LOCK(:key, -1)"), text("SELECT RELEASE_LOCK(:key)")

    def acquire(self) -> None:
        self._conn.execute(self._lock, self._key)

    def release(self) -> None:
        self._conn.execute(self._unlock, self._key)

    def close(self) -> None:
        self._conn.close()  # the server drops a lock still held with its session
        self._engine.dispose()


def gate_lock(storage_url: str, study_name: str) -> Lock:
    """The lock every worker of this study takes: the database server's where there is one."""
    if storage_url.split(":", 1)[0].split("+")[0] in ("postgresql", "postgres", "mysql", "mariadb"):
        return DatabaseLock(storage_url, study_name)
    return FileLock(lock_path(storage_url, study_name))


class TrialGate:
    """Also the Optuna callback (put it last) that stops this worker at the study's target."""

    def __init__(self, lock: Lock, n_trials: int, limit: int | None = None, timeout_s: float | None = None) -> None:
        self._lock = lock
        self.held = False
        self.n_trials, self.limit, self.started = n_trials, limit, 0
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def _acquire(self) -> None:
        self._lock.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._lock.release()

    def close(self) -> None:
        self.release()
        self._lock.close()

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
