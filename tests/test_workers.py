"""Two `ee-search run` processes on one study: they share `search.n_trials`, one parent run, and the
storage (a journal file, or SQLite), as several workers on one machine would."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app


def _worker(study, storage, tracking, n_trials, cwd):
    cmd = [sys.executable, "-m", "ee_search.cli", "run", str(study), "--n-trials", str(n_trials),
           "--storage", storage, "--tracking-uri", tracking, "--set", "train.max_epochs=1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.parametrize("storage_kind", ["journal", "sqlite"])
def test_two_workers_share_one_study(tiny_study, workdir, storage_kind):
    storage = f"journal:{workdir}/optuna.journal" if storage_kind == "journal" else f"sqlite:///{workdir}/optuna.db"
    tracking = f"sqlite:///{workdir}/mlflow.db"
    # Create the stores first, as an operator would, so the workers race only over trials.
    first = CliRunner().invoke(app, ["run", str(tiny_study), "--n-trials", "1", "--storage", storage,
                                     "--tracking-uri", tracking, "--set", "train.max_epochs=1"])
    assert first.exit_code == 0, first.output
    workers = [_worker(tiny_study, storage, tracking, 5, workdir) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    assert all("trial(s) this run" in o for o in outputs)

    if storage_kind == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        opened = JournalStorage(JournalFileBackend(str(workdir / "optuna.journal")))
    else:
        opened = storage
    study = optuna.load_study(study_name="tiny", storage=opened)
    finished = [t for t in study.trials if t.state.is_finished()]
    # MaxTrialsCallback stops each worker once 5 are done; two trials started in the same instant
    # may overshoot by one.
    assert 5 <= len(finished) <= 6 and all(t.state.name == "COMPLETE" for t in finished)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'study'")
    assert len(parents) == 1
    children = client.search_runs([experiment.experiment_id], "tags.`ee_search.role` = 'trial'")
    assert len(children) == len(finished)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(int(r.data.tags["ee_search.trial_number"]) for r in children) == sorted(t.number for t in finished)
