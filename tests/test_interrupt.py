"""A crash mid-study loses no finished trial and no metric already logged; running again resumes.
Both ways a worker can die: Ctrl-C (it cleans up), and SIGKILL (it cannot: the heartbeat tells)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from ee_search.cli import app
from ee_search.train.trainer import Trainer

runner = CliRunner()


def test_ctrl_c_in_the_third_trial_keeps_the_first_two_and_resume_finishes(tiny_study, workdir, monkeypatch):
    real_epoch = Trainer.train_epoch
    calls = {"n": 0}

    def interrupted_epoch(self):
        calls["n"] += 1
        if calls["n"] == 6:  # trials 0 and 1 take two epochs each; this is trial 2's second epoch
            raise KeyboardInterrupt
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_epoch)
    result = runner.invoke(app, ["run", str(tiny_study), "--n-trials", "4"])
    assert result.exit_code == 130 and "resume" in result.output

    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    broken = client.get_run(study.trials[2].user_attrs["mlflow_run_id"])
    assert broken.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(broken.info.run_id, "val_loss")] == [1]  # epoch 1 kept
    parent = client.search_runs([broken.info.experiment_id], "tags.`ee_search.role` = 'study'")[0]
    assert parent.info.status == "KILLED"

    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    again = runner.invoke(app, ["run", str(tiny_study), "--n-trials", "4"])
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert client.get_run(study.trials[0].user_attrs["mlflow_run_id"]).info.status == "FINISHED"


def _running_trial_with_an_epoch(db: Path) -> int | None:
    """A RUNNING trial with at least one epoch recorded, once some trial is COMPLETE. Read-only SQL:
    opening the file through Optuna would race the worker's own schema creation."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            complete = con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
            running = con.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = 'monitor_history'"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return None
    for number, history in running:
        if complete and len(json.loads(history)) >= 1:
            return number
    return None


@pytest.mark.slow  # a worker process, killed
def test_a_worker_killed_mid_trial_leaves_a_failed_trial_and_keeps_everything_logged(tiny_study, workdir):
    overrides = ["--set", "search.heartbeat={interval_s: 1, grace_period_s: 2}", "--set", "train.max_epochs=8",
                 "--set", "train.early_stopping.patience=50", "--n-trials", "3"]
    worker = subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", str(tiny_study), *overrides],
                              cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None:
        assert worker.poll() is None, "the worker finished before it could be killed mid-trial"
        assert time.monotonic() < deadline
        time.sleep(0.05)
        if (found := _running_trial_with_an_epoch(workdir / "optuna.db")) is not None:
            worker.send_signal(signal.SIGKILL)  # no cleanup of any kind
            worker.wait()
            killed = found
    time.sleep(2.5)  # past the grace period: the trial's heartbeat is stale now

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    logged_before = {t.number: [(m.step, m.value) for m in client.get_metric_history(t.user_attrs["mlflow_run_id"], "val_loss")]
                     for t in study.trials if "mlflow_run_id" in t.user_attrs}
    assert study.trials[killed].state.name == "RUNNING" and len(logged_before[killed]) >= 1

    again = runner.invoke(app, ["run", str(tiny_study), *overrides])
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed] == "FAIL"
    assert all(state == "COMPLETE" for n, state in states.items() if n != killed)
    assert sum(1 for s in states.values() if s in ("COMPLETE", "FAIL")) == 3  # the failed one counts
    dead = client.get_run(study.trials[killed].user_attrs["mlflow_run_id"])
    assert dead.info.status == "FAILED" and dead.data.tags["optuna.trial_state"] == "FAIL"
    for number, history in logged_before.items():  # nothing that was logged before the kill is lost
        after = [(m.step, m.value) for m in client.get_metric_history(study.trials[number].user_attrs["mlflow_run_id"], "val_loss")]
        assert after[: len(history)] == history
        if number != killed:
            assert client.get_run(study.trials[number].user_attrs["mlflow_run_id"]).info.status == "FINISHED"
    parents = client.search_runs([dead.info.experiment_id], "tags.`ee_search.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
