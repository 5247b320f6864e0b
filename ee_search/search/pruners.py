"""The pruner the Optuna study itself holds, for each `search.pruner.type` (registry:
`config/search_registry.py`): one of Optuna's, or NopPruner when pruning is ours (early_stopping, whose
callback is in pruning.py) or off. Each builder raises TypeError/ValueError on bad options, which load
time turns into one line.

Pruners see step = epoch (1-based), so "the first n epochs are safe" is n_warmup_steps = n + 1.
"""

from __future__ import annotations

from importlib import import_module

import optuna

from ee_search.config import PrunerConfig
from ee_search.config.search_registry import PRUNERS


def build_optuna_pruner(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    module, function = PRUNERS[cfg.type].builder.split(":")
    return getattr(import_module(module), function)(cfg, max_epochs)


def no_optuna_pruner(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    if cfg.options:
        raise ValueError(f"options are for Optuna's own pruners; '{cfg.type}' takes none")
    return optuna.pruners.NopPruner()


def median(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    defaults = {"n_startup_trials": cfg.n_startup_trials, "n_warmup_steps": _warmup(cfg)}
    return optuna.pruners.MedianPruner(**{**defaults, **cfg.options})


def percentile(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    defaults = {"percentile": cfg.percentile, "n_startup_trials": cfg.n_startup_trials,
                "n_warmup_steps": _warmup(cfg)}
    return optuna.pruners.PercentilePruner(**{**defaults, **cfg.options})


def hyperband(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(**{"min_resource": 1, "max_resource": max_epochs, **cfg.options})


def successive_halving(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(**cfg.options)


def patient(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    wrapped = optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=_warmup(cfg))
    defaults = {"wrapped_pruner": wrapped, "patience": cfg.min_stale_epochs}
    return optuna.pruners.PatientPruner(**{**defaults, **cfg.options})


def wilcoxon(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.WilcoxonPruner(**cfg.options)


def threshold(cfg: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    if not {"lower", "upper"} & set(cfg.options):
        raise ValueError("the threshold pruner needs options.lower or options.upper")
    return optuna.pruners.ThresholdPruner(**cfg.options)


def _warmup(cfg: PrunerConfig) -> int:
    return cfg.n_warmup_epochs + 1
