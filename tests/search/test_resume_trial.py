"""A trial whose worker dies is resumed by Optuna's retry from its last.pt and ends exactly as an
uninterrupted trial with the same seed (CPU): same trial.values, same best weights, and one MLflow run
whose per-epoch history has every epoch once. Killed in-process at several points (a BaseException
that no code catches, leaving the trial RUNNING as a SIGKILL would; its heartbeat then goes stale),
and stopped by SIGTERM / Ctrl-C at a batch boundary (left to be resumed by the next run)."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

from ee_search.config import load_study_file
from ee_search.records import FINAL_METRICS
from ee_search.search.budget import counted_trials
from ee_search.search.recorder import EpochLogger, TrialRecorder
from ee_search.search.signals import StudyInterrupted
from ee_search.search.study import run_study
from ee_search.tracking import StudyTracker
from ee_search.tracking_models import run_models
from ee_search.train import Callback
from ee_search.train.last_checkpoint import LastCheckpoint
from tests.conftest import download_best

CPU = torch.device("cpu")
SETS = ["train.max_epochs=3", "train.early_stopping.patience=50", "search.n_trials=1",
        "search.heartbeat={interval_s: 1, grace_period_s: 2}",
        "train.averaging={method: ema, decay: 0.9}",
        "data.train_subset=320"]  # 5 batches of 64 an epoch: where a trial is cut matters, not its size


class WorkerDied(BaseException):
    """Nothing catches it (Optuna records nothing for it): the trial is left RUNNING with a heartbeat
    that stops, as after a SIGKILL. Raising it marks the process dead (see `dying`)."""

    dead = False

    def __init__(self, *args) -> None:
        super().__init__(*args)
        WorkerDied.dead = True


def _run(study_path):
    where = study_path.parent  # absolute stores: nothing depends on the working directory
    stores = [f'search.storage="sqlite:///{where}/optuna.db"', f'tracking.uri="sqlite:///{where}/mlflow.db"']
    return run_study(load_study_file(study_path, SETS + stores), CPU, 1, None)


@pytest.fixture
def dying(monkeypatch):
    """A dead worker closes nothing: once WorkerDied is raised, the trial's next write to its Optuna
    record (the first thing a trial's ending writes, through Optuna's public Trial.set_user_attr)
    dies too, and takes the rest of the ending with it."""
    real = optuna.trial.Trial.set_user_attr
    WorkerDied.dead = False

    def set_user_attr(self, key, value):
        if WorkerDied.dead:
            error = WorkerDied()
            WorkerDied.dead = False  # the process is gone; the next run is a new one
            raise error
        real(self, key, value)

    monkeypatch.setattr(optuna.trial.Trial, "set_user_attr", set_user_attr)


def _outcome(workdir):
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    final = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(final) == 1
    run_id = final[0].user_attrs["mlflow_run_id"]
    best = download_best(client, final[0], workdir)
    history = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
               for key in ("val_loss", "train_loss", "val_accuracy")}
    return study, client, final[0], run_id, best, history


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.conftest import TINY_STUDY

    where = tmp_path_factory.mktemp("reference")
    (where / "tiny.yaml").write_text(TINY_STUDY)
    _run(where / "tiny.yaml")
    return _outcome(where)


def _same_as_reference(reference, workdir, resumed_at: int):
    _, _, ref_trial, _, ref_best, ref_history = reference
    study, client, trial, run_id, best, history = _outcome(workdir)
    first = study.trials[0]
    assert first.state.name == "FAIL" and trial.number == 1
    assert trial.user_attrs["mlflow_run_id"] == first.user_attrs["mlflow_run_id"]  # one run, continued
    assert trial.user_attrs["resumed_at_epoch"] == resumed_at
    assert trial.values == ref_trial.values and trial.params == ref_trial.params
    assert all(torch.equal(best["state_dict"][k], v) for k, v in ref_best["state_dict"].items())
    assert best["epoch"] == ref_best["epoch"]
    assert history == ref_history  # steps 1..3, each once, the same values
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ee_search.trial_numbers"] == "0,1"
    assert len(counted_trials(study)) == 1  # the FAIL that was resumed is not a trial of the target
    parent = client.search_runs([run.info.experiment_id], "tags.`ee_search.role` = 'study'")[0]
    assert parent.info.status == "FINISHED"
    return trial


class DieAt(Callback):
    def __init__(self, step: int | None = None, next_epoch: int | None = None) -> None:
        self.step, self.next_epoch = step, next_epoch

    def on_train_batch_end(self, trainer, step: int) -> None:
        if step == self.step:
            raise WorkerDied

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if epoch == self.next_epoch:
            raise WorkerDied


def _with_callback(monkeypatch, callback: Callback) -> None:
    real_init = LastCheckpoint.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.killer = callback

    def on_train_batch_end(self, trainer, step):
        self.killer.on_train_batch_end(trainer, step)

    def on_epoch_start(self, trainer, epoch):
        self.killer.on_epoch_start(trainer, epoch)

    monkeypatch.setattr(LastCheckpoint, "__init__", init)
    monkeypatch.setattr(LastCheckpoint, "on_train_batch_end", on_train_batch_end, raising=False)
    monkeypatch.setattr(LastCheckpoint, "on_epoch_start", on_epoch_start, raising=False)


@pytest.mark.parametrize("where, resumed_at", [
    ("first_epoch", 0),  # nothing saved yet: starts over, in the same run
    ("between_last_pt_and_logging", 2),  # epoch 2 saved but not logged: logged on resume
    ("before_epoch_3", 2),  # epoch 2 saved and logged
    ("after_final_metrics", 3),  # every epoch saved, final metrics logged, the trial not yet ended
])
def test_a_dead_worker_is_resumed_from_last_pt_and_ends_identical(reference, tiny_study, workdir, dying,
                                                                   where, resumed_at):
    with pytest.MonkeyPatch.context() as mp, pytest.raises(WorkerDied):
        if where == "after_final_metrics":
            def die(*args, **kwargs):
                raise WorkerDied
            mp.setattr(TrialRecorder, "_log_curve", die)
        elif where == "first_epoch":
            _with_callback(mp, DieAt(step=3))
        elif where == "before_epoch_3":
            _with_callback(mp, DieAt(next_epoch=3))
        else:
            real = EpochLogger.on_validation_end

            def die_before_logging(self, trainer, epoch, metrics):
                if epoch == 2:
                    raise WorkerDied
                real(self, trainer, epoch, metrics)
            mp.setattr(EpochLogger, "on_validation_end", die_before_logging)
        _run(tiny_study)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    time.sleep(3.5)  # past the 2 s grace period with a margin for timestamp rounding
    _run(tiny_study)
    _same_as_reference(reference, workdir, resumed_at)
    _, client, trial, run_id, _, _ = _outcome(workdir)
    for key in FINAL_METRICS:  # logged once, at step 0, however the trial was cut
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0], key
    # One LoggedModel for the run (a model its first attempt left is replaced), with every final metric.
    (model,) = run_models(client, client.get_run(run_id).info.experiment_id, run_id)
    assert model.model_id == trial.user_attrs["mlflow_model_id"] and str(model.status.value) == "READY"
    assert {m.key: m.value for m in model.metrics if m.key in FINAL_METRICS} == {
        k: trial.user_attrs[k] for k in FINAL_METRICS}


def test_sigterm_stops_at_a_batch_boundary_and_the_next_run_resumes_it_identically(reference, tiny_study, workdir):
    class Term(Callback):
        def on_train_batch_end(self, trainer, step):
            if step == 8:  # in epoch 2 (steps 6..10)
                signal.raise_signal(signal.SIGTERM)  # the handler only sets a flag

    with pytest.MonkeyPatch.context() as mp, pytest.raises(StudyInterrupted) as stopped:
        _with_callback(mp, Term())
        _run(tiny_study)
    assert stopped.value.exit_code == 143 and stopped.value.trials == [0]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    assert study.trials[0].user_attrs["resumed_by"] == 1
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["ee_search.state"] == "INTERRUPTED"
    parent = client.search_runs([run.info.experiment_id], "tags.`ee_search.role` = 'study'")[0]
    assert parent.info.status == "RUNNING"  # the study is not done
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back
    _run(tiny_study)  # no sleep: nothing is stale, the WAITING retry goes first
    _same_as_reference(reference, workdir, resumed_at=1)  # epoch 2 resumes mid-way, at batch 8


class TermIn(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, step):
        if step == self.step:
            signal.raise_signal(signal.SIGTERM)  # the handler only sets a flag


def _last_pt_files(client, run_id: str) -> list[Path]:
    """The run's last.pt files in the (local) artifact store, the most recently written last."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    folder = Path(local_file_uri_to_path(client.get_run(run_id).info.artifact_uri)) / "checkpoints"
    return sorted(folder.glob("last*.pt"), key=lambda f: f.stat().st_mtime_ns)


