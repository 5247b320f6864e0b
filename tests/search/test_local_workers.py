"""`ee-search run STUDY --workers N`: N worker processes on one study, started by one parent
(search/workers.py). The plan that puts them on devices (search/devices.py) is checked for machines
this one is not (GPU counts given by hand); the processes are real: two workers share a SQLite
study and end with exactly n_trials trials, and a worker SIGKILLed mid-trial is restarted and its
trial resumed with the values of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

from ee_search.errors import UserInputError
from ee_search.records import RETRY_HISTORY
from ee_search.search.budget import counted_trials
from ee_search.search.devices import plan_workers
from ee_search.search.events import StudyEvents
from ee_search.search.gate import FileLock, TrialGate
from ee_search.search.watch import StudyWatcher
from tests.conftest import TINY_STUDY, cli, tiny_config

SMALL = ["--set", "train.max_epochs=1", "--set", "data.train_subset=256"]


def _plan(cuda_count=0, cores=2, visible="", **dotted):
    return plan_workers(tiny_config(**dotted), "tiny.yaml", cuda_count=cuda_count, cores=cores, visible=visible)


def test_cpu_workers_split_the_cores_and_a_users_thread_setting_wins():
    slots = _plan(cores=8, **{"search.workers": 3, "search.devices": "all", "device": "auto"})
    assert [(s.device, s.threads, s.gpu) for s in slots] == [("cpu", 2, None)] * 3
    assert slots[0].env({})["OMP_NUM_THREADS"] == "2"
    assert slots[0].env({"OMP_NUM_THREADS": "1"})["OMP_NUM_THREADS"] == "1"
    assert [s.threads for s in _plan(cores=2, **{"search.workers": 4})] == [1] * 4  # never 0


def test_gpu_workers_go_round_robin_each_seeing_only_its_own_gpu():
    slots = _plan(cuda_count=4, **{"search.workers": 8, "search.trials_per_device": 2})
    assert [s.gpu for s in slots] == ["0", "1", "2", "3"] * 2 and {s.device for s in slots} == {"cuda"}
    assert slots[1].env({})["CUDA_VISIBLE_DEVICES"] == "1" and "OMP_NUM_THREADS" not in slots[1].env({})
    # The indices name this process's visible GPUs, whatever their physical numbers.
    chosen = _plan(cuda_count=2, visible="4,6", **{"search.workers": 2, "search.devices": ["cuda:1", "cuda:0"]})
    assert [s.gpu for s in chosen] == ["6", "4"]
    assert [s.device for s in _plan(cuda_count=4, **{"search.workers": 2, "device": "cpu"})] == ["cpu", "cpu"]


@pytest.mark.parametrize(("dotted", "field", "words"), [
    ({"search.workers": 3}, "search.workers", "raise it to 2"),  # 2 GPUs, one worker each by default
    ({"search.workers": 2, "search.devices": ["cuda:2"]}, "search.devices", "torch sees cuda:0..cuda:1"),
])
def test_a_plan_that_does_not_fit_names_the_field_and_the_fix(dotted, field, words):
    with pytest.raises(UserInputError) as caught:
        _plan(cuda_count=2, **dotted)
    assert caught.value.field == field and words in str(caught.value)


def test_devices_may_be_a_comma_separated_list_as_on_the_command_line():
    assert tiny_config(**{"search.devices": "cuda:0, cuda:1"}).search.devices == ["cuda:0", "cuda:1"]
    assert tiny_config(**{"search.devices": "[cuda]"}).search.devices == ["cuda:0"]


def test_the_gate_lets_one_worker_at_a_time_check_the_target_and_create_its_trial(tmp_path):
    study = optuna.create_study()
    first, second = (TrialGate(FileLock(tmp_path / "study.lock"), n_trials=1) for _ in range(2))  # two workers
    assert first.first(study) == 1  # one trial left: the gate stays shut until it exists
    seen: list[int] = []
    waiting = threading.Thread(target=lambda: seen.append(second.first(study)))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # the second worker waits for the gate
    first.gated(lambda trial: None)(study.ask())  # the trial exists; its objective opens the gate
    waiting.join(10)
    assert seen == [0]  # it counts as running: nothing left for the second worker to start
    first.close()
    second.close()


class _Events(StudyEvents):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def study_started(self, study, target, to_start) -> None:
        self.calls.append(("study_started", target, to_start))

    def trial_started(self, trial_number, max_epochs, resumed_at_epoch) -> None:
        self.calls.append(("trial_started", trial_number, max_epochs, resumed_at_epoch))

    def epoch_ended(self, trial_number, epoch, metrics) -> None:
        self.calls.append(("epoch_ended", trial_number, epoch, dict(metrics)))

    def trial_ended(self, trial) -> None:
        self.calls.append(("trial_ended", trial.number, trial.state.name))


def test_the_parent_reads_the_progress_of_other_processes_trials_from_the_storage():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.tell(study.ask(), [0.5, 0.5])  # an earlier run's trial: not this run's
    events = _Events()
    watcher = StudyWatcher(study, events, "val_loss", 4)
    watcher.start(3, 2)
    running = study.ask()
    running.set_user_attr("monitor_history", [1.0, 0.9])
    watcher.poll()
    watcher.poll()  # nothing new: nothing twice
    running.set_user_attr("monitor_history", [1.0, 0.9, 0.8])
    study.tell(running, [0.6, 0.4])
    watcher.poll()
    assert events.calls == [("study_started", 3, 2), ("trial_started", 1, 4, 0),
                            ("epoch_ended", 1, 1, {"val_loss": 1.0}), ("epoch_ended", 1, 2, {"val_loss": 0.9}),
                            ("epoch_ended", 1, 3, {"val_loss": 0.8}), ("trial_ended", 1, "COMPLETE")]
    assert watcher.ended == [1]


@pytest.mark.parametrize(("flags", "field"), [
    (["--workers", "0"], "search.workers"),
    (["--workers", "2", "--devices", "tpu"], "search.devices"),
    (["--workers", "2", "--devices", "cuda:0,cuda:7"], "search.devices"),
])
def test_bad_worker_flags_are_one_line_exit_2_and_create_nothing(tiny_study, workdir, flags, field):
    result = cli("run", tiny_study, *flags)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and f"tiny.yaml: {field}: " in result.output
    assert not (workdir / "optuna.db").exists() and not (workdir / "mlflow.db").exists()


def _runs(workdir: Path):
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    return (client, client.search_runs([experiment], "tags.`ee_search.role` = 'trial'"),
            client.search_runs([experiment], "tags.`ee_search.role` = 'study'"))


@pytest.mark.slow  # worker processes
def test_two_workers_end_with_exactly_n_trials_one_run_each(tiny_study, workdir):
    result = cli("run", tiny_study, "--workers", "2", "--n-trials", "3", *SMALL)
    assert result.exit_code == 0, result.output
    assert "worker 0 on cpu" in result.output and "3 trial(s) this run (3 complete" in result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    # Each worker process has its own sampler seed: seeded alike, they would draw the same values.
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 3
    _, trials, parents = _runs(workdir)
    assert sorted(int(r.data.tags["ee_search.trial_number"]) for r in trials) == [0, 1, 2]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


# --------------------------------------------------------------------------- a worker SIGKILLed
# Every trial trains the same recipe (no search space), so a trial's values depend only on its seed,
# seed + its original number: the reference is the same study run by one process.
KILL_SETS = ["search.space={}", "train.max_epochs=4", "train.early_stopping.patience=50", "search.n_trials=3",
             "search.heartbeat={interval_s: 1, grace_period_s: 8}"]  # 8: a busy machine delays live beats


@pytest.fixture
def reference_values(tmp_path_factory):
    where = tmp_path_factory.mktemp("reference")
    (where / "tiny.yaml").write_text(TINY_STUDY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker has: 2 workers on OMP_NUM_THREADS=1
    try:
        result = cli("run", where / "tiny.yaml", *[a for s in KILL_SETS for a in ("--set", s)], "--n-trials", "4",
                     "--storage", f"sqlite:///{where}/optuna.db", "--tracking-uri", f"sqlite:///{where}/mlflow.db")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{where}/optuna.db")
    return {t.number: t.values for t in study.trials}


def _running_epochs(db: Path) -> list[int]:
    """Epochs recorded by each RUNNING trial (read-only SQL: the workers own the file)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            rows = con.execute("SELECT a.value_json FROM trials t JOIN trial_user_attributes a ON "
                               "a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'monitor_history'"
                               ).fetchall()
    except sqlite3.OperationalError:
        return []
    return [len(json.loads(value)) for (value,) in rows]


