"""MLflow side of a study (docs/design.md §5): one parent run per study, one child run per trial.

Everything goes through `MlflowClient` with explicit run ids rather than the fluent `mlflow.start_run`
API, whose active-run stack is global per thread; explicit ids keep trials that run concurrently
(search.n_jobs) from logging into each other's runs. On a local store logging is synchronous, so a
metric that has been logged survives a crash that comes after it. Over an HTTP tracking server a
trial's writes go through a durable on-disk spool instead (`ee_search.spool`, docs/design.md §5,
"Tracking outages"): they survive a crash just the same, and an outage of the server does not stop
training.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ee_search.config import redact
from ee_search.config.params import param_value
from ee_search.records import LAST_CHECKPOINTS, STUDY_CONFIG, Ending, folder
from ee_search.spool import Spool, delete_artifacts, is_remote, quicken_mlflow_http, spool_folder

T = TypeVar("T")
SPOOL_FOLDER = Path(".ee-search") / "spool"  # under the working directory unless tracking.spool_dir

ROLE_TAG = "ee_search.role"
STUDY_TAG = "ee_search.study_name"
TRIAL_TAG = "ee_search.trial_number"
STATE_TAG = "optuna.trial_state"
STOP_TAG = "ee_search.stop_reason"
PARENT_TAG = "mlflow.parentRunId"
RESUME_STATE_TAG = "ee_search.state"  # INTERRUPTED while a trial waits to be resumed
INTERRUPT_TAG = "ee_search.interrupt"  # what stopped it
RESUMED_FROM_TAG = "ee_search.resumed_from_trial"
RESUMED_AT_TAG = "ee_search.resumed_at_epoch"
RESUMED_BY_TAG = "ee_search.resumed_by_trial"
ERROR_TAG = "ee_search.error"
TRIAL_NUMBERS_TAG = "ee_search.trial_numbers"  # every Optuna trial that ran this run, comma-separated
NOTE_TAG = "mlflow.note.content"  # the run page's "Description"
SOURCE_TAG = "mlflow.source.name"
# MLflow 3 opens an experiment on the screen its kind names; without the tag it guesses "GenAI" (an
# Overview of traces) and hides our runs under "Evaluation runs". Training runs are this kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow 3.17 decides the screen from its GenAI / Model training switch instead (the URL's
# `workflowType`, else the browser's last choice, GenAI by default): links we print carry it.
UI_QUERY = "?workflowType=machine_learning"

def quiet_mlflow_logging() -> None:
    """The store announces its alembic migrations at INFO on first use; keep the CLI's output ours.
    Called by the CLI at start-up: a library never changes its users' logger levels on import."""
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration", "mlflow.tracking.fluent",
                 "mlflow.pyfunc", "mlflow.models", "mlflow.system_metrics"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # While a tracking server is away the spool retries by itself (docs/design.md §5): urllib3's
    # "Retrying ..." lines and the system-metrics monitor's "Failed to get mlflow run" (it stops for
    # the rest of that trial; system metrics never cost one) would be a line per call.
    for name in ("urllib3.connectionpool", "mlflow.system_metrics.system_metrics_monitor"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ui_url(tracking_uri: str, route: str) -> str:
    """`route` (a UI route, "#/...") under an HTTP tracking server's address, credentials left out;
    for a local store, which has no address of its own, the route alone."""
    if not tracking_uri.startswith(("http://", "https://")):
        return route
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(tracking_uri)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/", "", "")) + route


def experiment_route(experiment_id: str) -> str:
    """The experiment's runs table (with the trials nested under the study's run)."""
    return f"#/experiments/{experiment_id}{UI_QUERY}"


def log_files(client, run_id: str, files: Mapping[str, str | bytes], folder: str) -> None:
    """Several small artifacts (texts or bytes, by file name) into `folder` of a run, in one upload.
    Each file replaces its previous version atomically (see TrialRun.log_artifact)."""
    import tempfile

    from ee_search.figures import write_files

    with tempfile.TemporaryDirectory(prefix="ee-search-files-") as tmp:
        write_files(files, Path(tmp))
        client.log_artifacts(run_id, tmp, folder)


class StudyTracker:
    def __init__(self, uri: str, experiment_name: str, artifact_location: str | None = None,
                 source: str | None = None, spool_dir: str | Path | None = None, max_outage_s: float = 1800) -> None:
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        # A remote server: trials write through the spool, and what a killed run left there is sent
        # first, before any run is read. A local store is written directly.
        self.spool: Spool | None = None
        if is_remote(uri):
            quicken_mlflow_http()
            self.spool = Spool(self.client, spool_folder(spool_dir or SPOOL_FOLDER, uri).absolute(), max_outage_s)
            self.spool.drain_orphans()
        self.writes = self.spool or self.client  # where a trial's writes go
        self.experiment_id = self.call(lambda: self._experiment(experiment_name, artifact_location))
        self.source = source  # the study file: each run's "Source" in the UI
        # Set on existing experiments too, so a store made by an older ee-search opens on its runs.
        self.call(lambda: self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND))

    def call(self, fn: Callable[[], T], after_run: str | None = None) -> T:
        """A direct MLflow call (a new run, a read): over a remote server, retried through an outage
        within `tracking.max_outage_s` (and made once the spool has sent `after_run`'s writes)."""
        return fn() if self.spool is None else self.spool.call(fn, after_run)

    def outage_expired(self) -> bool:
        """The server has been unreachable for longer than `tracking.max_outage_s`."""
        return self.spool is not None and self.spool.expired()

    def in_outage(self) -> bool:
        return self.spool is not None and self.spool.outage_seconds() > 0

    def trial_run(self, run_id: str) -> TrialRun:
        return TrialRun(self.client, run_id, self.writes)

    def close(self, wait_s: float | None = None) -> int:
        """Send what the spool holds (within the outage limit, and `wait_s`): the writes left unsent,
        which the next run sends."""
        return 0 if self.spool is None else self.spool.close(wait_s)

    def run_url(self, run_id: str) -> str:
        """Where the run's page is: a full URL over an HTTP tracking server (credentials left out),
        else the UI route to append to the address `ee-search ui` serves (a local store has none)."""
        return ui_url(self.uri, f"#/experiments/{self.experiment_id}/runs/{run_id}{UI_QUERY}")

    def _source_tags(self) -> dict[str, str]:
        """MLflow's own context tags (user, source type, git commit where there is one), with the
        study file as the source: the fluent API sets these by itself, MlflowClient.create_run does not."""
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags()
        if self.source:
            tags[SOURCE_TAG] = self.source
        return tags

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # another worker created it between our get and create
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    # ------------------------------------------------------------------------------ parent run
    def parent_run(self, study_name: str, params: Mapping[str, Any], study_yaml: str) -> str:
        """The study's parent run, reused across invocations (and shared by workers)."""
        return self.call(lambda: self._parent_run(study_name, params, study_yaml))

    def _parent_run(self, study_name: str, params: Mapping[str, Any], study_yaml: str) -> str:
        existing = self._parent_runs(study_name)
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={**self._source_tags(), ROLE_TAG: "study", STUDY_TAG: study_name},
        )
        # Two workers starting together may both create one: the oldest wins, the other is removed.
        runs = self._parent_runs(study_name)
        winner = runs[0].info.run_id
        if winner != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return winner
        self._log_params(winner, params)
        self.client.log_text(winner, redact(study_yaml), STUDY_CONFIG)
        return winner

    def _parent_runs(self, study_name: str) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=10,
        )

    def finish_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.writes.set_terminated(run_id, status=status)

    def describe(self, run_id: str, text: str) -> None:
        self.client.set_tag(run_id, NOTE_TAG, redact(text))

    # ------------------------------------------------------------------------------ trial runs
    def start_trial(self, parent_run_id: str, trial_number: int, params: Mapping[str, Any]) -> TrialRun:
        run = self.call(lambda: self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial_number}",
            tags={
                **self._source_tags(),
                PARENT_TAG: parent_run_id,
                ROLE_TAG: "trial",
                TRIAL_TAG: str(trial_number),
                STATE_TAG: "RUNNING",
            },
        ))
        trial_run = self.trial_run(run.info.run_id)
        self._log_params(trial_run.run_id, params)
        return trial_run

    def reopen_trial(self, run_id: str, trial_number: int) -> TrialRun:
        """A retried trial continues its predecessor's run: the run is RUNNING again, and its tags
        name every Optuna trial that worked on it, so the user sees one logical trial. A killed worker's
        unsent writes (its spool, now unlocked) go first: read before them, the run lacks epochs that
        the retry would then log a second time (seen with Ray, where a running worker takes the retry)."""
        if self.spool is not None:
            self.spool.drain_orphans()
        run = self.call(lambda: self.client.get_run(run_id), after_run=run_id)
        numbers = run.data.tags.get(TRIAL_NUMBERS_TAG) or run.data.tags.get(TRIAL_TAG, "")
        listed = [n for n in numbers.split(",") if n]
        trial_run = self.trial_run(run_id)
        trial_run.set_tags({TRIAL_TAG: str(trial_number), STATE_TAG: "RUNNING", RESUME_STATE_TAG: "RESUMED",
                            TRIAL_NUMBERS_TAG: ",".join([*listed, str(trial_number)])})
        self.call(lambda: self.client.update_run(run_id, status="RUNNING"), after_run=run_id)
        return trial_run

    def download_last_checkpoints(self, run_id: str, directory: str | Path) -> dict[str, Path]:
        """The run's last.pt files (both slots, docs/design.md §9), downloaded (also from a remote
        tracking server) and keyed by artifact path; empty if the run never got to write one (killed
        during its first epoch)."""
        return self.call(lambda: {name: Path(self.client.download_artifacts(run_id, name, str(directory)))
                                  for name in _present(self.client, run_id, LAST_CHECKPOINTS)}, after_run=run_id)

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # log_batch splits the request into chunks under the store's limits by itself.
        self.writes.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])


