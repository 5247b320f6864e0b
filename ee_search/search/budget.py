"""The trial budget: which finished trials count toward `search.n_trials`, and how many to start.

`search.n_trials` is the number of trials the study should end up with, over every invocation and
worker. A FAIL that has a retry (docs/design.md §9) is not an outcome, so it does not count.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from ee_search.records import FINISHED_STATE_NAMES, RETRY_HISTORY

FINISHED_STATES = tuple(TrialState[name] for name in FINISHED_STATE_NAMES)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials that have a retry (waiting, running or done): their FAIL is not an outcome."""
    return {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY, [])}


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