def _wait_until_both_workers_are_past_epoch_1(parent: subprocess.Popen, workdir: Path) -> None:
    """Both workers mid-trial, each with a last.pt to resume from."""
    deadline = time.monotonic() + 240
    while not (len(epochs := _running_epochs(workdir / "optuna.db")) == 2 and min(epochs) >= 1):
        assert parent.poll() is None and time.monotonic() < deadline, (workdir / "parent.log").read_text()
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow  # worker processes, one SIGKILLed
def test_a_sigkilled_worker_is_restarted_and_its_trial_resumed_as_if_never_killed(tiny_study, workdir,
                                                                                  reference_values):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    sets = [a for s in KILL_SETS for a in ("--set", s)]
    with open(workdir / "parent.log", "w") as log:
        parent = subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", str(tiny_study), "--workers", "2",
                                   *sets], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    _wait_until_both_workers_are_past_epoch_1(parent, workdir)
    os.kill(_children(parent.pid)[0], signal.SIGKILL)  # both workers are mid-trial, each with a last.pt
    assert parent.wait(timeout=300) == 0, (workdir / "parent.log").read_text()
    output = (workdir / "parent.log").read_text()
    assert "killed by SIGKILL: restarting it" in output and "Traceback" not in output

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    final = counted_trials(study)
    assert len(final) == 3 and all(t.state.name == "COMPLETE" for t in final)
    resumed = [t for t in final if t.system_attrs.get(RETRY_HISTORY)]
    assert len(resumed) == 1 and resumed[0].user_attrs["resumed_at_epoch"] >= 1
    for trial in final:  # the resumed one too: what an uninterrupted trial with its seed gives
        origin = trial.system_attrs.get(RETRY_HISTORY, [trial.number])[0]
        assert trial.values == reference_values[origin], trial.number
    client, runs, parents = _runs(workdir)
    assert len(runs) == 3 and parents[0].info.status == "FINISHED"
    for run in runs:  # one run per logical trial, every epoch logged once
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [1, 2, 3, 4]


