"""Workers on a Ray cluster: `ee-search run STUDY --ray auto|ADDRESS` (docs/design.md §3).

Each worker is a Ray task that runs, on whichever node Ray places it, the same worker process as the
local path (workers.py): a plain `ee-search run` of the study with `--workers 1 --quiet`, so nothing
here trains. The task asks Ray for `search.cpus_per_trial` CPUs and `search.gpus_per_trial` GPUs per
trial it runs (`n_jobs`); Ray then sets the worker's CUDA_VISIBLE_DEVICES to its GPU(s) and its
OMP_NUM_THREADS to its CPUs, and a fraction of a GPU puts several workers on one. The driver (this
process) is the local parent with another way to start workers: it creates the stores once, polls
the storage for the one progress view, fails stale trials, restarts a worker that ended badly, and
forwards SIGINT / SIGTERM (as a cancel of each task, which the task turns into SIGTERM for its
worker: the trial is saved to be resumed, §9).

Losing a worker: when the Ray worker process or its node dies, Ray runs the task again (`max_retries`,
on any node with room), and the stale-trial retry resumes the lost trial from `last.pt`, which lives in
the tracking store. The worker process must not outlive its Ray worker (Ray kills a crashed worker's
children only when the cluster enables its subreaper): it asks the kernel to SIGKILL it when its
parent dies (PR_SET_PDEATHSIG, Linux), so a lost trial's heartbeat stops and it is retried, not
trained twice.

The stores must be ones every node reaches (config.urls.check_cluster_stores), and the one-trial gate
a database lock (gate.py). Ray is imported only here, and only for `--ray` (extra `ee-search[ray]`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path

from ee_search.config import LoadedStudy, StudyConfig
from ee_search.errors import UserInputError
from ee_search.search.devices import WorkerSlot
from ee_search.search.events import StudyEvents
from ee_search.search.study import RunSummary
from ee_search.search.workers import RESTARTS_PER_WORKER, _to_stderr, describe_exit, run_workers, worker_argv

# Runs `ee_search.cli` after asking the kernel to SIGKILL this process when its parent (the Ray
# worker's thread that started it) dies; a parent already gone is checked after asking.
_LAUNCHER = (
    "import ctypes, os, runpy, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv.pop(1)):\n"
    "    sys.exit(75)\n"
    "sys.argv[0] = 'ee-search'\n"
    "runpy.run_module('ee_search.cli', run_name='__main__', alter_sys=True)\n"
)
CONNECT_TIMEOUT_S = 10.0
WAIT_S = 0.5  # the task waits on its worker in steps, so that a cancel (a KeyboardInterrupt) gets in


def node_worker(index: int, argv: list[str], study_text: str, file_name: str, cwd: str) -> tuple[int, list[str]]:
    """The Ray task: one `ee-search run` worker process on this node; returns its exit code and its last
    stderr lines (each line is also printed, and Ray shows it on the driver). The study file travels as
    text; the worker runs in the driver's directory where this node has it (a shared file system, or
    the driver's own machine), else in a folder of this node's, where its data cache stays between
    workers."""
    node_dir = Path(tempfile.gettempdir()) / f"ee-search-ray-{os.getuid()}"
    study_dir = Path(tempfile.mkdtemp(prefix=f"worker-{index}-", dir=_made(node_dir)))
    (study_dir / file_name).write_text(study_text)
    command = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), argv[0], str(study_dir / file_name), *argv[2:]]
    proc = subprocess.Popen(command, cwd=cwd if os.path.isdir(cwd) else node_dir,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    tail: deque[str] = deque(maxlen=20)
    reader = threading.Thread(target=_forward, args=(proc, tail), daemon=True)
    reader.start()
    while True:
        try:
            code = proc.wait(timeout=WAIT_S)
            break
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # ray.cancel: the worker saves its trial; a second one stops it at once
            proc.send_signal(signal.SIGTERM)
    reader.join(timeout=5)
    (study_dir / file_name).unlink(missing_ok=True)
    study_dir.rmdir()
    return code, list(tail)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _forward(proc: subprocess.Popen, tail: deque[str]) -> None:
    for line in proc.stderr:
        tail.append(line.rstrip("\n"))
        if not line.startswith("interrupted ("):  # its resume command is not the user's: the driver's is
            print(line.rstrip(), file=sys.stderr, flush=True)  # Ray prefixes it: (ee-search worker K pid=…)


class RayWorker:
    """The driver's handle on one task. A stop request is kept and sent from the supervisor's loop
    (`exit_code`), not from the signal handler that makes it: Ray's client is not reentrant."""

    def __init__(self, slot: WorkerSlot, ref) -> None:
        self.slot, self.ref = slot, ref
        self.tail: deque[str] = deque(maxlen=20)
        self._code: int | None = None
        self._lost: str | None = None
        self._asked: int | None = None

    def exit_code(self) -> int | None:
        import ray

        if self._code is not None:
            return self._code
        if self._asked is not None:
            ray.cancel(self.ref, force=self._asked == signal.SIGKILL)
            self._asked = None
        ready, _ = ray.wait([self.ref], timeout=0)
        if ready:
            try:
                self._code, lines = ray.get(self.ref)
                self.tail.extend(lines)
            except ray.exceptions.TaskCancelledError:
                self._code = 128 + signal.SIGTERM
            except ray.exceptions.RayError as exc:  # lost with its node or process more often than Ray retries
                self._code = -signal.SIGKILL
                self._lost = f"was lost ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})"
        return self._code

    def send(self, signum: int) -> None:
        if self._code is None:
            self._asked = signum

    def ending(self, code: int) -> str:
        return self._lost or describe_exit(code)


