"""The fence (search/ownership.py): a worker whose trial another worker took over stops at once and
writes nothing more to it; the trial is resumed once, by its new owner, and its run logs every epoch once."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from ee_search.records import RETRY_HISTORY
from ee_search.search.recorder import EpochEvents
from ee_search.search.retry import stale_trial_callback
from ee_search.search.study import open_storage
from ee_search.tracking import StudyTracker
from tests.conftest import cli, mlflow_client, tiny_variant


def test_a_trial_taken_over_by_another_worker_is_left_unwritten_and_trained_once(workdir, monkeypatch, caplog):
    study_file = tiny_variant(workdir, **{"train.max_epochs": 3, "train.early_stopping.patience": 50,
                                          "search.n_trials": 1, "search.space": {}})
    storage_url, tracking_uri = f"sqlite:///{workdir}/optuna.db", f"sqlite:///{workdir}/mlflow.db"
    taken: list[int] = []

    def another_worker_takes_it_over(self, trainer, epoch: int, metrics) -> None:
        """After epoch 1 (its last.pt published), exactly what a second worker's fail_stale_trials
        does to a trial whose heartbeat lapsed: FAIL it, queue its retry, mark its run interrupted."""
        if taken or epoch != 1:
            return
        storage = open_storage(storage_url)
        other = optuna.load_study(study_name="tiny", storage=storage)
        trial = next(t for t in other.get_trials() if t.number == self.trial_number)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        tracker = StudyTracker(tracking_uri, "tiny", None)
        stale_trial_callback(tracker, retries=2)(other, storage.get_trial(trial._trial_id))
        taken.append(trial.number)

    monkeypatch.setattr(EpochEvents, "on_epoch_end", another_worker_takes_it_over, raising=False)
    result = cli("run", study_file)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Cannot tell" not in result.output
    assert "trial 0 was marked FAIL by another worker" in caplog.text  # one line, from the worker's log

    study = optuna.load_study(study_name="tiny", storage=storage_url)
    assert taken == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]  # the retry, by its new owner
    assert study.trials[1].system_attrs[RETRY_HISTORY] == [0] and study.trials[1].user_attrs["resumed_at_epoch"] == 1
    client = mlflow_client()
    run_id = study.trials[1].user_attrs["mlflow_run_id"]
    assert run_id == study.trials[0].user_attrs["mlflow_run_id"]  # one run per logical trial
    # The oracle: each epoch logged once. Without the fence the first worker goes on and logs epoch 2
    # (and 3) into the run its successor is filling too, then dies on "Cannot tell a FAIL trial".
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_loss")) == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"