def _present(client, run_id: str, names: tuple[str, ...]) -> list[str]:
    """Those of the artifact paths `names` that the run holds (one listing per folder)."""
    listed = set()
    for where in {folder(name) for name in names}:
        listed |= {f.path for f in client.list_artifacts(run_id, where)}
    return [name for name in names if name in listed]


class TrialRun:
    """One trial's MLflow run; `finish` closes it with the status its ending maps to. Its writes go to
    `writes`: the client itself, or the spool in front of a remote server (same signatures)."""

    def __init__(self, client, run_id: str, writes=None) -> None:
        self.client = client
        self.run_id = run_id
        self.writes = writes if writes is not None else client
        self.spooled = writes is not None and writes is not client

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """`model_id`: also the metrics of that LoggedModel (tracking_models.py); MLflow < 3 has none."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        linked = {"model_id": model_id} if model_id else {}
        self.writes.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0, **linked)
                                                    for k, v in metrics.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.writes.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        # Replacing an artifact is atomic in MLflow's local artifact store (temp file + os.replace,
        # also behind `mlflow server`'s proxied artifacts): a reader sees the old file or the new one.
        self.writes.log_artifact(self.run_id, str(local_path), artifact_path)

    def delete_last_checkpoints(self) -> None:
        """`last.pt` exists while a trial can still be resumed (docs/design.md §9); a finished trial drops
        both its slots. Best effort: a store that cannot delete artifacts keeps files nobody will read."""
        if self.spooled:  # after the uploads queued before it; the spool drops it if the store refuses
            self.writes.delete_artifacts(self.run_id, LAST_CHECKPOINTS)
            return
        try:
            delete_artifacts(self.client, self.run_id, LAST_CHECKPOINTS)
        except Exception as exc:  # noqa: BLE001 - the trial's result matters more than the cleanup
            logging.getLogger(__name__).warning("could not delete the last.pt files of run %s: %s", self.run_id, exc)

    def logged_steps(self, key: str) -> set[int]:
        read = lambda: {m.step for m in self.client.get_metric_history(self.run_id, key)}  # noqa: E731
        return self.writes.call(read, after_run=self.run_id) if self.spooled else read()

    def log_text(self, text: str, artifact_file: str) -> None:
        self.writes.log_text(self.run_id, text, artifact_file)

    def log_files(self, files: Mapping[str, str | bytes], folder: str) -> None:
        log_files(self.writes, self.run_id, files, folder)

    def log_dataset(self, name: str, digest: str, source: str, profile: Mapping[str, Any]) -> None:
        """The data the trial trained on, as an MLflow dataset input (the run page's "Datasets used"):
        `digest` is the data fingerprint (a hash of the train and validation images and labels), so
        two runs on the same data show the same digest, and a changed split a different one."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
                          profile=json.dumps(dict(profile)))
        context = InputTag(key="mlflow.data.context", value="training")
        for attempt in range(2):
            try:
                self.writes.log_inputs(self.run_id, datasets=[DatasetInput(dataset=dataset, tags=[context])])
                return
            except MlflowException:
                # MLflow's SQL store checks whether the dataset exists, then inserts it: two trials
                # starting together (threads, or workers) can both insert, and one hits the UNIQUE
                # constraint. The second attempt finds the row the other one wrote.
                if attempt == 1:
                    raise

    def describe(self, text: str) -> None:
        """The run page's description (Markdown), in words: what the trial is, or how it ended."""
        self.set_tags({NOTE_TAG: redact(text)})

    def finish(self, ending: Ending, stop_reason: str | None = None, detail: str | None = None) -> None:
        """Close the run as `ending` says: its Optuna state as a tag, and its MLflow status. An
        interrupted trial's run is KILLED with `ee_search.state=INTERRUPTED`: a retry reopens it."""
        tags = {STATE_TAG: ending.optuna_state}
        if stop_reason:
            tags[STOP_TAG] = stop_reason
        if ending is Ending.INTERRUPTED:
            tags |= {RESUME_STATE_TAG: "INTERRUPTED", INTERRUPT_TAG: (detail or "interrupted")[:500]}
        self.set_tags(tags)
        self.writes.set_terminated(self.run_id, status=ending.run_status)


