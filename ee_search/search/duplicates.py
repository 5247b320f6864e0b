"""Never train one configuration twice (docs/design.md §8, "Duplicates").

TPE proposes the same point of a categorical or stepped space again once it believes in it: on the
quick start's grid, a third of a replayed search's epochs went to configurations it had already
trained (benchmarks/search_table.py). Optuna's answer (optuna#2021) is a check in the objective, which
is what this is: a trial whose sampled values equal an earlier trial's, finished or still running, ends
PRUNED at once, untrained, with `duplicate_of` in its record and no MLflow run. PRUNED, not a copy of
the twin's values: TPE then counts the point among its poor ones, so it moves on instead of proposing
it forever. The twin is an *earlier* trial, so of two workers that draw the same values at once, one
trains. A duplicate counts toward `search.n_trials`, so a study on an exhausted grid still ends.
A study with nothing to search (no values drawn) repeats one recipe over trial seeds on purpose:
there, no trial is a duplicate.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from ee_search.records import TrialRecord

TWIN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
DUPLICATE = "duplicate"  # the trial's stop_reason


def earlier_twin(trial: optuna.Trial) -> FrozenTrial | None:
    """The earliest trial of the study, before this one, that drew exactly this trial's values."""
    params = trial.params
    if not params:  # an empty search space: the trials are seed repeats, wanted
        return None
    for other in trial.study.get_trials(deepcopy=False, states=TWIN_STATES):
        if other.number < trial.number and other.params == params:
            return other
    return None


def skip_if_duplicate(trial: optuna.Trial) -> None:
    """Raise `optuna.TrialPruned` (recording the twin) if this trial's values were drawn before."""
    twin = earlier_twin(trial)
    if twin is None:
        return
    TrialRecord(duplicate_of=twin.number, stop_reason=DUPLICATE, epochs_trained=0).write(trial)
    raise optuna.TrialPruned(f"same values as trial {twin.number}: not trained again")
