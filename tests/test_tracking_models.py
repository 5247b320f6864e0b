"""A completed trial's network as an MLflow LoggedModel (ee_search/tracking_models.py, docs/design.md §5),
on a real store: after a study, `search_logged_models` lists one READY model per COMPLETE trial (none
for a pruned one), linked to the trial's run at its best epoch, with the trial's final metrics (the
Optuna attributes and the run's metrics are the oracle) and the run's best.pt as its weights. A
retried run keeps one model; a model that cannot be logged is a warning; an MLflow without
LoggedModels (< 3) runs the study as before."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ee_search.records import BEST_CHECKPOINT, FINAL_METRICS, MODEL_CHECKPOINT, TrialRecord, load_best_checkpoint
from ee_search.tracking_models import TrialModel, link_logged_metrics, log_trial_model, run_models
from tests.conftest import TINY_STUDY, mlflow_client, run_study


def assert_one_model_per_completed_trial(client: MlflowClient, study) -> list:
    """The acceptance check: every COMPLETE trial, and only those, has one READY LoggedModel, linked to its
    run at the best epoch, whose metrics are the trial's; returns the models, by trial number."""
    experiment_id = study.user_attrs["mlflow_experiment_id"]
    models = {int(m.params["trial_number"]): m for m in client.search_logged_models([experiment_id])}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(models) == [t.number for t in complete] and complete
    for trial in complete:
        model, record = models[trial.number], TrialRecord.read(trial)
        run = client.get_run(record.mlflow_run_id)
        assert (model.model_id, model.name, model.source_run_id) == (record.mlflow_model_id, f"trial-{trial.number}",
                                                                     record.mlflow_run_id)
        assert str(model.status.value) == "READY" and model.tags["ee_search.trial_number"] == str(trial.number)
        assert model.params["best_epoch"] == str(record.best_epoch)
        assert {k: model.params[k] for k in trial.params} == {k: str(v) for k, v in trial.params.items()}
        # linked to the run at the best epoch, as the run's "Logged models" shows it
        assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model.model_id, record.best_epoch)]
        metrics = {m.key: m for m in model.metrics}
        assert {k: metrics[k].value for k in FINAL_METRICS} == record.final_metrics()
        assert {k: metrics[k].value for k in metrics} == {k: run.data.metrics[k] for k in metrics}
        assert {(m.run_id, m.step) for m in metrics.values()} == {(record.mlflow_run_id, 0)}
        assert trial.values == [record.final_metrics()[name] for name in study.metric_names]
        # what it cost the trial, timed in the worker: some of the trial's time, never all of it
        assert 0 < record.mlflow_model_seconds < (trial.datetime_complete - trial.datetime_start).total_seconds()
        # the run still has each final metric once: linking them did not log them twice
        assert [m.step for m in client.get_metric_history(record.mlflow_run_id, "accuracy")] == [0]
    return [models[t.number] for t in complete]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A tiny study: trials 0 and 1 complete (2 epochs each), trial 2 diverges (lr 1e12: PRUNED)."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        (root / "tiny.yaml").write_text(TINY_STUDY)
        # The random sampler's draws at seed 10 (search/samplers.py, seeded per trial): 0.03, 0.05, then 1e12.
        study = run_study(root / "tiny.yaml",
                          "search.space={train.lr: {type: categorical, choices: [0.05, 0.03, 1.0e+12]}}",
                          "search.sampler.seed=10", n_trials=3)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    return root, study


def test_every_completed_trial_is_one_logged_model_with_its_metrics(ran):
    root, study = ran
    client = mlflow_client(root)
    models = assert_one_model_per_completed_trial(client, study)
    pruned = TrialRecord.read(study.trials[2])
    assert pruned.mlflow_model_id is None and run_models(client, study.user_attrs["mlflow_experiment_id"],
                                                         pruned.mlflow_run_id) == []
    # The Models tab's sort, as the MLflow API does it: best curve_hypervolume first.
    ranked = client.search_logged_models([study.user_attrs["mlflow_experiment_id"]],
                                         order_by=[{"field_name": "metrics.curve_hypervolume", "ascending": False}])
    by_value = sorted(models, key=lambda m: -next(x.value for x in m.metrics if x.key == "curve_hypervolume"))
    assert [m.model_id for m in ranked] == [m.model_id for m in by_value]


