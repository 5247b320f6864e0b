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
    seen += [p.read_text() for p in (workdir / "front").iterdir()]
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
