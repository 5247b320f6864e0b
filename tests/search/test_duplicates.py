"""A configuration is trained once: a later trial with the same values ends PRUNED, untrained.

Oracle: the study's own trials. Every duplicate must point at an earlier trial whose params are
equal, and the trials that ran (not duplicates) must have pairwise different params."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from ee_search.records import TrialRecord
from ee_search.search.duplicates import DUPLICATE, skip_if_duplicate
from tests.conftest import mlflow_client, run_study, tiny_variant


def _grid_objective(calls: list[dict]):
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_categorical("a", [1, 2])
        trial.suggest_categorical("b", ["x", "y"])
        skip_if_duplicate(trial)
        calls.append(dict(trial.params))
        return float(trial.params["a"]) + (trial.params["b"] == "y")

    return objective


def test_a_sampler_that_repeats_itself_trains_each_configuration_once():
    calls: list[dict] = []
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2), direction="maximize")
    study.optimize(_grid_objective(calls), n_trials=30)
    by_number = {t.number: t for t in study.trials}
    duplicates = [t for t in study.trials if TrialRecord.read(t).duplicate_of is not None]
    assert duplicates, "a 4-point grid over 30 trials must repeat itself"
    for t in duplicates:
        record = TrialRecord.read(t)
        twin = by_number[record.duplicate_of]
        assert t.state == TrialState.PRUNED and record.stop_reason == DUPLICATE and record.epochs_trained == 0
        assert twin.number < t.number and twin.params == t.params
        assert TrialRecord.read(twin).duplicate_of is None  # the earliest one, the one that trained
    trained = [tuple(sorted(c.items())) for c in calls]
    assert len(trained) == len(set(trained)) == 30 - len(duplicates) <= 4


def test_a_running_trial_counts_as_a_twin_but_a_failed_one_does_not():
    study = optuna.create_study()
    space = {"a": optuna.distributions.CategoricalDistribution([1, 2])}

    def ask(value):
        study.enqueue_trial({"a": value})
        return study.ask(space)

    running = ask(1)
    failed = ask(2)
    study.tell(failed, state=TrialState.FAIL)
    with pytest.raises(optuna.TrialPruned, match=f"same values as trial {running.number}"):
        skip_if_duplicate(ask(1))
    skip_if_duplicate(ask(2))  # its only twin failed: it trains (no exception)


def test_a_study_with_nothing_to_search_repeats_its_recipe_without_duplicates():
    """An empty search space: every trial is the same recipe on its own seed, on purpose."""
    study = optuna.create_study()
    for _ in range(3):
        trial = study.ask()
        skip_if_duplicate(trial)  # no values drawn: never a duplicate (no exception)
        study.tell(trial, 0.5)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


@pytest.mark.parametrize("skip", [True, False])
def test_a_live_study_on_a_one_point_grid(workdir, skip):
    """Three trials of a space with one configuration: trained once (one MLflow run), or three times
    with `search.skip_duplicates: false`."""
    study_file = tiny_variant(workdir, **{"search.space": {"train.lr": {"type": "categorical", "choices": [0.05]}},
                                          "search.skip_duplicates": skip, "train.max_epochs": 1})
    study = run_study(study_file, n_trials=3)
    states = [t.state for t in study.trials]
    runs = mlflow_client().search_runs([mlflow_client().get_experiment_by_name(study.study_name).experiment_id])
    trial_runs = [r for r in runs if "trial" in r.data.tags.get("mlflow.runName", "")]
    if skip:
        assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
        assert [TrialRecord.read(t).duplicate_of for t in study.trials] == [None, 0, 0]
        assert len(trial_runs) == 1
    else:
        assert states == [TrialState.COMPLETE] * 3
        assert len(trial_runs) == 3
