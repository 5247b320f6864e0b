"""Retries of trials that could not finish where they ran (docs/design.md §9).

A trial that cannot finish where it runs is retried by a WAITING copy of it (Optuna's
RetryHeartbeatStaleTrialCallback: same params, the user attrs, and system attrs `failed_trial` =
the original trial's number and `retry_history`). The copy is enqueued two ways:
- by the storage, when the trial's heartbeat went stale (its worker was SIGKILLed or lost);
- by the trial itself when SIGTERM / Ctrl-C stopped it at a batch boundary (`enqueue_retry`).
Optuna hands out WAITING trials before sampling new ones, so the next `ee-search run` (or another
worker) resumes it first; the recorder then reopens the SAME MLflow run from its last.pt.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from ee_search.records import RETRY_HISTORY, Ending, TrialRecord
from ee_search.tracking import StudyTracker


def stale_trial_callback(tracker: StudyTracker, retries: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """For the RDB storage: retry a stale trial (Optuna's own callback) and close its MLflow run with
    the ending that says what happens next: INTERRUPTED if a retry will continue it, else FAILED."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        # A trial stopped by a full disk may have queued its retry and then failed to record its own
        # end (disk_full.py): one retry, or it would be trained twice.
        if retries > 0 and successor(study, trial.number) is None:
            retry(study, trial)
        run_id = TrialRecord.read(trial).mlflow_run_id
        if not run_id:
            return
        if successor(study, trial.number) is not None:
            tracker.trial_run(run_id).finish(
                Ending.INTERRUPTED, detail=f"trial {trial.number}'s worker stopped sending heartbeats")
        else:
            tracker.trial_run(run_id).finish(Ending.FAILED)

    return on_stale


def enqueue_retry(trial: optuna.Trial) -> int | None:
    """A WAITING copy of this running trial, as the heartbeat retry makes one (no retry limit: being
    interrupted is not the trial's fault); returns its number."""
    study = trial.study
    frozen = study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - the callback needs a FrozenTrial
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, frozen)
    return successor(study, trial.number)


def successor(study: optuna.Study, number: int) -> int | None:
    """The retry that continues trial `number`, if one was enqueued."""
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.system_attrs.get(RETRY_HISTORY, [None])[-1] == number:
            return t.number
    return None


def retry_history(trial: optuna.Trial) -> list[int]:
    """The trials this one continues, oldest first; empty for a new trial."""
    return trial.study._storage.get_trial_system_attrs(trial._trial_id).get(RETRY_HISTORY, [])  # noqa: SLF001
