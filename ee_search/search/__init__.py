"""The search: the space (space.py), the study and its run loop (study.py), one trial as a recipe
(objective.py) and its one writer to both stores (recorder.py), the trial budget (budget.py), retries
of stopped trials (retry.py), signals (signals.py) and the early-stopping pruner (pruning.py)."""

from ee_search.records import FINAL_METRICS
from ee_search.search.budget import FINISHED_STATES
from ee_search.search.events import StudyEvents
from ee_search.search.objective import TrialObjective
from ee_search.search.pruning import (
    EarlyStoppingPruner,
    PruneDecision,
    PruningCallback,
    best_so_far,
    decide_prune,
)
from ee_search.search.pruners import build_optuna_pruner
from ee_search.search.samplers import build_sampler
from ee_search.search.space import SearchDimension, dimensions, sample, values_from_params
from ee_search.search.study import (
    RunSummary,
    check_search_components,
    load_existing,
    load_or_create,
    open_storage,
    run_study,
)

__all__ = [
    "FINAL_METRICS",
    "FINISHED_STATES",
    "EarlyStoppingPruner",
    "TrialObjective",
    "PruneDecision",
    "PruningCallback",
    "RunSummary",
    "SearchDimension",
    "StudyEvents",
    "best_so_far",
    "build_optuna_pruner",
    "build_sampler",
    "check_search_components",
    "decide_prune",
    "dimensions",
    "load_existing",
    "load_or_create",
    "open_storage",
    "run_study",
    "sample",
    "values_from_params",
]
