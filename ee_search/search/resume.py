"""Resumed trials on the Optuna side (DESIGN.md §9): retries, their MLflow run, signals.

A trial that cannot finish where it runs is retried by a WAITING copy of it (Optuna's
RetryHeartbeatStaleTrialCallback: same params, the user attrs, and system attrs `failed_trial` =
the original trial's number and `retry_history`). The copy is enqueued two ways:
- by the storage, when the trial's heartbeat went stale (its worker was SIGKILLed or lost);
- by the trial itself when SIGTERM / Ctrl-C stopped it at a batch boundary (`enqueue_retry`).
Optuna hands out WAITING trials before sampling new ones, so the next `ee-search run` (or another
worker) resumes it first. The retry continues the SAME MLflow run from its `checkpoints/last.pt`,
with the original trial's seed, so the run reads as one unbroken trial and ends where an
uninterrupted one would. A FAIL that has a retry is not a finished trial of `search.n_trials`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ee_search.tracking import STATE_TAG, StudyTracker, TrialRun
from ee_search.train import completed_epochs, load_checkpoint, saved_history

logger = logging.getLogger(__name__)

RESUMED_BY_ATTR = "resumed_by"  # on an interrupted trial: the number of the trial that continues it
RESUMED_FROM_ATTR = "resumed_from"  # on a retry: the trial it continues
RESUMED_AT_ATTR = "resumed_at_epoch"  # epochs the retry found in last.pt (0: it started over)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials that have a retry (waiting, running or done): their FAIL is not an outcome."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The finished trials that count toward `search.n_trials`: a FAIL that is being resumed is not one."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return [t for t in trials if t.state in FINISHED_STATES
            and not (t.state == TrialState.FAIL and t.number in retried)]


def trials_to_start(study: optuna.Study, n_trials: int) -> int:
    """How many more trials this worker may start so that the study ends with exactly `n_trials`.

    Optuna's MaxTrialsCallback counts finished trials only, so a worker that finishes while another
    worker's (or thread's) last trial is still running starts one more, and the study overshoots by
    up to workers - 1. Here a RUNNING trial counts as one that will finish (its retry, if it dies,
    takes its place), and a WAITING one (a queued retry) is work still to do. A dead worker's trial
    stays RUNNING until its heartbeat is stale, so it is failed first where the storage can tell."""
    optuna.storages.fail_stale_trials(study)  # no-op without heartbeats (journal storage)
    trials = study.get_trials(deepcopy=False)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return max(0, n_trials - len(counted_trials(study)) - running)


class StopAtTarget:
    """Stops this worker once the study's finished plus running trials reach `search.n_trials`
    (see `trials_to_start`), checked after every trial; shared by every worker through the storage."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trials_to_start(study, self.n_trials) == 0:
            study.stop()


def stale_trial_callback(tracker: StudyTracker, retries: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """For the RDB storage: retry a stale trial (Optuna's own callback) and close its MLflow run with
    the status that says what happens next: KILLED + INTERRUPTED if a retry will continue it, else FAILED."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=retries)

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if retries > 0:
            retry(study, trial)
        retried = _successor(study, trial.number) is not None
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            return
        if retried:
            TrialRun(tracker.client, run_id).interrupted(f"trial {trial.number}'s worker stopped sending heartbeats")
        else:
            tracker.client.set_tag(run_id, STATE_TAG, "FAIL")
            tracker.client.set_terminated(run_id, status="FAILED")

    return on_stale


def enqueue_retry(trial: optuna.Trial) -> int | None:
    """A WAITING copy of this running trial, as the heartbeat retry makes one (no retry limit: being
    interrupted is not the trial's fault); returns its number."""
    study = trial.study
    frozen = study._storage.get_trial(trial._trial_id)  # noqa: SLF001 - the callback needs a FrozenTrial
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, frozen)
    return _successor(study, trial.number)


def _successor(study: optuna.Study, number: int) -> int | None:
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.system_attrs.get("retry_history", [None])[-1] == number:
            return t.number
    return None


@dataclass
class Continuation:
    """Where a trial starts: its run, its seed's trial number, and a loaded last.pt if any."""

    run: TrialRun
    origin: int  # the original trial's number: the seed is config.seed + origin
    new_run: bool = True
    state: dict[str, Any] | None = None
    logged_steps: frozenset[int] = frozenset()  # epochs the run already has metrics for

    @property
    def resumed_epoch(self) -> int:
        return 0 if self.state is None else completed_epochs(self.state)


def start_or_continue(trial: optuna.Trial, tracker: StudyTracker, parent_run_id: str,
                      params: Callable[[int], dict[str, Any]], directory: Path) -> Continuation:
    """A new run for a new trial; for a retry, its predecessor's run reopened and its last.pt loaded."""
    history = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("retry_history", [])  # noqa: SLF001
    run_id = trial.user_attrs.get("mlflow_run_id")
    origin = history[0] if history else trial.number
    if not history or not run_id:  # a new trial (or a retry of one that died before its run existed)
        return Continuation(tracker.start_trial(parent_run_id, trial.number, params(origin)), origin)
    previous = history[-1]
    run = tracker.reopen_trial(run_id, trial.number)
    path = tracker.download_last_checkpoint(run_id, directory)
    state = load_checkpoint(path) if path is not None else None
    cont = Continuation(run, origin, False, state, frozenset(run.logged_steps("val_loss")))
    trial.set_user_attr(RESUMED_FROM_ATTR, previous)
    trial.set_user_attr(RESUMED_AT_ATTR, cont.resumed_epoch)
    run.set_tags({"ee_search.resumed_from_trial": previous, "ee_search.resumed_at_epoch": cont.resumed_epoch})
    if state is not None:
        # Epochs saved in last.pt but not logged (killed between the two): log them now, so the
        # run's history has no gap; the ones it has are never logged twice.
        for epoch, metrics in enumerate(saved_history(state), start=1):
            if epoch not in cont.logged_steps:
                run.log_metrics(metrics, step=epoch)
    logger.info("trial %d continues trial %d from epoch %d", trial.number, previous, cont.resumed_epoch)
    return cont


class StopRequest:
    """SIGTERM / SIGINT set a flag that every running trainer checks at its next batch boundary
    (train.InterruptWhen); nothing is raised inside a signal handler mid-step. A second signal exits
    at once: Ctrl-C raises KeyboardInterrupt, SIGTERM gets its default action."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def reason(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.signum = signum
        logger.warning("%s: stopping at the next batch boundary and saving (again to exit at once)",
                       signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only; an embedding caller handles them
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class StudyInterrupted(Exception):
    """The run stopped on a signal; its trials were saved and enqueued to be resumed."""

    def __init__(self, signum: int, trials: list[int]) -> None:
        self.signum = signum
        self.trials = trials
        super().__init__(f"stopped by {signal.Signals(signum).name}; trial(s) {trials} will be resumed")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
