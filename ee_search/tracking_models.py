"""A completed trial's network as an MLflow LoggedModel (docs/design.md §5), MLflow only.

MLflow 3 is model-centric: the experiment's Models tab lists LoggedModels, each linked to the run
that produced it at a step, with metrics linked by `model_id` (searchable with
`mlflow.search_logged_models`). `mlflow.pytorch.log_model` would pickle the network and infer pip
requirements, seconds per trial; a trial's network is already a plain-data `best.pt` that
`ee_search.checkpoints.model_from_checkpoint` rebuilds. So the model is built from MLflow's own
client calls instead, the steps `Model.log` takes: create it (name, params, tags, source run), link it
to the run at the best epoch (`log_outputs`), upload `best.pt` with an `MLmodel` file that says what
it is, and finalize it READY. The final metrics are linked by whoever logs them (`model_id` on each).
Tens of milliseconds on a local store.

With an MLflow that has no LoggedModels (< 3.0) every function here is a no-op.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ee_search.records.logged_model import (
    MODEL_BEST_EPOCH_PARAM,
    MODEL_CHECKPOINT,
    MODEL_FLAVOR,
    MODEL_LOADER,
    MODEL_TRIAL_PARAM,
    MODEL_TYPE,
    model_name,
)

logger = logging.getLogger(__name__)


def logged_models_supported() -> bool:
    """Whether the installed MLflow has LoggedModels (3.0 and later)."""
    from mlflow import MlflowClient

    try:
        from mlflow.entities import LoggedModelOutput  # noqa: F401
    except ImportError:
        return False
    return all(hasattr(MlflowClient, name) for name in ("create_logged_model", "log_outputs", "log_model_artifacts",
                                                          "finalize_logged_model", "search_logged_models"))


@dataclass
class TrialModel:
    """What identifies a trial's network in the Models tab."""

    experiment_id: str
    run_id: str
    trial_number: int
    best_epoch: int
    checkpoint: Path  # the local best.pt
    params: Mapping[str, Any]  # the trial's sampled values
    tags: Mapping[str, str]


def log_trial_model(client, model: TrialModel, replace: bool = False) -> str | None:
    """The trial's network as a READY LoggedModel linked to its run at the best epoch; its id, or None
    where MLflow has no LoggedModels or logging failed (a warning: a trial never fails for it).
    `replace`: a retried trial's run drops the models an earlier attempt left, so a run has one."""
    if not logged_models_supported():
        return None
    model_id = None
    try:
        if replace:
            for earlier in run_models(client, model.experiment_id, model.run_id):
                client.delete_logged_model(earlier.model_id)
        params = {**{str(k): str(v) for k, v in model.params.items()},
                  MODEL_TRIAL_PARAM: str(model.trial_number), MODEL_BEST_EPOCH_PARAM: str(model.best_epoch)}
        created = client.create_logged_model(model.experiment_id, name=model_name(model.trial_number),
                                             source_run_id=model.run_id, tags=dict(model.tags), params=params,
                                             model_type=MODEL_TYPE)
        model_id = created.model_id
        _fill(client, created, model)
        return model_id
    except Exception as exc:  # noqa: BLE001 - the Models tab is a view: a trial's result matters more
        logger.warning("trial %d: could not log its network as an MLflow LoggedModel: %s", model.trial_number, exc)
        if model_id is not None:
            try:  # a model without its weights would only clutter the Models tab
                client.delete_logged_model(model_id)
            except Exception:  # noqa: BLE001, S110 - the warning above says what went wrong
                pass
        return None


def _fill(client, created, model: TrialModel) -> None:
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME

    model_id = created.model_id
    # The link the run page's "Logged models" and the model's "Source run" show: at the best epoch.
    client.log_outputs(model.run_id, [LoggedModelOutput(model_id, step=model.best_epoch)])
    with tempfile.TemporaryDirectory(prefix="ee-search-model-") as tmp:
        staged = Path(tmp) / MODEL_CHECKPOINT
        try:
            os.link(model.checkpoint, staged)  # best.pt is written atomically (replaced, never modified)
        except OSError:  # another file system
            shutil.copyfile(model.checkpoint, staged)
        mlmodel = Model(artifact_path=created.artifact_location, run_id=model.run_id,
                        model_uuid=model_id, model_id=model_id,
                        metadata={MODEL_TRIAL_PARAM: model.trial_number, MODEL_BEST_EPOCH_PARAM: model.best_epoch})
        mlmodel.add_flavor(MODEL_FLAVOR, checkpoint=MODEL_CHECKPOINT, loader=MODEL_LOADER)
        mlmodel.save(str(Path(tmp) / MLMODEL_FILE_NAME))
        client.log_model_artifacts(model_id, tmp)
    client.finalize_logged_model(model_id, "READY")


def run_models(client, experiment_id: str, run_id: str) -> list:
    """The LoggedModels whose source is the run (any status), newest first."""
    if not logged_models_supported():
        return []
    return list(client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                            order_by=[{"field_name": "creation_timestamp", "ascending": False}]))


def link_logged_metrics(client, run_id: str, model_id: str, keys: Iterable[str], step: int = 0) -> None:
    """Link metrics the run already has at `step` to the model: MLflow's own way (`Model.log`), the
    same entries logged again with the model's id; the run keeps one entry each (same key, step,
    timestamp and value are one row)."""
    from mlflow.entities import Metric

    metrics = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id)
               for key in keys for m in client.get_metric_history(run_id, key) if m.step == step]
    if metrics:
        client.log_batch(run_id, metrics=metrics)


def trial_model(client, run_id: str, model_id: str | None = None):
    """The trial's READY LoggedModel: the one recorded (`model_id`), else the newest from its run;
    None if it has none (a study logged before LoggedModels, MLflow < 3, or the model was deleted)."""
    if not logged_models_supported():
        return None
    from mlflow.exceptions import MlflowException

    if model_id:
        try:
            found = client.get_logged_model(model_id)
        except MlflowException:
            found = None
        if found is not None and _ready(found):
            return found
    experiment_id = client.get_run(run_id).info.experiment_id
    return next((m for m in run_models(client, experiment_id, run_id) if _ready(m)), None)


def _ready(model) -> bool:
    return str(getattr(model.status, "value", model.status)) == "READY"


def download_model_file(client, model, name: str, directory: str | Path) -> Path:
    """One file of a LoggedModel's artifacts, downloaded (also through a tracking server) into `directory`."""
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )

    Path(directory).mkdir(parents=True, exist_ok=True)  # MLflow's repositories want it to exist
    repository = get_artifact_repository(model.artifact_location, tracking_uri=client.tracking_uri)
    return Path(repository.download_artifacts(name, str(directory)))
