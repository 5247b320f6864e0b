"""Tracking: passwords in storage and tracking URLs never reach the console, the logs, MLflow or the
Optuna storage, checked end to end against a real PostgreSQL that requires one; what the MLflow UI
shows first (experiment kind, sources, descriptions, links, system metrics, the study's figures)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from ee_search.config import redact
from tests.conftest import cli

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
    outputs = [cli(*args, "--storage", storage, catch_exceptions=True) for args in (
        ["run", str(tiny_study), "--set", "search.n_trials=2"],
        ["status", str(tiny_study)],
        ["pareto", str(tiny_study), "--out", str(workdir / "front")],
    )]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    assert "worker:***@" in outputs[0].output  # the URL is shown, its password is not
    # A mistake that quotes the URL back still hides the password.
    bad = cli("run", tiny_study, "--storage", storage.replace("postgresql", "postgersql"), catch_exceptions=True)
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


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A 2-trial study whose trials stop early at epoch 2 (tol 10), tracked into an experiment that
    existed before the run (as one made by an older version would). Read-only for the tests below."""
    import optuna

    from tests.conftest import TINY_STUDY, cli, mlflow_client

    directory = tmp_path_factory.mktemp("tracked")
    study_file = directory / "tiny.yaml"
    study_file.write_text(TINY_STUDY)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        # An interval longer than any trial here: the last sample, taken as each trial ends, is logged too.
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "600")
        client = mlflow_client(directory)
        client.create_experiment("tiny", artifact_location=str(directory / "mlruns"))
        result = cli("run", study_file, "--n-trials", "2", "--set", "train.max_epochs=3",
                     "--set", "train.early_stopping.patience=1", "--set", "train.early_stopping.tol=10")
        assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{directory}/optuna.db")
    return study_file, study, client


def _trial_runs(tracked):
    _, study, client = tracked
    return [(trial, client.get_run(trial.user_attrs["mlflow_run_id"])) for trial in study.trials]


def test_an_experiment_made_before_the_tag_existed_opens_on_its_training_runs(tracked):
    _, _, client = tracked
    assert client.get_experiment_by_name("tiny").tags["mlflow.experimentKind"] == "custom_model_development"


def test_every_run_names_the_study_file_as_its_source(tracked):
    study_file, study, client = tracked
    for _, run in _trial_runs(tracked):
        assert run.data.tags["mlflow.source.name"] == str(study_file.resolve())
        assert run.data.tags["mlflow.user"]  # MLflow's own context tags are there as well
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["mlflow.source.name"] == str(study_file.resolve())


def test_patience_and_tol_end_the_trial_and_the_record_says_so(tracked):
    """patience 1 with tol 10 (no epoch improves by 10): trained 2 of 3 epochs, in Optuna and MLflow."""
    for trial, run in _trial_runs(tracked):
        assert trial.user_attrs["epochs_trained"] == 2 and trial.user_attrs["stop_reason"] == "patience_exhausted"
        assert run.data.tags["ee_search.stop_reason"] == "patience_exhausted"
        assert [m.step for m in tracked[2].get_metric_history(run.info.run_id, "val_loss")] == [1, 2]


def test_a_trials_description_says_how_it_ended_and_which_trial_it_is(tracked):
    for trial, run in _trial_runs(tracked):
        note = run.data.tags["mlflow.note.content"]
        assert note.startswith("**Complete** after 2 epochs (early stopping: val_loss did not improve by more "
                               "than 10 for 1 epochs)")
        assert f"accuracy {trial.values[0]:.4f}" in note and f"avg_exit_depth {trial.values[1]:.4f}" in note
        assert f"Optuna trial {trial.number} of study `tiny`" in note


def test_each_optuna_trial_links_to_its_run_on_the_model_training_screens(tracked):
    _, _, client = tracked
    experiment_id = client.get_experiment_by_name("tiny").experiment_id
    for trial, run in _trial_runs(tracked):
        assert trial.user_attrs["mlflow_run_url"] == (f"#/experiments/{experiment_id}/runs/{run.info.run_id}"
                                                      "?workflowType=machine_learning")


def test_every_trial_run_has_system_metrics(tracked):
    for _, run in _trial_runs(tracked):
        assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics), sorted(run.data.metrics)


def test_the_study_run_says_where_the_study_stands(tracked):
    _, study, client = tracked
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["mlflow.note.content"].startswith(
        "Study `tiny`: 2 of 2 trials finished (2 complete, 0 pruned, 0 failed); dense front: ")


def test_the_study_run_holds_the_study_figures_and_the_front(tracked):
    _, study, client = tracked
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    figures = {f.path for f in client.list_artifacts(parent_id, "figures")}
    for stem in ("hypervolume_history", "optimization_history_accuracy", "param_importances_avg_exit_depth",
                 "parallel_coordinate_accuracy"):
        assert {f"figures/{stem}.html", f"figures/{stem}.png"} <= figures, figures
    assert "figures/plotly.min.js" in figures
    assert {f.path for f in client.list_artifacts(parent_id, "pareto")} >= {"pareto/pareto.png", "pareto/pareto.html"}


@pytest.mark.parametrize(("uri", "link"), [
    ("https://alice:s3cret@mlflow.example.org:8443/prefix/", "https://mlflow.example.org:8443/prefix/#/r"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/#/r"),
    ("sqlite:///mlflow.db", "#/r"),  # a local store: the link is relative to wherever `ee-search ui` serves it
])
def test_ui_url_is_a_full_link_over_http_and_never_holds_a_password(uri, link):
    from ee_search.tracking import ui_url

    assert ui_url(uri, "#/r") == link
