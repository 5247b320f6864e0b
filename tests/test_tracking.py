"""Tracking: passwords in storage and tracking URLs never reach the console, the logs, MLflow or the
Optuna storage, checked end to end against a real PostgreSQL that requires one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app
from ee_search.config import redact

PASSWORD = "s3cret-Pw_42"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://ann:pw@db:5432/optuna", "postgresql://ann:***@db:5432/optuna"),
        ("postgresql+psycopg://ann:p:w%40x@db/optuna", "postgresql+psycopg://ann:***@db/optuna"),
        ("storage sqlite:///optuna.db, MLflow http://u:pw@host:5000 and mysql://b:c@h/d",
         "storage sqlite:///optuna.db, MLflow http://u:***@host:5000 and mysql://b:***@h/d"),
        ("postgresql://ann@db/optuna", "postgresql://ann@db/optuna"),  # no password: unchanged
        ("postgresql://ann:@/optuna?host=/run/pg", "postgresql://ann:@/optuna?host=/run/pg"),
        ("postgresql:///optuna?user=ann&password=pw&host=db", "postgresql:///optuna?user=ann&password=***&host=db"),
    ],
)
def test_redact_hides_every_password_and_nothing_else(text, expected):
    assert redact(text) == expected


@pytest.mark.slow  # a PostgreSQL server
def test_a_password_in_the_storage_url_is_never_written_anywhere(tiny_study, workdir, postgres, caplog):
    postgres.psql(f"CREATE ROLE worker LOGIN PASSWORD '{PASSWORD}';")
    postgres.create_database("secured", owner="worker")
    storage = postgres.url("secured", user="worker", password=PASSWORD)
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    outputs = [runner.invoke(app, [*args, "--storage", storage]) for args in (
        ["run", str(tiny_study), "--set", "search.n_trials=2"],
        ["status", str(tiny_study)],
        ["pareto", str(tiny_study), "--out", str(workdir / "front")],
    )]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    assert "worker:***@" in outputs[0].output  # the URL is shown, its password is not
    # A mistake that quotes the URL back still hides the password.
    bad = runner.invoke(app, ["run", str(tiny_study), "--storage", storage.replace("postgresql", "postgersql")])
    assert bad.exit_code == 2 and "worker:***@" in bad.output

    seen = [r.output for r in [*outputs, bad]] + [record.getMessage() for record in caplog.records]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    for run in client.search_runs([experiment.experiment_id]):
        seen += [*run.data.params.values(), *run.data.tags.values()]
        for folder in ("config", ""):
            for artifact in client.list_artifacts(run.info.run_id, folder or None):
                if artifact.path.endswith((".yaml", ".csv", ".json")):
                    seen.append(client.download_artifacts(run.info.run_id, artifact.path, str(workdir / "dl")))
    study = optuna.load_study(study_name="tiny", storage=storage)
    seen += [repr(study.user_attrs)] + [repr(t.user_attrs) + repr(t.params) for t in study.trials]
    seen += [p.read_text() for p in (workdir / "front").iterdir() if p.suffix != ".png"]  # PNGs hold no text
    texts = [Path(s).read_text() if s.startswith(str(workdir / "dl")) else s for s in seen]
    assert any("search.storage" in t for t in texts)  # the storage was recorded...
    assert not [t for t in texts if PASSWORD in t]  # ...but never its password


def test_log_dataset_survives_a_concurrent_insert_of_the_same_dataset(workdir, monkeypatch):
    """Two trials starting together can both insert the dataset row (MLflow checks, then inserts); the
    loser gets an MlflowException. Simulated once here; the real race is run by test_trials_as_threads."""
    from mlflow.exceptions import MlflowException

    from ee_search.tracking import StudyTracker

    tracker = StudyTracker(f"sqlite:///{workdir}/mlflow.db", "race")
    run = tracker.start_trial(tracker.parent_run("race", {}, "name: race\n"), 0, {})
    real, calls = tracker.client.log_inputs, []

    def first_call_loses_the_race(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_inputs", first_call_loses_the_race)
    run.log_dataset("digits", "abc123-def456", "data", {"train": 10, "val": 2, "test": 3})
    inputs = tracker.client.get_run(run.run_id).inputs.dataset_inputs
    assert len(calls) == 2 and [d.dataset.digest for d in inputs] == ["abc123-def456"]
    assert json.loads(inputs[0].dataset.profile) == {"train": 10, "val": 2, "test": 3}


def test_runs_carry_what_the_mlflow_ui_shows_first(tiny_study, workdir, monkeypatch):
    """The experiment opens on its training runs (experimentKind), each run names its source (the study
    file), describes its ending in words, links back from its Optuna trial, and has system metrics."""
    import optuna
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from ee_search.cli import app

    # An interval longer than any trial here: the last sample, taken as each trial ends, is logged too.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "600")
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    # An experiment made before the tag existed gets it too.
    client.create_experiment("tiny", artifact_location=str(workdir / "mlruns"))
    result = CliRunner().invoke(app, ["run", str(tiny_study), "--n-trials", "2",
                                      "--set", "train.max_epochs=3", "--set", "train.early_stopping.patience=1",
                                      "--set", "train.early_stopping.tol=10"])  # tol 10: stops at epoch 2
    assert result.exit_code == 0, result.output
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        tags = run.data.tags
        assert tags["mlflow.source.name"] == str(tiny_study.resolve())
        assert tags["mlflow.user"]  # MLflow's own context tags are there as well
        note = tags["mlflow.note.content"]
        assert note.startswith("**Complete** after 2 epochs (early stopping: val_loss did not improve by more "
                               "than 10 for 1 epochs)")
        assert f"accuracy {trial.values[0]:.4f}" in note and f"avg_exit_depth {trial.values[1]:.4f}" in note
        assert f"Optuna trial {trial.number} of study `tiny`" in note
        assert trial.user_attrs["mlflow_run_url"] == (f"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
                                                      "?workflowType=machine_learning")
        assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics), sorted(run.data.metrics)
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["mlflow.source.name"] == str(tiny_study.resolve())
    assert parent.data.tags["mlflow.note.content"].startswith(
        "Study `tiny`: 2 of 2 trials finished (2 complete, 0 pruned, 0 failed); dense front: ")
    figures = {f.path for f in client.list_artifacts(parent.info.run_id, "figures")}
    for stem in ("hypervolume_history", "optimization_history_accuracy", "param_importances_avg_exit_depth",
                 "parallel_coordinate_accuracy"):
        assert {f"figures/{stem}.html", f"figures/{stem}.png"} <= figures, figures
    assert "figures/plotly.min.js" in figures
    assert {f.path for f in client.list_artifacts(parent.info.run_id, "pareto")} >= {"pareto/pareto.png",
                                                                                     "pareto/pareto.html"}


def test_run_url_is_a_full_link_over_http_and_never_holds_a_password():
    from ee_search.tracking import StudyTracker

    tracker = StudyTracker.__new__(StudyTracker)  # run_url reads only the URI and the experiment id
    tracker.experiment_id = "7"
    tracker.uri = "https://alice:s3cret@mlflow.example.org:8443/prefix/"
    query = "?workflowType=machine_learning"  # MLflow 3's "Model training" screens, not GenAI's
    assert tracker.run_url("abc") == f"https://mlflow.example.org:8443/prefix/#/experiments/7/runs/abc{query}"
    tracker.uri = "http://127.0.0.1:5000"
    assert tracker.run_url("abc") == f"http://127.0.0.1:5000/#/experiments/7/runs/abc{query}"
    tracker.uri = "sqlite:///mlflow.db"
    assert tracker.run_url("abc") == f"#/experiments/7/runs/abc{query}"


def test_a_pruned_or_failed_trial_says_why_in_its_description():
    import yaml

    from ee_search.config import validate_raw
    from ee_search.records import Ending
    from tests.conftest import TINY_STUDY

    config = validate_raw(yaml.safe_load(TINY_STUDY), "tiny.yaml")
    pruned = Ending.PRUNED.describe(4, config, 3, "pruned", detail="val_loss 1.2 is worse than the 50th percentile")
    assert pruned == ("**Pruned** after 3 epochs: val_loss 1.2 is worse than the 50th percentile. "
                      "Optuna trial 4 of study `tiny`.")
    diverged = Ending.PRUNED.describe(5, config, 1, "non_finite_loss", detail="training diverged")
    assert diverged.startswith("**Pruned** after 1 epoch: the loss became non-finite")
    failed = Ending.FAILED.describe(6, config, 0, detail="RuntimeError: CUDA out of memory")
    assert failed == "**Failed** after 0 epochs: RuntimeError: CUDA out of memory. Optuna trial 6 of study `tiny`."
