"""The Optuna sampler a study's `search.sampler` names (registry: `config/search_registry.py`).

A seeded sampler draws trial n's values from a sampler seeded with (seed, n) (docs/design.md §8,
"Seeds"). A sampler seeded once per process replays its stream in every process: a resumed run
drew trial 0's values again for its first new trial, and two workers started by hand from one study
file drew the same values side by side, so they trained the same configuration twice (or, with
`search.skip_duplicates`, threw half the trials away). Keyed by the trial number, which the storage
hands out once, every trial gets its own draws whichever process makes them, and a study run by one
process or several draws the same values for the same history. Optuna has no per-trial seed (its
`reseed_rng` takes entropy from the OS), hence this wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ee_search.config import SamplerConfig
from ee_search.config.search_registry import SAMPLERS


def build_sampler(cfg: SamplerConfig) -> BaseSampler:
    """Raises TypeError/ValueError on bad options (checked at load time)."""
    spec = SAMPLERS[cfg.type]
    module, name = spec.sampler.split(":")
    sampler_class = getattr(import_module(module), name)

    def make(seed: int | None) -> BaseSampler:
        return sampler_class(**{"seed": seed, **spec.defaults, **cfg.options})

    if cfg.seed is None:  # each process seeds itself from the OS: no two draw alike
        return make(None)
    return TrialSeededSampler(make, cfg.seed)


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial `number`'s draws: (seed, number) mixed by numpy's SeedSequence, so that
    seed s's trial n+1 does not draw what seed s+1's trial n draws (as `seed + number` would)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates each trial to a sampler built for it with `trial_seed(seed, trial.number)`.

    The samplers keep their history in the study's storage, so a fresh one per trial proposes what a
    long-lived one would; what is lost is in-memory warm starts (GPSampler's kernel cache)."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self.make, self.seed = make, seed
        self.probe = make(seed)  # checks the options now; answers before any trial exists
        self.by_trial: dict[int, BaseSampler] = {}

    def for_trial(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self.by_trial:
            self.by_trial[trial.number] = self.make(trial_seed(self.seed, trial.number))
        return self.by_trial[trial.number]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.for_trial(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.for_trial(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.for_trial(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.for_trial(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        try:
            self.for_trial(trial).after_trial(study, trial, state, values)
        finally:
            self.by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Optuna calls this for `n_jobs > 1`; the draws are keyed by trial number, so no change."""

    def __repr__(self) -> str:
        return f"{type(self.probe).__name__}(seed={self.seed}, per trial)"