@pytest.mark.parametrize("damage, damaged, resumed_at", [
    ("garbage", 1, 1),  # the newest (mid-epoch 2) is garbage: continue from epoch 1's
    ("truncated", 2, 0),  # both truncated, nothing readable: start over with the same seed
])
def test_a_corrupt_last_pt_costs_only_the_epochs_since_the_last_good_state(reference, tiny_study, workdir, caplog,
                                                                            damage, damaged, resumed_at):
    """SIGTERM in epoch 2 leaves epoch 1's state and the mid-epoch-2 one; the store then garbles the
    newest (or both). The retry still ends COMPLETE, identical to the uninterrupted trial, its run
    FINISHED (not left RUNNING), with one warning line that never advises weights_only=False."""
    with pytest.MonkeyPatch.context() as mp, pytest.raises(StudyInterrupted):
        _with_callback(mp, TermIn(8))
        _run(tiny_study)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run_id = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db").trials[0] \
        .user_attrs["mlflow_run_id"]
    for file in _last_pt_files(client, run_id)[-damaged:]:
        whole = file.read_bytes()
        file.write_bytes(b"\x80\x02garbage" * 100 if damage == "garbage" else whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING):
        _run(tiny_study)
    _same_as_reference(reference, workdir, resumed_at)
    told = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(told) == 1 and "\n" not in told[0] and "weights_only" not in told[0], told
    assert told[0].count("cannot be read") == damaged
    assert ("continuing from checkpoints/last" in told[0]) == (resumed_at > 0)
    assert _last_pt_files(client, run_id) == []  # the trial is done: nothing will resume it


