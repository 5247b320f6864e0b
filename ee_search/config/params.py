"""The study file as MLflow params: every resolved value by dotted name (docs/design.md §5)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ee_search.config.schema import StudyConfig
from ee_search.config.urls import redact

_PARAM_VALUE_LIMIT = 6000  # MLflow's cap on one param value


def config_params(config: StudyConfig, **extra: Any) -> dict[str, Any]:
    """Every resolved config value by dotted name (the parent run's and each trial's params).

    The search space is not a value: its dimensions' paths are listed, and the space itself is in
    the study run's config/study.yaml. Loss weights are logged resolved, also when left to the default."""
    dumped = config.model_dump(mode="json")
    space = dumped["search"].pop("space")
    params = flatten(dumped)
    params["search.space.dimensions"] = sorted(space)
    params["model.exit_loss_weights"] = config.loss_weights
    return params | extra


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def param_value(value: Any) -> str:
    """A param as MLflow stores it: text, passwords redacted, within MLflow's length cap."""
    text = value if isinstance(value, str) else json.dumps(value)
    return redact(text)[:_PARAM_VALUE_LIMIT]