@pytest.mark.slow  # worker processes, the parent SIGTERMed
def test_sigterm_on_the_parent_stops_every_worker_resumably_and_the_next_run_finishes(tiny_study, workdir):
    sets = [a for s in KILL_SETS for a in ("--set", s)]
    with open(workdir / "parent.log", "w") as log:
        parent = subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", str(tiny_study), "--workers", "2",
                                   *sets], cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    _wait_until_both_workers_are_past_epoch_1(parent, workdir)
    workers = _children(parent.pid)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=120) == 143
    output = (workdir / "parent.log").read_text()
    assert f"to resume, run: ee-search run {tiny_study}" in output and "--workers 2" in output
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # none left behind
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    # Each worker saved its unfinished trial: the trial ends FAIL (interrupted) with its retry queued
    # (WAITING). Both were past epoch 1 at the signal, but one may have finished its last epoch before
    # the signal reached it: then only the other one is interrupted.
    states = [t.state.name for t in study.trials]
    waiting = states.count("WAITING")
    assert 1 <= waiting <= 2 and states.count("FAIL") == waiting and "RUNNING" not in states

    again = cli("run", tiny_study, "--workers", "2", *sets)
    assert again.exit_code == 0, again.output
    final = counted_trials(optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db"))
    assert len(final) == 3 and all(t.state.name == "COMPLETE" for t in final)
    resumed_at = [t.user_attrs["resumed_at_epoch"] for t in final if t.system_attrs.get(RETRY_HISTORY)]
    assert len(resumed_at) == waiting and min(resumed_at) >= 1  # each went on from its last.pt
