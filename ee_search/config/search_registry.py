"""The sampler and pruner registries: the names `search.sampler.type` and `search.pruner.type`
accept, what each is, and where it is built.

Like `models/registry.py`, builders are named as "module:attribute" and imported only when a study
is built (the config layer knows neither Optuna nor the search layer). Adding a sampler or a pruner
is one entry here, plus a builder function for a pruner (`search/pruners.py`); the schema's choices
are these tables' keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplerSpec:
    sampler: str  # "module:Class" of an Optuna sampler, built with a per-trial seed (search/samplers.py)
    defaults: dict[str, Any] = field(default_factory=dict)  # ours; search.sampler.options overrides them


SAMPLERS: dict[str, SamplerSpec] = {
    # multivariate + group: TPE models the joint space and handles `when` (conditional) params.
    "tpe": SamplerSpec("optuna.samplers:TPESampler", {"multivariate": True, "group": True}),
    "nsga2": SamplerSpec("optuna.samplers:NSGAIISampler"),
    "random": SamplerSpec("optuna.samplers:RandomSampler"),
    "gp": SamplerSpec("optuna.samplers:GPSampler"),
}


@dataclass(frozen=True)
class PrunerSpec:
    builder: str  # "module:function" (PrunerConfig, max_epochs) -> the pruner the Optuna study holds
    # One of Optuna's own pruners: it reads trial.report, which Optuna allows in single-objective
    # studies only. The others leave the Optuna study a NopPruner (early_stopping prunes by itself).
    optuna_own: bool


_PRUNERS = "ee_search.search.pruners"

PRUNERS: dict[str, PrunerSpec] = {
    "early_stopping": PrunerSpec(f"{_PRUNERS}:no_optuna_pruner", optuna_own=False),
    "none": PrunerSpec(f"{_PRUNERS}:no_optuna_pruner", optuna_own=False),
    "median": PrunerSpec(f"{_PRUNERS}:median", optuna_own=True),
    "percentile": PrunerSpec(f"{_PRUNERS}:percentile", optuna_own=True),
    "hyperband": PrunerSpec(f"{_PRUNERS}:hyperband", optuna_own=True),
    "successive_halving": PrunerSpec(f"{_PRUNERS}:successive_halving", optuna_own=True),
    "patient": PrunerSpec(f"{_PRUNERS}:patient", optuna_own=True),
    "wilcoxon": PrunerSpec(f"{_PRUNERS}:wilcoxon", optuna_own=True),
    "threshold": PrunerSpec(f"{_PRUNERS}:threshold", optuna_own=True),
}

OPTUNA_PRUNERS: tuple[str, ...] = tuple(name for name, spec in PRUNERS.items() if spec.optuna_own)
