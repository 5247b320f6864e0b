"""`ee-search run STUDY --ray ADDRESS` (search/ray_workers.py): the workers as Ray tasks. What it refuses
is checked without Ray; the cluster is a real Ray head started on this machine for the test (3 CPUs
standing in for GPUs) and stopped after it, with a real PostgreSQL and a real `mlflow server`: 3
workers, 12 trials, one Ray worker process SIGKILLed mid-trial. The study must end with exactly 12
trials, the lost one resumed from its last.pt with the values of an uninterrupted run."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState, create_trial

from ee_search.records import RETRY_HISTORY, TrialRecord
from ee_search.search.budget import counted_trials
from tests.conftest import TINY_STUDY, cli

SHARED_DB = "postgresql://ann@db.invalid/optuna"  # checked for its driver only: no server is reached


@pytest.mark.parametrize(("flags", "field", "words"), [
    (["--storage", "sqlite:///optuna.db"], "search.storage", "cannot share: use a database server"),
    (["--storage", "journal:optuna.journal"], "search.storage", "cannot share"),
    (["--storage", SHARED_DB], "tracking.uri", "use an MLflow tracking server"),  # the default sqlite:///mlflow.db
    (["--storage", SHARED_DB, "--tracking-uri", "mlruns"], "tracking.uri", "cannot share"),
    (["--storage", SHARED_DB, "--tracking-uri", "postgresql://ann@db.invalid/mlflow"], "tracking.artifact_location",
     "its own ./mlruns"),
    (["--storage", SHARED_DB, "--tracking-uri", "http://127.0.0.1:9", "--device", "cpu", "--set",
      "search.gpus_per_trial=0.5"], "search.gpus_per_trial", "but device is cpu"),
])
def test_stores_the_nodes_cannot_share_are_refused_in_one_line(tiny_study, workdir, flags, field, words):
    result = cli("run", tiny_study, "--ray", "auto", *flags)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and f"tiny.yaml: {field}: " in result.output and words in result.output
    assert sorted(p.name for p in workdir.iterdir()) == ["tiny.yaml"]  # nothing created


def test_without_the_extra_ray_is_refused_with_the_install_line(tiny_study, workdir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = cli("run", tiny_study, "--ray", "auto", "--storage", SHARED_DB, "--tracking-uri", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "pip install 'ee-search[ray]'" in result.output


# ------------------------------------------------------------------------------ a real Ray head
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """`ray start --head` in a session of its own; afterwards every process of that session is stopped
    (by its process group: `ray stop` would stop every Ray on the machine)."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = _free_port()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={port}", "--num-cpus=3", "--num-gpus=0", "--object-store-memory=100000000",
               "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    starter = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    output = starter.communicate(timeout=180)[0]
    try:
        assert starter.returncode == 0, output
        yield f"127.0.0.1:{port}"
    finally:
        for signum, wait_s in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 0.0)):  # nothing of it is kept
            try:
                os.killpg(starter.pid, signum)
            except ProcessLookupError:
                break
            time.sleep(wait_s)
        shutil.rmtree(temp, ignore_errors=True)


def test_an_address_with_no_cluster_is_one_line_and_creates_nothing(tiny_study, workdir):
    result = cli("run", tiny_study, "--ray", f"127.0.0.1:{_free_port()}", "--storage", SHARED_DB,
                 "--tracking-uri", "http://127.0.0.1:9")
    assert result.exit_code == 2, result.output
    assert "tiny.yaml: search.ray: cannot reach a Ray cluster" in result.output
    assert sorted(p.name for p in workdir.iterdir()) == ["tiny.yaml"]


# Every trial trains the same recipe (no search space), so its values depend only on its seed,
# seed + its original number: the reference for trial k is that trial run alone by one process.
SETS = ["search.space={}", "train.max_epochs=3", "train.early_stopping.patience=50", "data.train_subset=512",
        "search.heartbeat={interval_s: 1, grace_period_s: 8}"]  # 8: a busy machine delays live beats
EPOCHS = 3


def _uninterrupted_values(directory: Path, number: int) -> list[float]:
    """Trial `number` of the study, run alone: `number` placeholder trials first (FAIL, counted), so the
    one trial run has that number and its seed; on one thread, as each Ray worker (num_cpus=1)."""
    (directory / "tiny.yaml").write_text(TINY_STUDY)
    storage = f"sqlite:///{directory}/optuna.db"
    study = optuna.create_study(study_name="tiny", storage=storage, directions=["maximize", "minimize"])
    for _ in range(number):
        study.add_trial(create_trial(state=TrialState.FAIL))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = cli("run", directory / "tiny.yaml", *[a for s in SETS for a in ("--set", s)], "--n-trials",
                     number + 1, "--storage", storage, "--tracking-uri", f"sqlite:///{directory}/mlflow.db")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return optuna.load_study(study_name="tiny", storage=storage).trials[number].values


