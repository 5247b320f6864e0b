"""MLflow side of a study (DESIGN.md §5): one parent run per study, one child run per trial.

Everything goes through `MlflowClient` with explicit run ids rather than the fluent `mlflow.start_run`
API, whose active-run stack is global per thread; explicit ids keep trials that run concurrently
(search.n_jobs) from logging into each other's runs. Logging is synchronous, so a metric that has been
logged survives a crash that comes after it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ee_search.train.callbacks import Callback

ROLE_TAG = "ee_search.role"
STUDY_TAG = "ee_search.study_name"
TRIAL_TAG = "ee_search.trial_number"
STATE_TAG = "optuna.trial_state"
STOP_TAG = "ee_search.stop_reason"
PARENT_TAG = "mlflow.parentRunId"
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}

# MLflow caps what one request may carry; chunk to stay under the limits of every store.
_MAX_PARAMS, _MAX_METRICS = 100, 1000
_PARAM_VALUE_LIMIT = 6000

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)(?P<pw>[^@\s/]+)(?P<tail>@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]+)", re.IGNORECASE)  # libpq style


def redact(text: str) -> str:
    """Replace the password of every `scheme://user:password@host` (or `?password=`) in `text` with ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", text)


def quiet_mlflow_logging() -> None:
    # The store announces its alembic migrations at INFO on first use; keep the CLI's output ours.
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return redact(text)[:_PARAM_VALUE_LIMIT]


class StudyTracker:
    def __init__(self, uri: str, experiment_name: str, artifact_location: str | None = None) -> None:
        from mlflow import MlflowClient

        quiet_mlflow_logging()
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment_name, artifact_location)
        self.experiment_name = experiment_name

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
        existing = self._parent_runs(study_name)
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: study_name},
        )
        # Two workers starting together may both create one: the oldest wins, the other is removed.
        runs = self._parent_runs(study_name)
        winner = runs[0].info.run_id
        if winner != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return winner
        self._log_params(winner, params)
        self.client.log_text(winner, redact(study_yaml), "config/study.yaml")
        return winner

    def _parent_runs(self, study_name: str) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'study' and tags.`{STUDY_TAG}` = '{study_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=10,
        )

    def finish_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------------------ trial runs
    def start_trial(self, parent_run_id: str, trial_number: int, params: Mapping[str, Any]) -> TrialRun:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial_number}",
            tags={
                PARENT_TAG: parent_run_id,
                ROLE_TAG: "trial",
                TRIAL_TAG: str(trial_number),
                STATE_TAG: "RUNNING",
            },
        )
        trial_run = TrialRun(self.client, run.info.run_id)
        self._log_params(trial_run.run_id, params)
        return trial_run

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run_id, params=items[i : i + _MAX_PARAMS])

    def run_url(self, run_id: str) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"


class TrialRun:
    """One trial's MLflow run; `finish` sets the status Optuna's state maps to."""

    def __init__(self, client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.finished = False

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=items[i : i + _MAX_METRICS])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def finish(self, optuna_state: str, stop_reason: str | None = None) -> None:
        tags = {STATE_TAG: optuna_state}
        if stop_reason:
            tags[STOP_TAG] = stop_reason
        self.set_tags(tags)
        self.client.set_terminated(self.run_id, status=RUN_STATUS[optuna_state])
        self.finished = True


class EpochLogger(Callback):
    """Per-epoch metrics to the trial's run, `step` = epoch, as soon as validation ends."""

    def __init__(self, run: TrialRun) -> None:
        self.run = run

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log_metrics(metrics, step=epoch)