def test_a_retry_that_cannot_fetch_its_state_closes_its_run_instead_of_leaving_it_running(tiny_study, workdir,
                                                                                           monkeypatch):
    """Whatever fails while a retry fetches its last.pt (here the download) fails inside the trial's
    error handling: the trial is FAIL with the error recorded, and its reopened run is closed FAILED."""
    with pytest.MonkeyPatch.context() as mp, pytest.raises(StudyInterrupted):
        _with_callback(mp, TermIn(3))
        _run(tiny_study)

    def unreachable(*args, **kwargs):
        raise ConnectionError("the tracking server is unreachable")
    monkeypatch.setattr(StudyTracker, "download_last_checkpoints", unreachable)
    _run(tiny_study)
    retry = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db").trials[1]
    assert retry.state.name == "FAIL" and "the tracking server is unreachable" in retry.user_attrs["error"]
    run = MlflowClient(f"sqlite:///{workdir}/mlflow.db").get_run(retry.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.trial_state"] == "FAIL"


def test_a_second_ctrl_c_exits_at_once_and_the_trial_is_still_resumable(tiny_study, workdir):
    class TwoCtrlC(Callback):
        def on_train_batch_end(self, trainer, step):
            if step == 2:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)  # raises KeyboardInterrupt here, mid-hook

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        _with_callback(mp, TwoCtrlC())
        _run(tiny_study)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{workdir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]


def test_a_worker_that_ends_before_the_target_leaves_the_parent_run_running(tiny_study, workdir):
    """Workers share the parent run: only the one that sees the study's n_trials finished closes it."""
    where = tiny_study.parent
    stores = [f'search.storage="sqlite:///{where}/optuna.db"', f'tracking.uri="sqlite:///{where}/mlflow.db"',
              "train.max_epochs=1", "data.train_subset=256"]
    loaded = load_study_file(tiny_study, stores)
    client = MlflowClient(f"sqlite:///{where}/mlflow.db")
    first = run_study(loaded, CPU, 2, timeout_s=0.001)  # times out after its first trial
    assert len(first.trial_numbers) == 1
    assert client.get_run(first.parent_run_id).info.status == "RUNNING"
    run_study(loaded, CPU, 2, None)
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"


def test_trials_to_start_counts_running_and_queued_trials_toward_the_target(tmp_path):
    """Exactly n_trials: a trial running in another worker will finish (or be retried in its
    place), so it leaves one trial fewer to start; a FAIL with a queued retry is not an outcome, and
    its WAITING retry is work still to do. Optuna's MaxTrialsCallback counts finished trials only."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from ee_search.search.budget import StopAtTarget, trials_to_start

    storage = RDBStorage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(study_name="target", storage=storage)
    for value in (1.0, 2.0):
        study.tell(study.ask(), value)
    assert trials_to_start(study, 4) == 2
    elsewhere = study.ask()  # another worker's trial, still running (its heartbeat is fresh)
    assert trials_to_start(study, 4) == 1
    assert trials_to_start(study, 3) == 0
    # That worker is interrupted: its trial fails with a WAITING retry queued, as enqueue_retry does.
    study.tell(elsewhere, state=optuna.trial.TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, study.trials[elsewhere.number])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "WAITING"]
    assert trials_to_start(study, 3) == 1  # the retry still has to run; the FAIL does not count
    retry = study.ask()  # Optuna hands out the WAITING retry first
    assert retry.number == 3 and trials_to_start(study, 3) == 0
    # The callback stops a worker as soon as finished plus running trials reach the target.
    stopped = []
    study.stop = lambda: stopped.append(True)  # recorded instead of raised outside optimize()
    StopAtTarget(3)(study, study.trials[0])
    assert stopped == [True]
    study.tell(retry, 3.0)
    stopped.clear()
    StopAtTarget(4)(study, study.trials[0])
    assert stopped == []
