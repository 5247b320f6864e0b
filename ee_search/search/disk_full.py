"""A full disk stops the study at once and leaves its running trials to be resumed (docs/design.md §9).

A full disk is not the trial's fault: failing the trial would count it toward `search.n_trials`
with no result and lose its epochs. So wherever it shows up (a store, an artifact upload, a
checkpoint, a data cache) the trial ends INTERRUPTED like a SIGTERM'd one: its last.pt stays, a
WAITING retry is queued, no new trial starts, and the command prints one line naming the full disk
and exits `DISK_FULL_EXIT`. Freeing space and running again resumes it.

Leaving a trial resumable needs a few writes to the stores, on a disk that just refused one; the
study keeps a small reserve file beside its local stores (`Reserve`) and deletes it to make room for
them. Where even that fails (another process took the space, or the full disk is a server's), the
trial stays RUNNING and its heartbeat going stale hands it to the stale-trial retry instead.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ee_search.config import StudyConfig, redact

# sysexits.h EX_TEMPFAIL, "a temporary failure, the user is invited to retry": freeing space and
# running again resumes the study, where 1 (every trial failed) and 2 (fix the input) would mislead.
DISK_FULL_EXIT = 75
_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# The same failure where only its text survives: SQLite's SQLITE_FULL ("database or disk is full",
# through sqlalchemy, Optuna and MLflow), and strerror(ENOSPC / EDQUOT) as a server passes it on
# (PostgreSQL's "could not extend file ...: No space left on device", an MLflow server's error body).
_MESSAGES = ("database or disk is full", "no space left on device", "disk quota exceeded")
DISK_FULL_LINE_START = "stopped: "  # how the command's one line starts (a worker's is not forwarded)
RESERVE_NAME = ".ee-search-reserve"
RESERVE_BYTES = 4 << 20  # a trial's closing writes: a few rows and their journals in each store
_NEARLY_FULL = 16 << 20  # a disk with less free space than this is named as the full one
_STOPPED = threading.Event()  # this process's study stopped on a full disk: the loggers below go quiet


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and every exception it was raised from or while handling, each once."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def disk_full_path(error: BaseException) -> str | None:
    """None unless `error` is a full disk (or quota); then the path it names, "" where it names none
    (a write through an open file, SQLite's message)."""
    chain = list(_chain(error))
    for e in chain:
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            # A copy's OSError names its source and then its destination, the file that did not fit.
            return str(e.filename2 or e.filename or "")
    if any(m in str(e).lower() for e in chain for m in _MESSAGES):
        return ""
    return None


def disk_full_detail(path: str | None) -> str:
    """How a trial stopped by a full disk says so (its run's description, its Optuna record)."""
    return f"disk full at {path}" if path else "disk full"


def _local_path(url: str) -> Path | None:
    """The file or folder a store URL / artifact location points at on this machine, if it does."""
    from sqlalchemy.engine import make_url

    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:")).resolve()
    if url.startswith("sqlite"):
        database = make_url(url).database
        return Path(database).resolve() if database and database != ":memory:" else None
    if url.startswith("file:"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Path(url2pathname(urlparse(url).path))
    if "://" not in url:
        return Path(url).resolve()
    return None


def study_locations(config: StudyConfig) -> list[Path]:
    """Where a study writes on this machine: its stores, the artifacts, the data cache, the trials'
    temporary checkpoints, the working directory."""
    found = [_local_path(config.search.storage), _local_path(config.tracking.uri)]
    if config.tracking.artifact_location:
        found.append(_local_path(config.tracking.artifact_location))
    elif _local_path(config.tracking.uri) is not None:
        found.append(Path.cwd() / "mlruns")  # MLflow's default artifact root for a local store
    found += [Path(config.data.root).resolve(), Path(tempfile.gettempdir()), Path.cwd()]
    return [p for p in found if p is not None]


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def fullest(locations: Iterable[Path]) -> str:
    """The location on the fullest disk, if that one is nearly full: where "database or disk is full"
    (no path) most likely happened; "" if none is."""
    free = [(b, str(p)) for p in locations if (b := _free_bytes(p)) is not None]
    least = min(free, key=lambda f: f[0], default=None)  # the first of the fullest: a store before the cwd
    return least[1] if least is not None and least[0] < _NEARLY_FULL else ""


class DiskFull(Exception):
    """The study stopped because a disk is full; `trials` were left to be resumed."""

    exit_code = DISK_FULL_EXIT

    def __init__(self, path: str, trials: list[int] | None = None) -> None:
        self.path = path
        self.trials = trials or []
        super().__init__(f"the disk is full at {path}" if path else "a disk the study writes to is full")


def stop_line(error: BaseException, config: StudyConfig | None, again: str) -> str | None:
    """The one line a full disk prints (None for any other error): where, what was saved, and the
    command that resumes."""
    path = error.path if isinstance(error, DiskFull) else disk_full_path(error)
    if path is None:
        return None
    path = path or fullest(study_locations(config) if config is not None else [Path.cwd()])
    trials = error.trials if isinstance(error, DiskFull) else []
    saved = f"trial(s) {', '.join(map(str, trials))} left to resume; " if trials else ""
    where = f"the disk holding {redact(path)} is full" if path else "a disk the study writes to is full"
    return f"{DISK_FULL_LINE_START}{where} (no trial failed for it); {saved}free space there, then resume with: {again}"


class Reserve:
    """A file of RESERVE_BYTES beside each local store (one per disk), deleted when a disk fills so
    that the running trial's closing writes fit; made again by the next run."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self.paths: list[Path] = []
        devices: set[int] = set()
        for folder in folders:
            if folder.is_dir() and (dev := folder.stat().st_dev) not in devices:
                devices.add(dev)
                self.paths.append(folder / RESERVE_NAME)

    @classmethod
    def for_study(cls, config: StudyConfig, tracker) -> Reserve:
        """Beside the Optuna and MLflow stores' files and in the experiment's artifact folder, where
        those are on this machine."""
        stores = [_local_path(config.search.storage), _local_path(config.tracking.uri)]
        artifacts = _local_path(tracker.client.get_experiment(tracker.experiment_id).artifact_location)
        return cls([*(p.parent for p in stores if p is not None), *([artifacts] if artifacts else [])])

    def make(self) -> Reserve:
        for path in self.paths:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)  # blocks held, not a sparse file
            except OSError as error:
                os.close(fd)
                fd = -1
                if error.errno in _ERRNOS:
                    path.unlink(missing_ok=True)  # a partial one would hold what the stores need
                    raise
                with open(path, "wb") as file:  # a filesystem without fallocate: write it
                    file.write(bytes(RESERVE_BYTES))
            finally:
                if fd >= 0:
                    os.close(fd)
        return self

    def release(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


class DiskWatch:
    """One per study run: the first full disk seen (in any thread) stops the study and frees the
    reserve; `path` says where."""

    def __init__(self, stop, locations: Iterable[Path] = (), reserve: Reserve | None = None) -> None:
        self.stop = stop  # a signals.StopRequest: its trainers stop at the next batch boundary
        self.locations = list(locations)
        self.reserve = reserve
        self.path: str | None = None
        self._lock = threading.Lock()
        _STOPPED.clear()

    def hit(self, error: BaseException) -> str | None:
        """If `error` is a full disk: stop the study (once) and return where; else None."""
        path = disk_full_path(error)
        if path is None:
            return None
        with self._lock:
            if self.path is None:
                _STOPPED.set()
                self.path = path or fullest(self.locations)  # before the reserve frees space there
                self.stop.disk_full = self.path
                if self.reserve is not None:
                    self.reserve.release()
        return self.path

    @contextmanager
    def watching_threads(self) -> Iterator[None]:
        """A helper thread (Optuna's heartbeat) that dies of a full disk stops the study quietly
        instead of printing its traceback; any other error is reported as before."""
        previous = threading.excepthook

        def hook(args) -> None:
            if args.exc_value is None or self.hit(args.exc_value) is None:
                previous(args)

        threading.excepthook = hook
        try:
            yield
        finally:
            threading.excepthook = previous


class _DropDiskFull(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _STOPPED.is_set():
            return False  # the study is stopping: the command's one line says why
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and disk_full_path(error) is not None:
            return False
        return not any(m in record.getMessage().lower() for m in _MESSAGES)


# Loggers that report a full disk with a traceback or a line of their own, beside the one line the
# command prints: MLflow's SQL store (logger.exception), its system-metrics thread, Optuna's
# "Trial N failed" (with the traceback of the trial's TrialInterrupted), our own best-effort writers.
# Quiet for a full disk, and altogether once the study stops on one (their other records then are
# its echoes: "Trial N failed with value None", a figure that could not be refreshed).
_LOGGERS = ("mlflow.store.db.utils", "mlflow.system_metrics.system_metrics_monitor", "optuna.study._optimize",
            "ee_search.tracking", "ee_search.search.study_figures")


def quiet_disk_full_logs() -> None:
    """Called by the CLI (a program-wide setting): a full disk is told in one line, not in several
    loggers' records and tracebacks."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDiskFull) for f in logger.filters):
            logger.addFilter(_DropDiskFull())
