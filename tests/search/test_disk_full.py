"""A full disk stops the study in one line and leaves the running trial to be resumed; freeing space
and running again finishes the study with no trial failed for it (docs/design.md §9). The errors
recognised here are real ones (/dev/full, a SQLite database at its page limit); the study test
injects one ENOSPC where an epoch's metrics are logged. The same on a real full filesystem (a tmpfs):
benchmarks/faults_disk.py and its smoke test."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

from ee_search.search.disk_full import DISK_FULL_EXIT, RESERVE_BYTES, RESERVE_NAME, Reserve, disk_full_path
from ee_search.tracking import TrialRun
from tests.conftest import cli

SMALL = ["--set", "data.train_subset=256"]
DEV_FULL = Path("/dev/full")  # Linux: every write to it fails with ENOSPC


def _raised(action) -> BaseException:
    try:
        action()
    except BaseException as error:  # noqa: BLE001 - the error is the result
        return error
    raise AssertionError("nothing was raised")


def _sqlite_full(tmp_path: Path) -> BaseException:
    """SQLite's own SQLITE_FULL, through SQLAlchemy: the database may not grow past its page limit."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    with engine.begin() as con:
        con.execute(sa.text("CREATE TABLE t (x TEXT)"))
    with engine.begin() as con:
        con.execute(sa.text("PRAGMA max_page_count = 2"))
        return _raised(lambda: con.execute(sa.text("INSERT INTO t VALUES (:x)"), {"x": "y" * 100_000}))


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full")
def test_full_disk_errors_are_recognised_through_their_wrappers(tmp_path):
    write = _raised(lambda: DEV_FULL.open("wb", buffering=0).write(b"x"))
    assert disk_full_path(write) == ""  # ENOSPC through an open file: no path
    with DEV_FULL.open("wb", buffering=0) as file:  # on a filling disk torch wraps it in a RuntimeError
        saved = _raised(lambda: torch.save({"w": torch.zeros(100_000)}, file))
    assert disk_full_path(saved) == ""
    # What torch.save raises when the disk fills mid-file (seen on a tmpfs): the OSError is its context.
    torn = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    torn.__context__ = saved
    assert disk_full_path(torn) == ""
    assert disk_full_path(_raised(lambda: shutil.copyfile(__file__, DEV_FULL))) is not None  # an upload
    sql = _sqlite_full(tmp_path)
    assert "database or disk is full" in str(sql) and disk_full_path(sql) == ""
    try:  # Optuna and MLflow raise their own errors from it
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from sql
    except optuna.exceptions.StorageInternalError as wrapped:
        assert disk_full_path(wrapped) == ""
    named = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/data/mlruns/1/x/artifacts/best.pt")
    assert disk_full_path(named) == "/data/mlruns/1/x/artifacts/best.pt"
    for other in (FileNotFoundError(errno.ENOENT, "gone", "/x"), sqlite3.OperationalError("database is locked"),
                  ValueError("bad"), KeyboardInterrupt()):
        assert disk_full_path(other) is None


def test_the_reserve_holds_space_once_per_disk_and_is_freed_on_release(tmp_path):
    (tmp_path / "same-disk").mkdir()
    reserve = Reserve([tmp_path, tmp_path / "same-disk", tmp_path / "missing"]).make()
    path = tmp_path / RESERVE_NAME
    assert reserve.paths == [path] and path.stat().st_size == RESERVE_BYTES
    assert path.stat().st_blocks * 512 >= RESERVE_BYTES  # allocated, not a sparse file
    reserve.release()
    assert not path.exists()


REAL_LOG_METRICS = TrialRun.log_metrics


def _enospc_at_epoch_log(monkeypatch, when: int) -> None:
    """The `when`-th epoch's metrics (counting every trial's) hit a full disk: ENOSPC, as the store's
    write would raise it."""
    real = REAL_LOG_METRICS
    calls: list[int] = []

    def log_metrics(self, metrics, step=None, **linked):  # linked: a LoggedModel's model_id
        if step:
            calls.append(step)
            if len(calls) == when:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, metrics, step, **linked)

    monkeypatch.setattr(TrialRun, "log_metrics", log_metrics)


@pytest.mark.slow  # four tiny trials in three commands (about 25 s on 2 idle cores)
def test_a_full_disk_stops_the_study_in_one_line_and_running_again_finishes_it(tiny_study, workdir, monkeypatch):
    _enospc_at_epoch_log(monkeypatch, when=4)  # trials take 2 epochs: trial 1's second epoch
    result = cli("run", tiny_study, "--n-trials", 3, *SMALL, catch_exceptions=True)
    assert result.exit_code == DISK_FULL_EXIT == 75, result.output
    stop = [line for line in result.output.splitlines() if line.startswith("stopped: ")]
    assert len(stop) == 1 and "is full" in stop[0] and "(no trial failed for it)" in stop[0], result.output
    assert "trial(s) 1 left to resume" in stop[0] and f"resume with: ee-search run {tiny_study}" in stop[0]
    assert "Traceback" not in result.output and "No space left" not in result.output
    assert not (workdir / RESERVE_NAME).exists()  # freed for the closing writes

    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "WAITING"]  # FAIL with a retry: not counted
    assert study.trials[1].user_attrs["resumed_by"] == 2 and "error" not in study.trials[1].user_attrs
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run_id = study.trials[1].user_attrs["mlflow_run_id"]
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["ee_search.state"]) == ("KILLED", "INTERRUPTED")
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1]
    assert cli("status", tiny_study).exit_code == 0

    monkeypatch.setattr(TrialRun, "log_metrics", REAL_LOG_METRICS)  # space freed
    again = cli("run", tiny_study, "--n-trials", 3, *SMALL, catch_exceptions=True)
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="tiny", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    # last.pt of epoch 2 was uploaded before its metrics hit the disk: nothing is redone, and the retry
    # logs epoch 2's metrics from it.
    assert study.trials[2].user_attrs["mlflow_run_id"] == run_id and study.trials[2].user_attrs["resumed_at_epoch"] == 2
    for trial in (study.trials[0], study.trials[2], study.trials[3]):
        steps = [m.step for m in client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_loss")]
        assert steps == [1, 2]  # each epoch once
    assert (workdir / RESERVE_NAME).stat().st_size == RESERVE_BYTES  # made again