class SystemMetrics:
    """MLflow's own system-metrics monitor (CPU, memory, disk, network; GPUs when pynvml is
    installed) on one run, as `system/*` metrics; a no-op without psutil, which it needs. A resumed
    run continues its steps. The sampling interval is MLflow's MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
    (10 s unless set)."""

    def __init__(self, tracking_uri: str, run_id: str, resumed: bool = False, spool: Spool | None = None) -> None:
        self.monitor = None
        try:
            import psutil  # noqa: F401 - MLflow's monitor needs it
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            return
        self.monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=tracking_uri)
        if spool is not None:
            # Its samples go through the spool too. (MLflow's monitor also reads the run's status
            # every interval and stops for the rest of the trial when the server does not answer.)
            self.monitor.mlflow_logger = _SpooledMetrics(spool, run_id)

    def __enter__(self) -> SystemMetrics:
        if self.monitor is not None:
            self.monitor.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.monitor is None:
            return
        self.monitor.finish()  # stops the sampling thread and flushes what it published
        # MLflow's monitor drops the samples of its last, unfinished interval, so a trial shorter than
        # one interval would have none: take one more sample and publish it with that window's rest.
        try:
            self.monitor.collect_metrics()
            self.monitor.publish_metrics(self.monitor.aggregate_metrics())
            self.monitor.mlflow_logger.flush()
        except Exception as exc:  # noqa: BLE001 - system metrics never cost a trial
            logging.getLogger(__name__).warning("could not log the last system metrics: %s", exc)


class _SpooledMetrics:
    """What SystemMetricsMonitor uses of MLflow's BatchMetricsLogger, writing to the spool."""

    data: list = []
    total_training_time = total_log_batch_time = 0.0

    def __init__(self, spool: Spool, run_id: str) -> None:
        self.spool, self.run_id = spool, run_id

    def record_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.spool.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])

    def flush(self) -> None:
        pass  # written when recorded