def test_the_models_weights_are_the_runs_best_checkpoint(ran, tmp_path):
    import mlflow.models

    from ee_search.checkpoints import model_from_checkpoint

    root, study = ran
    client = mlflow_client(root)
    for trial in study.trials[:2]:
        record = TrialRecord.read(trial)
        model = client.get_logged_model(record.mlflow_model_id)
        folder = tmp_path / model.model_id
        ours = Path(mlflow.artifacts.download_artifacts(f"{model.artifact_location}/{MODEL_CHECKPOINT}",
                                                        dst_path=str(folder / "model")))
        runs = Path(client.download_artifacts(record.mlflow_run_id, BEST_CHECKPOINT, str(folder / "run")))
        assert ours.read_bytes() == runs.read_bytes()
        payload = load_best_checkpoint(ours)
        assert payload["epoch"] == record.best_epoch
        assert model_from_checkpoint(payload).num_exits == 2
        described = mlflow.models.Model.load(f"{model.artifact_location}/MLmodel")  # what the files are
        assert described.flavors["ee_search"]["checkpoint"] == MODEL_CHECKPOINT
        assert (described.model_id, described.run_id) == (model.model_id, record.mlflow_run_id)


def _store(ran, tmp_path: Path):
    """A run of its own experiment in the study's store (a new SQLite store costs seconds to create)."""
    client = mlflow_client(ran[0])
    experiment_id = client.create_experiment(tmp_path.name, artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    (tmp_path / "best.pt").write_bytes(b"weights")
    return client, TrialModel(experiment_id, run_id, 4, 3, tmp_path / "best.pt", {"train.lr": 0.1}, {})


def test_a_retried_run_keeps_one_model_and_links_metrics_logged_before(ran, tmp_path):
    from mlflow.entities import Metric

    client, model = _store(ran, tmp_path)
    client.log_batch(model.run_id, metrics=[Metric("accuracy", 0.75, 1000, 0)])  # before the first attempt died
    first = log_trial_model(client, model)
    second = log_trial_model(client, model, replace=True)
    assert first and second and first != second
    assert [m.model_id for m in run_models(client, model.experiment_id, model.run_id)] == [second]
    link_logged_metrics(client, model.run_id, second, ["accuracy"])
    assert [(m.key, m.value) for m in client.get_logged_model(second).metrics] == [("accuracy", 0.75)]
    assert [(m.value, m.timestamp) for m in client.get_metric_history(model.run_id, "accuracy")] == [(0.75, 1000)]


def test_a_model_that_cannot_be_logged_is_a_warning_and_leaves_nothing(ran, tmp_path, monkeypatch, caplog):
    client, model = _store(ran, tmp_path)

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(client, "log_model_artifacts", refuse)
    with caplog.at_level(logging.WARNING, logger="ee_search.tracking_models"):
        assert log_trial_model(client, model) is None
    assert "trial 4: could not log its network as an MLflow LoggedModel: disk full" in caplog.text
    assert run_models(client, model.experiment_id, model.run_id) == []


def test_an_mlflow_without_logged_models_runs_the_study_as_before(workdir, monkeypatch):
    """MLflow 2.x: no LoggedModel API, and a Metric without `model_id`; the trial completes as before and
    export-model reads the network from the run."""
    import mlflow.entities

    from ee_search.deploy.model_export import _network_file

    for name in ("create_logged_model", "log_outputs", "search_logged_models"):
        monkeypatch.delattr(MlflowClient, name)

    class OldMetric(mlflow.entities.Metric):
        def __init__(self, key, value, timestamp, step):
            super().__init__(key, value, timestamp, step)

    monkeypatch.setattr(mlflow.entities, "Metric", OldMetric)
    (workdir / "tiny.yaml").write_text(TINY_STUDY)
    study = run_study(workdir / "tiny.yaml", "train.max_epochs=1", n_trials=1)
    (trial,) = study.trials
    record = TrialRecord.read(trial)
    assert trial.state.name == "COMPLETE" and record.mlflow_model_id is None
    client = mlflow_client(workdir)
    assert client.get_run(record.mlflow_run_id).data.metrics["accuracy"] == record.accuracy
    path, model_id = _network_file(client, trial, record.mlflow_run_id, workdir / "get")
    assert model_id is None and load_best_checkpoint(path)["epoch"] == record.best_epoch
