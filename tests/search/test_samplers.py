"""A seeded sampler draws per trial number (ee_search/search/samplers.py, docs/design.md §8 "Seeds"), on
real Optuna storages. Oracle: the same study run in one go by one sampler. A run resumed by a new
process, and two processes taking turns on one storage, draw exactly what one process draws; Optuna's
own once-per-process seeding (the old behaviour) draws trial 0's values again on resume."""

from __future__ import annotations

import math

import optuna
import pytest

from ee_search.config import SamplerConfig
from ee_search.search.samplers import TrialSeededSampler, build_sampler, trial_seed

SPACE = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
         "batch": optuna.distributions.CategoricalDistribution([32, 64, 128, 256]),
         "width": optuna.distributions.IntDistribution(4, 64)}


def objective_values(params: dict) -> list[float]:
    """A deterministic objective, so the history (and TPE's proposals) depend only on the draws."""
    return [math.log10(params["lr"]) ** 2 + params["width"] / 64, params["batch"] / 256]


def run_trials(study: optuna.Study, n: int) -> None:
    for _ in range(n):
        trial = study.ask(SPACE)
        values = objective_values(trial.params)
        study.tell(trial, values if len(study.directions) > 1 else values[0])


def drawn(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


def new_study(storage: str, sampler_type: str, seed: int | None, objectives: int, options: dict | None = None):
    """A fresh sampler on the named study, as a new process builds it from the study file."""
    sampler = build_sampler(SamplerConfig(type=sampler_type, seed=seed, options=options or {}))
    return optuna.create_study(study_name="s", storage=storage, sampler=sampler, load_if_exists=True,
                               directions=["minimize"] * objectives)


CASES = [("random", 1, {}), ("tpe", 1, {"n_startup_trials": 3}), ("tpe", 2, {"n_startup_trials": 3}),
         ("nsga2", 2, {"population_size": 4}), ("gp", 1, {"n_startup_trials": 3})]


@pytest.mark.parametrize(("sampler_type", "objectives", "options"), CASES)
def test_a_resumed_and_a_two_process_study_draw_what_one_process_draws(tmp_path, sampler_type, objectives, options):
    n = 7 if sampler_type != "gp" else 5
    one = new_study(f"sqlite:///{tmp_path}/one.db", sampler_type, 5, objectives, options)
    run_trials(one, n)

    resumed_url = f"sqlite:///{tmp_path}/resumed.db"
    run_trials(new_study(resumed_url, sampler_type, 5, objectives, options), 3)
    resumed = new_study(resumed_url, sampler_type, 5, objectives, options)  # the next run, a new process
    run_trials(resumed, n - 3)

    # two workers seeded alike, taking turns on one storage
    shared_url = f"sqlite:///{tmp_path}/shared.db"
    workers = [new_study(shared_url, sampler_type, 5, objectives, options) for _ in range(2)]
    for k in range(n):
        run_trials(workers[k % 2], 1)

    assert drawn(resumed) == drawn(one)
    assert drawn(workers[0]) == drawn(one)
    assert len({tuple(sorted(p.items())) for p in drawn(one)}) == n  # no trial draws another's values


def test_seeding_once_per_process_would_draw_trial_0_again_on_resume(tmp_path):
    """Why the wrapper exists: Optuna's RandomSampler seeded per process repeats itself on resume."""
    url = f"sqlite:///{tmp_path}/plain.db"
    for _ in range(2):
        study = optuna.create_study(study_name="s", storage=url, load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(seed=5))
        run_trials(study, 1)
    assert drawn(study)[0] == drawn(study)[1]
    seeded = f"sqlite:///{tmp_path}/seeded.db"
    for _ in range(2):
        run_trials(new_study(seeded, "random", 5, 1), 1)
    assert drawn(new_study(seeded, "random", 5, 1))[0] != drawn(new_study(seeded, "random", 5, 1))[1]


def test_trial_seeds_of_neighbouring_study_seeds_do_not_overlap():
    seeds = {trial_seed(s, n) for s in range(30) for n in range(50)}
    assert len(seeds) == 30 * 50
    assert trial_seed(0, 1) != trial_seed(1, 0) and trial_seed(3, 4) == trial_seed(3, 4)


def test_an_unseeded_sampler_is_optunas_own_and_bad_options_fail_at_build():
    assert type(build_sampler(SamplerConfig(type="tpe"))) is optuna.samplers.TPESampler
    seeded = build_sampler(SamplerConfig(type="tpe", seed=1, options={"n_startup_trials": 2}))
    assert isinstance(seeded, TrialSeededSampler) and "TPESampler" in repr(seeded)
    with pytest.raises(TypeError):
        build_sampler(SamplerConfig(type="tpe", seed=1, options={"no_such_option": 1}))
