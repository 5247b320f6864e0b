"""Local worker processes on one study: `search.workers` / `ee-search run --workers N` (docs/design.md §3).

Each worker is a plain `ee-search run` of the same study (`--workers 1 --quiet`): the same trial loop,
budget and resume as a process started by hand, so nothing here trains. The parent
- creates both stores, the study, the MLflow experiment and the parent run once, before any worker
  starts: MLflow 3 races when several processes create a fresh database (mlflow#19943);
- starts the workers on their devices (devices.py), each with the file's sampler seed: the draws are
  keyed by trial number (search/samplers.py), so workers seeded alike still draw apart;
- polls the storage for the one progress view (watch.py) and fails stale trials as it goes, so a
  dead worker's trial is queued for its retry as soon as its heartbeat is stale;
- restarts a worker that died (a signal, or any exit but 0, 1, 2 or 75); the stale-trial retry
  (retry.py) resumes its trial from last.pt, and when no worker is left a new one is started for it;
- stops every worker (SIGTERM: each saves its trial) when one stops on a full disk (exit 75,
  disk_full.py), and raises DiskFull;
- forwards SIGINT / SIGTERM to every worker as SIGTERM (each saves its trial to be resumed, §9), waits
  for them, then raises StudyInterrupted; a second signal is forwarded too, and the workers exit at once.
Workers run in their own session, so a terminal's Ctrl-C reaches the parent alone and each worker
gets one signal from it, not two.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import TrialState

from ee_search.config import LoadedStudy
from ee_search.records import RETRY_HISTORY
from ee_search.search.budget import trials_to_start
from ee_search.search.devices import WorkerSlot
from ee_search.search.disk_full import DISK_FULL_EXIT, DISK_FULL_LINE_START, DiskFull
from ee_search.search.events import StudyEvents
from ee_search.search.resilient_storage import outage_stops_resumably
from ee_search.search.signals import StudyInterrupted
from ee_search.search.study import RunSummary, close_tracker, finished_count, open_study
from ee_search.search.watch import StudyWatcher

POLL_S = 1.0
RESTARTS_PER_WORKER = 3  # then a worker that keeps dying is a bug to report, not to retry forever
NORMAL_ENDS = (0, 1)  # done, or every trial it ran failed (recorded FAIL): the study went on without it


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # sys.stderr looked up now: the live area's proxy


class WorkerProcess:
    """One `ee-search run` child; its stderr is forwarded line by line (prefixed), its stdout (the
    per-worker summary) dropped: the parent prints the study's."""

    def __init__(self, slot: WorkerSlot, argv: list[str], sink: Callable[[str], None]) -> None:
        self.slot = slot
        self.tail: deque[str] = deque(maxlen=20)
        env = slot.env({**os.environ, "PYTHONUNBUFFERED": "1"})
        self.proc = subprocess.Popen([sys.executable, "-m", "ee_search.cli", *argv], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True)
        self.reader = threading.Thread(target=self._forward, args=(sink,), daemon=True)
        self.reader.start()

    def _forward(self, sink: Callable[[str], None]) -> None:
        for line in self.proc.stderr:
            self.tail.append(line.rstrip("\n"))
            # Its resume command is not the user's: the parent's is.
            if not line.startswith(("interrupted (", DISK_FULL_LINE_START)):
                sink(f"worker {self.slot.index}: {line.rstrip()}")

    def exit_code(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self.reader.join(timeout=5)  # its last lines first
        return code

    def send(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def ending(self, code: int) -> str:
        return describe_exit(code)


def describe_exit(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"


class Worker(Protocol):
    """What the supervisor needs of a worker: a local process (WorkerProcess) or a Ray task
    (ray_workers.RayWorker)."""

    slot: WorkerSlot
    tail: deque[str]

    def exit_code(self) -> int | None: ...
    def send(self, signum: int) -> None: ...
    def ending(self, code: int) -> str: ...


Launch = Callable[[WorkerSlot, list[str]], Worker]  # a worker started on `slot` with these `run` arguments


class LocalWorkers:
    """The supervisor: starts, restarts and stops the workers; `signum` is the signal that stopped it."""

    def __init__(self, study: optuna.Study, watcher: StudyWatcher, slots: list[WorkerSlot], argv: list[str],
                 target: int | None, timeout_s: float | None, heartbeat: bool,
                 sink: Callable[[str], None] = _to_stderr, launch: Launch | None = None) -> None:
        self.study, self.watcher, self.slots, self.argv, self.sink = study, watcher, slots, argv, sink
        self.launch: Launch = launch or (lambda slot, argv: WorkerProcess(slot, argv, sink))
        self.target, self.heartbeat = target, heartbeat
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.workers: dict[int, Worker] = {}  # slot index -> its current process
        self.finished: set[int] = set()  # slots whose worker ended normally
        self.restarts_left = RESTARTS_PER_WORKER * len(slots)
        self.signum: int | None = None

    def start(self, slot: WorkerSlot) -> None:
        argv = [*self.argv, "--workers", "1", "--device", slot.device, "--quiet"]
        if self.deadline is not None:
            argv += ["--timeout", f"{max(1.0, self.deadline - time.monotonic()):.0f}"]
        self.finished.discard(slot.index)
        self.workers[slot.index] = self.launch(slot, argv)

    def alive(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.exit_code() is None]

    def run(self) -> None:
        for slot in self.slots:
            self.start(slot)
        while True:
            self.watcher.poll()
            if self.signum is not None:
                if not self.alive():
                    return
            else:
                if self.heartbeat:  # a dead worker's trial is queued for its retry as soon as it is stale
                    optuna.storages.fail_stale_trials(self.study)
                self._reap()
                if not self.alive() and not self._more_work():
                    return
            time.sleep(POLL_S)

    def _reap(self) -> None:
        for index, worker in list(self.workers.items()):
            code = worker.exit_code()
            if code is None or index in self.finished:
                continue
            if code in NORMAL_ENDS:
                self.finished.add(index)
                continue
            if code == DISK_FULL_EXIT and any(line.startswith(DISK_FULL_LINE_START) for line in worker.tail):
                raise DiskFull("")  # it left its trial to be resumed; the others stop and save too
            if code == 2 or self.restarts_left == 0:
                raise RuntimeError(f"worker {index} {worker.ending(code)}; its last lines:\n" + "\n".join(worker.tail))
            self.restarts_left -= 1
            self.sink(f"worker {index} {worker.ending(code)}: restarting it (its trial resumes from its last "
                      "saved epoch once its heartbeat is stale)")
            self.start(worker.slot)

    def _more_work(self) -> bool:
        """No worker is left: start one if the study still has trials to run (a dead worker's retry,
        or trials it had counted on), wait while RUNNING trials may still finish or go stale."""
        if self.target is None or (self.deadline is not None and time.monotonic() >= self.deadline):
            return False
        if trials_to_start(self.study, self.target) > 0 or self.study.get_trials(deepcopy=False,
                                                                                 states=(TrialState.WAITING,)):
            if self.restarts_left == 0:
                raise RuntimeError("the workers ended before the study had its trials, too often: see their lines above")
            self.restarts_left -= 1
            self.start(self.slots[0])
            return True
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return bool(running) and self.heartbeat  # without heartbeats a dead worker's trial never ends

    def stop_all(self, signum: int, wait_s: float = 120.0) -> None:
        for worker in self.alive():
            worker.send(signum)
        end = time.monotonic() + wait_s
        while self.alive() and time.monotonic() < end:
            time.sleep(0.2)
        for worker in self.alive():
            worker.send(signal.SIGKILL)

    @contextmanager
    def forwarding_signals(self) -> Iterator[None]:
        """SIGINT / SIGTERM -> SIGTERM to every worker (each time: a second one stops them at once)."""
        def forward(signum: int, frame) -> None:
            self.signum = self.signum or signum
            for worker in self.workers.values():
                worker.send(signal.SIGTERM)  # only to those still running

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def worker_argv(study: Path, sets: list[str] | None, flags: dict[str, object]) -> list[str]:
    """The `ee-search run` arguments every worker shares: the parent's study file, `--set`s and the
    flags that locate the study (relative paths resolve alike: the workers start in its directory)."""
    argv = ["run", str(study)]
    for item in sets or []:
        argv += ["--set", item]
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_local_workers(study_file: LoadedStudy, slots: list[WorkerSlot], study_path: Path, sets: list[str] | None,
                      flags: dict[str, object], timeout_s: float | None, events: StudyEvents | None = None) -> RunSummary:
    """Run the study with one worker process per slot until it has `search.n_trials` (or time is up);
    `study_path`, `sets` and `flags` are the parent's `run` arguments, which every worker gets."""
    return run_workers(study_file, slots, worker_argv(study_path, sets, flags), timeout_s, events)


def run_workers(study_file: LoadedStudy, slots: list[WorkerSlot], argv: list[str], timeout_s: float | None,
                events: StudyEvents | None = None, launch: Launch | None = None) -> RunSummary:
    """The supervisor's run, whatever starts the workers (`launch`: local processes by default)."""
    config = study_file.config
    tracker, study, parent = open_study(study_file)  # once, before any worker starts
    target = config.search.n_trials
    watcher = StudyWatcher(study, events or StudyEvents(), config.train.early_stopping.monitor,
                           config.train.max_epochs)
    watcher.start(target, None if target is None else trials_to_start(study, target))
    crew = LocalWorkers(study, watcher, slots, argv, target, timeout_s,
                        heartbeat=not config.search.storage.startswith("journal:"), launch=launch)
    started = time.perf_counter()
    try:
        # The storage unreachable past search.storage_outage_s: one resumable line (resilient_storage.py).
        with crew.forwarding_signals(), outage_stops_resumably(config.search.heartbeat.grace_period_s):
            if target is None or finished_count(study) < target:
                crew.run()
    finally:
        crew.stop_all(signal.SIGTERM)  # nothing left behind, whatever happened here
    summary = RunSummary(study, parent, tracker.experiment_id, list(watcher.ended), time.perf_counter() - started)
    if crew.signum is not None:
        queued = [t.system_attrs[RETRY_HISTORY][-1] for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                  if t.system_attrs.get(RETRY_HISTORY)]
        raise StudyInterrupted(crew.signum, queued)
    if target is None or finished_count(study) >= target:
        tracker.finish_parent(parent, "FINISHED")
    close_tracker(tracker, [])
    return summary