def _ray_worker_of(pid: int) -> int | None:
    """The Ray worker process that started worker process `pid` (its launcher sets PR_SET_PDEATHSIG)."""
    try:
        if b"PR_SET_PDEATHSIG" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        pass
    return None


def _a_trial_mid_training(study: optuna.Study) -> tuple[int, int, int] | None:
    """(trial number, its worker process, that one's Ray worker) for a trial past epoch 1 and before its last."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = TrialRecord.read(trial)
        if record.worker and 1 <= len(record.monitor_history or []) < EPOCHS:
            pid = int(record.worker.rsplit(":", 1)[1])
            if (ray_worker := _ray_worker_of(pid)) is not None:
                return trial.number, pid, ray_worker
    return None


@pytest.mark.slow  # a Ray head, PostgreSQL, an mlflow server, 3 workers
def test_a_worker_lost_by_ray_is_restarted_and_its_trial_resumed_as_if_never_killed(
        tiny_study, workdir, ray_head, postgres, mlflow_server, tmp_path_factory):
    tracking, _ = mlflow_server
    storage = postgres.url("optuna")
    rng = random.Random()
    settle = rng.randint(0, 6)  # finished trials before the kill: a random moment of the study
    with open(workdir / "driver.log", "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "ee_search.cli", "run", str(tiny_study), "--ray", ray_head, "--workers", "3",
             "--n-trials", "12", "--storage", storage, "--tracking-uri", tracking,
             *[a for s in SETS for a in ("--set", s)]],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _kill_a_worker_mid_trial_and_wait(driver, workdir, storage, tracking, settle, tmp_path_factory)
    finally:
        if driver.poll() is None:  # a failure above: the Ray head's teardown stops its tasks' processes
            driver.kill()


def _kill_a_worker_mid_trial_and_wait(driver, workdir, storage, tracking, settle, tmp_path_factory):
    deadline = time.monotonic() + 240
    # One storage for every poll: a `load_study(url)` per poll builds an engine whose pooled connection
    # lives until the garbage collector finds it, and a slow start of the driver then exhausted the
    # server's 100 connections ("too many clients already").
    polled = optuna.storages.RDBStorage(storage, skip_compatibility_check=True)
    study, target = None, None
    while target is None:
        assert driver.poll() is None and time.monotonic() < deadline, (workdir / "driver.log").read_text()
        try:
            study = study or optuna.load_study(study_name="tiny", storage=polled)
            if len(counted_trials(study)) >= settle:
                target = _a_trial_mid_training(study)
        except KeyError:  # not created yet
            pass
        time.sleep(0.05)
    killed, worker, ray_worker = target
    os.kill(ray_worker, signal.SIGKILL)  # the Ray worker process: Ray runs its task again
    for _ in range(100):  # its worker process goes with it (PR_SET_PDEATHSIG), mid-trial
        if not Path(f"/proc/{worker}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists()
    assert driver.wait(timeout=240) == 0, (workdir / "driver.log").read_text()
    output = (workdir / "driver.log").read_text()
    assert "Traceback" not in output and "trial(s) this run" in output, output

    final = counted_trials(study)
    assert len(final) == 12 and all(t.state.name == "COMPLETE" for t in final), f"settle={settle}"
    assert len(study.trials) == 13  # 12 and the one that was lost (FAIL, with its retry among the 12)
    resumed = [t for t in final if t.system_attrs.get(RETRY_HISTORY)]
    assert [t.system_attrs[RETRY_HISTORY] for t in resumed] == [[killed]], output
    assert TrialRecord.read(resumed[0]).resumed_at_epoch >= 1  # from its last.pt, not from the start
    assert resumed[0].values == _uninterrupted_values(tmp_path_factory.mktemp("reference"), killed)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment], "tags.`ee_search.role` = 'trial'")
    assert len(runs) == 12  # one run per trial: the retry reopened the lost trial's run
    parent = client.search_runs([experiment], "tags.`ee_search.role` = 'study'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(TrialRecord.read(resumed[0]).mlflow_run_id, "val_loss"))
    assert steps == list(range(1, EPOCHS + 1)), json.dumps(steps)  # every epoch logged once
