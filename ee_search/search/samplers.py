"""The Optuna sampler a study's `search.sampler` names (registry: `config/search_registry.py`)."""

from __future__ import annotations

from importlib import import_module

import optuna

from ee_search.config import SamplerConfig
from ee_search.config.search_registry import SAMPLERS


def build_sampler(cfg: SamplerConfig) -> optuna.samplers.BaseSampler:
    """Raises TypeError/ValueError on bad options (checked at load time)."""
    spec = SAMPLERS[cfg.type]
    module, name = spec.sampler.split(":")
    return getattr(import_module(module), name)(**{"seed": cfg.seed, **spec.defaults, **cfg.options})