class RayLauncher:
    """Starts a worker as a Ray task asking for its share of a node."""

    def __init__(self, study_file: LoadedStudy, cwd: str) -> None:
        import ray

        search = study_file.config.search
        self.remote = ray.remote(node_worker)
        self.options = {"num_cpus": search.cpus_per_trial * search.n_jobs,
                        "num_gpus": search.gpus_per_trial * search.n_jobs,
                        "max_retries": RESTARTS_PER_WORKER, "retry_exceptions": False}
        self.study_text, self.file_name, self.cwd = study_file.raw_text, Path(study_file.path).name, cwd

    def __call__(self, slot: WorkerSlot, argv: list[str]) -> RayWorker:
        task = self.remote.options(**self.options, name=f"ee-search worker {slot.index}")
        return RayWorker(slot, task.remote(slot.index, argv, self.study_text, self.file_name, self.cwd))


def ray_slots(config: StudyConfig) -> list[WorkerSlot]:
    """One slot per worker; Ray picks the node and the GPU, so a slot names only the device kind."""
    search = config.search
    return [WorkerSlot(i, "cuda" if search.gpus_per_trial > 0 else "cpu") for i in range(search.workers)]


def probe(address: str, source: str) -> None:
    """One plain connection to the head: ray.init retries an address where nothing listens for minutes,
    printing as it goes, so this says at once whether anything is there ("auto" is left to ray.init)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:  # OSError: a refused or timed-out socket; ValueError: a bad port
        raise _unreachable(address, source, exc) from None


def connect(address: str, source: str) -> None:
    import ray

    probe(address, source)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    except (OSError, ValueError, RuntimeError) as exc:  # OSError: ConnectionError and a refused socket
        raise _unreachable(address, source, exc) from None


def _unreachable(address: str, source: str, exc: Exception) -> UserInputError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return UserInputError(source, "search.ray", f"cannot reach a Ray cluster at {address!r} ({reason}): start "
                          "one (ray start --head) or give its address HOST:PORT")


def check_room(study_file: LoadedStudy) -> None:
    """A warning when no node could run one worker now (an autoscaling cluster may still add one)."""
    import ray

    search = study_file.config.search
    have = ray.cluster_resources()
    for name, each in (("CPU", search.cpus_per_trial * search.n_jobs), ("GPU", search.gpus_per_trial * search.n_jobs)):
        if each > have.get(name, 0.0):
            _to_stderr(f"warning: each worker asks Ray for {each:g} {name}, and the cluster has {have.get(name, 0.0):g}: "
                       "the workers wait until a node with room joins")


def run_ray_workers(study_file: LoadedStudy, study_path: Path, sets: list[str] | None, flags: dict[str, object],
                    timeout_s: float | None, events: StudyEvents | None = None) -> RunSummary:
    """Run the study with `search.workers` Ray tasks until it has `search.n_trials` (or time is up)."""
    import ray

    connect(study_file.config.search.ray, str(study_path))  # before any store exists: a wrong address creates nothing
    try:
        check_room(study_file)
        # The worker runs on its node, not through Ray again; the file may ask for Ray.
        argv = worker_argv(study_path, [*(sets or []), "search.ray=null"], flags)
        return run_workers(study_file, ray_slots(study_file.config), argv, timeout_s, events,
                           launch=RayLauncher(study_file, os.getcwd()))
    finally:
        ray.shutdown()  # this driver's connection; the cluster stays
