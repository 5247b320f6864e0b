"""The spool's writer (docs/design.md §5, "Tracking outages"): the MLflow writes of a trial are
appended to the process's spool file and return at once; a background thread sends them in order,
retrying with backoff while the server is away, so training never waits on MLflow.

`Spool` offers the subset of `MlflowClient`'s writes that a trial makes (`log_batch`, `log_artifact`,
`log_artifacts`, `log_text`, `log_inputs`, `set_terminated`) with the same signatures, plus
`delete_artifacts`; `tracking.TrialRun` calls it in place of the client. The outage clock starts at
the first failed send and stops at the next success: past `max_outage_s`, `expired()` is true, a
running trial stops resumable at its next batch boundary, and `call` (a direct call at a trial's
start) raises `TrackingUnavailable`. The file then stays for the next `ee-search run` to send."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ee_search.spool.queue import Entry, SpoolFile, orphans
from ee_search.spool.server import is_transient

logger = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF_S = (0.5, 8.0)  # first and longest pause between two tries: a server that is back is used within 8 s


class TrackingUnavailable(Exception):
    """The tracking server stayed unreachable past `tracking.max_outage_s`; nothing was lost: the
    unsent writes are in the spool folder, and the trial that was running waits to be resumed."""

    exit_code = 75  # EX_TEMPFAIL: try again later

    def __init__(self, seconds: float, reason: str, folder: Path, trials: Sequence[int] = ()) -> None:
        self.seconds, self.reason, self.folder, self.trials = seconds, reason, folder, list(trials)
        super().__init__(f"unreachable for {seconds:.0f} s ({reason})")


class Spool:
    def __init__(self, client, folder: Path, max_outage_s: float) -> None:
        self.client = client
        self.folder = folder
        self.max_outage_s = max_outage_s
        self.sent = 0
        self._file: SpoolFile | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Condition()
        self._stop = threading.Event()  # close(): drain, then stop
        self._abandon = threading.Event()  # stop after the current try, whatever is left
        self._outage_since: float | None = None
        self._last_error = ""

    # ------------------------------------------------------------------ MlflowClient's writes
    def log_batch(self, run_id: str, metrics: Iterable = (), params: Iterable = (), tags: Iterable = ()) -> None:
        # A metric's model_id (a LoggedModel's, tracking_models.py) travels with it: MLflow >= 3 only.
        self._put(run_id, "batch", {"metrics": [[m.key, m.value, m.timestamp, m.step, getattr(m, "model_id", None)]
                                                for m in metrics],
                                    "params": [[p.key, p.value] for p in params],
                                    "tags": [[t.key, t.value] for t in tags]})

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(local_path)
        self._put(run_id, "artifacts", {"path": artifact_path}, {path.name: path})

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        root = Path(local_dir)
        files = {str(f.relative_to(root)): f for f in sorted(root.rglob("*")) if f.is_file()}
        self._put(run_id, "artifacts", {"path": artifact_path}, files)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        folder, _, name = artifact_file.rpartition("/")
        self._put(run_id, "artifacts", {"path": folder or None}, {name: text})

    def log_inputs(self, run_id: str, datasets: Sequence = ()) -> None:
        self._put(run_id, "inputs", {"datasets": [
            {"dataset": d.dataset.to_dictionary(), "tags": [[t.key, t.value] for t in d.tags]} for d in datasets]})

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        # The end time is now, not when the server gets it.
        self._put(run_id, "terminate", {"status": status or "FINISHED", "end_time": end_time or int(time.time() * 1000)})

    def delete_artifacts(self, run_id: str, names: Sequence[str]) -> None:
        self._put(run_id, "delete", {"names": list(names)})

    # ------------------------------------------------------------------ the outage
    def expired(self) -> bool:
        return self.outage_seconds() > self.max_outage_s

    def outage_seconds(self) -> float:
        since = self._outage_since
        return 0.0 if since is None else time.monotonic() - since

    def unavailable(self, trials: Sequence[int] = ()) -> TrackingUnavailable:
        return TrackingUnavailable(self.outage_seconds(), self._last_error, self.folder, trials)

    def call(self, fn: Callable[[], T], after_run: str | None = None) -> T:
        """`fn()` (a direct MLflow call at a trial's start: a new run, a read), retried with backoff
        while the server is away, within the outage limit; `after_run`: once the spool holds nothing
        more for that run, so a read sees every write made before it."""
        for pause in _pauses():
            if self.expired():
                raise self.unavailable()
            if after_run is None or self._file is None or self._file.pending(after_run) == 0:
                try:
                    result = fn()
                except Exception as error:
                    if not is_transient(error):
                        raise
                    self._failed(error)
                else:
                    self._outage_since = None
                    return result
            time.sleep(pause)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ draining
    def _put(self, run_id: str, kind: str, body: dict[str, Any], files: dict | None = None) -> None:
        with self._wake:
            if self._file is None:
                self._file = SpoolFile.create(self.folder)
                self._thread = threading.Thread(target=self._run, name="ee-search-spool", daemon=True)
                self._thread.start()
            self._file.append(run_id, kind, body, files)
            self._wake.notify()

    def _run(self) -> None:
        pauses = _pauses()
        while not self._abandon.is_set():
            drained = self._send_all(self._file)
            if drained is None:  # a transient failure: wait, then try the head again
                self._abandon.wait(next(pauses))
                continue
            pauses = _pauses()
            with self._wake:
                if self._file.pending() == 0:
                    if self._stop.is_set():
                        return
                    self._wake.wait(1.0)

    def _send_all(self, file: SpoolFile) -> int | None:
        """Send `file`'s entries in order: how many, or None at the first transient failure."""
        sent = 0
        while entries := file.head():
            for entry in entries:
                try:
                    send(self.client, entry)
                except Exception as error:  # noqa: BLE001 - sorted below: retried, or dropped and told
                    if is_transient(error):
                        self._failed(error)
                        return None
                    logger.warning("MLflow refused a %s write to run %s for good (%s): dropped",
                                   entry.kind, entry.run_id, " ".join(str(error).split())[:300])
                file.remove(entry)
                self._outage_since = None
                sent += 1
                self.sent += 1
        return sent

    def _failed(self, error: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.info("tracking server unreachable (%s); spooling to %s", error, self.folder)
        self._last_error = " ".join(str(error).split())[:200]

    def drain_orphans(self) -> int:
        """Send what killed processes left in this server's spool folder (files nobody holds), before
        this process reads any run: entries sent. Past the outage limit, TrackingUnavailable."""
        total = 0
        for path in orphans(self.folder):
            file = SpoolFile.claim(path)
            if file is None:
                continue
            try:
                for pause in _pauses():
                    if (sent := self._send_all(file)) is not None:
                        total += sent
                        break
                    if self.expired():
                        raise self.unavailable()
                    time.sleep(pause)
            finally:
                file.close(delete=file.pending() == 0)
        return total

    def close(self, wait_s: float | None = None) -> int:
        """Send what is left (within the outage limit, and within `wait_s` if given) and stop: the
        number of writes left unsent, kept in the file for the next run (0: the file is gone)."""
        if self._file is None:
            return 0
        self._stop.set()
        with self._wake:
            self._wake.notify()
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while self._thread.is_alive() and not self.expired() and (deadline is None or time.monotonic() < deadline):
            self._thread.join(0.2)
        self._abandon.set()
        self._thread.join()
        left = self._file.pending()
        self._file.close(delete=left == 0)
        self._file = None
        return left


def _pauses():
    """0.5, 1, 2, 4, 8, 8, ... seconds."""
    pause, longest = BACKOFF_S
    while True:
        yield pause
        pause = min(pause * 2, longest)


def _metric(metric_class, key, value, timestamp, step, model_id=None):
    """A spooled metric row back as MLflow's Metric (rows spooled before model ids have four fields)."""
    return metric_class(key, value, timestamp, step, **({"model_id": model_id} if model_id else {}))


def send(client, entry: Entry) -> None:
    """One spooled write, as MLflow's client would have made it then (same timestamps)."""
    from mlflow.entities import Metric, Param, RunTag

    body, run_id = entry.body, entry.run_id
    if entry.kind == "batch":
        client.log_batch(run_id, metrics=[_metric(Metric, *row) for row in body["metrics"]],
                         params=[Param(k, v) for k, v in body["params"]], tags=[RunTag(k, v) for k, v in body["tags"]])
    elif entry.kind == "artifacts":
        client.log_artifacts(run_id, str(entry.blob), body["path"])
    elif entry.kind == "inputs":
        _send_inputs(client, run_id, body["datasets"])
    elif entry.kind == "terminate":
        client.set_terminated(run_id, status=body["status"], end_time=body["end_time"])
    elif entry.kind == "delete":
        delete_artifacts(client, run_id, body["names"])
    else:
        raise ValueError(f"unknown spool entry kind {entry.kind!r}")


def _send_inputs(client, run_id: str, datasets: list[dict]) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = [DatasetInput(dataset=Dataset(**d["dataset"]), tags=[InputTag(k, v) for k, v in d["tags"]])
              for d in datasets]
    client.log_inputs(run_id, datasets=inputs)


def delete_artifacts(client, run_id: str, names: Sequence[str]) -> None:
    """Those of the artifact files `names` that the run holds, deleted (a store that cannot delete
    raises; the caller decides whether that matters)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    listed = set()
    for folder in {name.rpartition("/")[0] for name in names}:
        listed |= {f.path for f in client.list_artifacts(run_id, folder or None)}
    present = [name for name in names if name in listed]
    if present:
        repository = get_artifact_repository(client.get_run(run_id).info.artifact_uri, tracking_uri=client.tracking_uri)
        for name in present:
            repository.delete_artifacts(name)
