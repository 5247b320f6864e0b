"""A crash mid-study loses no finished trial and no metric already logged; running again resumes.
Here the ways a worker stops and cleans up: Ctrl-C and SIGTERM. SIGKILL (no cleanup: the heartbeat
tells) is tests/search/test_local_workers.py's."""

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

from ee_search.train.trainer import Trainer
from tests.conftest import TINY_STUDY, cli

SMALL = ["--set", "data.train_subset=256"]  # the epochs counted matter here, not how many images they see


def test_ctrl_c_in_the_third_trial_keeps_the_first_two_and_resume_finishes(tiny_study, workdir, monkeypatch):
    real_epoch = Trainer.train_epoch
    calls = {"n": 0}

    def interrupted_epoch(self):
        calls["n"] += 1
        if calls["n"] == 6:  # trials 0 and 1 take two epochs each; this is trial 2's second epoch
            raise KeyboardInterrupt  # what a second Ctrl-C raises (the first one only sets a flag)
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_epoch)
    result = cli("run", str(tiny_study), "--n-trials", "4", *SMALL, catch_exceptions=True)
    assert result.exit_code == 130 and "to resume, run: ee-search run" in result.output

    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    broken = client.get_run(study.trials[2].user_attrs["mlflow_run_id"])
    assert broken.info.status == "KILLED" and broken.data.tags["ee_search.state"] == "INTERRUPTED"
    assert [m.step for m in client.get_metric_history(broken.info.run_id, "val_loss")] == [1]  # epoch 1 kept
    parent = client.search_runs([broken.info.experiment_id], "tags.`ee_search.role` = 'study'")[0]
    assert parent.info.status == "RUNNING"  # 2 of 4 trials: the study is not done

    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    again = cli("run", str(tiny_study), "--n-trials", "4", *SMALL, catch_exceptions=True)
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    # Trial 3 is trial 2 resumed (from epoch 1's last.pt, in the same run); the FAIL does not count.
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[3].user_attrs["mlflow_run_id"] == broken.info.run_id
    assert study.trials[3].user_attrs["resumed_at_epoch"] == 1
    assert [m.step for m in client.get_metric_history(broken.info.run_id, "val_loss")] == [1, 2]
    assert client.get_run(broken.info.run_id).info.status == "FINISHED"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def _running_epochs(db: Path) -> list[tuple[int, int]] | None:
    """[(number, epochs recorded)] of the RUNNING trials, or None while the file is not readable.
    Read-only SQL: opening the file through Optuna would race the worker's own schema creation."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            running = con.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = 'monitor_history'"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return None
    return [(number, len(json.loads(history))) for number, history in running]


def _running_trial_in_epoch(db: Path, epoch: int) -> int | None:
    """A RUNNING trial that has finished epoch - 1 (so it is in `epoch`)."""
    state = _running_epochs(db)
    if state is None:
        return None
    return next((number for number, epochs in state if epochs >= epoch - 1), None)


OVERRIDES = ["--set", "search.heartbeat={interval_s: 1, grace_period_s: 2}", "--set", "train.max_epochs=5",
             "--set", "train.early_stopping.patience=50", "--n-trials", "1"]


def _worker(study: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", str(study), *OVERRIDES], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop_in_epoch(worker: subprocess.Popen, db: Path, epoch: int, signum: int) -> int:
    deadline = time.monotonic() + 240
    while True:
        assert worker.poll() is None, "the worker finished before it could be stopped mid-trial"
        assert time.monotonic() < deadline
        time.sleep(0.05)
        if (found := _running_trial_in_epoch(db, epoch)) is not None:
            worker.send_signal(signum)
            return found


@pytest.fixture(scope="module")
def uninterrupted_values(tmp_path_factory):
    """The trial run once without interruption, the reference for both tests below."""
    reference = tmp_path_factory.mktemp("reference")
    study = reference / "tiny.yaml"
    study.write_text(TINY_STUDY)
    worker = _worker(study, reference)
    assert worker.wait(timeout=300) == 0, worker.stdout.read()
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{reference}/optuna.db").trials[0].values


def _check_resumed(workdir: Path, killed: int, values: list[float], resumed_at: set[int]) -> None:
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"] and killed == 0
    resumed = study.trials[1]
    assert resumed.user_attrs["resumed_at_epoch"] in resumed_at
    assert resumed.values == values  # exactly what an uninterrupted trial with the same seed gives
    run_id = resumed.user_attrs["mlflow_run_id"]
    assert run_id == study.trials[0].user_attrs["mlflow_run_id"]  # one run
    steps = [m.step for m in client.get_metric_history(run_id, "val_loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5]  # no gap, no step twice
    assert client.get_run(run_id).info.status == "FINISHED"


# A worker SIGKILLed mid-trial and resumed from last.pt by the next process, ending as if never
# killed: tests/search/test_local_workers.py::test_a_sigkilled_worker_is_restarted_and_its_trial_resumed_as_if_never_killed
# (a real SIGKILL, the stale-trial retry, values equal to an uninterrupted run, every epoch logged once).


@pytest.mark.slow  # a worker process, SIGTERMed
def test_sigterm_saves_exits_143_with_the_resume_command_and_the_next_run_finishes_the_trial(
        tiny_study, workdir, uninterrupted_values):
    worker = _worker(tiny_study, workdir)
    killed = _stop_in_epoch(worker, workdir / "optuna.db", 3, signal.SIGTERM)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 143, output
    assert f"to resume, run: ee-search run {tiny_study}" in output
    again = _worker(tiny_study, workdir)  # no wait: nothing is stale
    assert again.wait(timeout=300) == 0, again.stdout.read()
    _check_resumed(workdir, killed, uninterrupted_values, {2, 3})
