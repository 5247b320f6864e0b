"""`search.space` -> `trial.suggest_*` calls -> dotted-path overrides.

Each dimension names a field of the study file by its dotted path. The space was checked when the
file was loaded (`config.load.check_space`); here it is only sampled, and a finished trial's params
are turned back into the values they stand for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ee_search.config import (
    CategoricalDimension,
    FloatDimension,
    IntDimension,
    StudyConfig,
    config_value,
    sampling_order,
)

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class SearchDimension:
    path: str
    spec: FloatDimension | IntDimension | CategoricalDimension
    n_items: int | None = None  # per_item: how many values (the base list's length)

    def param_names(self) -> list[str]:
        if self.n_items is None:
            return [self.path]
        # MLflow param keys allow letters, digits and "_-. /", so no brackets.
        return [f"{self.path}.{i}" for i in range(self.n_items)]

    def is_active(self, values: dict[str, Any], base: StudyConfig) -> bool:
        for path, allowed in (self.spec.when or {}).items():
            current = values[path] if path in values else config_value(base, path)
            if current not in allowed:
                return False
        return True

    def suggest(self, trial: optuna.trial.Trial) -> Any:
        drawn = [_suggest_one(trial, name, self.spec) for name in self.param_names()]
        return drawn if self.n_items is not None else drawn[0]

    def describe(self) -> dict[str, str]:
        spec = self.spec
        if isinstance(spec, CategoricalDimension):
            values = ", ".join(map(str, spec.choices))
        else:
            values = f"[{spec.low}, {spec.high}]" + (" log" if spec.log else "")
            if spec.step not in (None, 1) or (isinstance(spec, FloatDimension) and spec.step):
                values += f" step {spec.step}"
        when = "; ".join(f"{p} in {v}" for p, v in (spec.when or {}).items())
        return {
            "path": self.path,
            "type": spec.type,
            "values": values,
            "per_item": f"x{self.n_items}" if self.n_items is not None else "",
            "when": when,
        }


def _suggest_one(trial: optuna.trial.Trial, name: str, spec: Any) -> Any:
    if isinstance(spec, FloatDimension):
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntDimension):
        return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    return trial.suggest_categorical(name, spec.choices)


def dimensions(config: StudyConfig) -> list[SearchDimension]:
    """The space in sampling order: file order, except that a dimension comes after those its `when`
    depends on (a conditional can only be decided once its controlling value is known)."""
    specs = config.search.space
    out = []
    for path in sampling_order(specs):
        spec = specs[path]
        n_items = len(config_value(config, path)) if spec.per_item else None
        out.append(SearchDimension(path, spec, n_items))
    return out


def sample(trial: optuna.trial.Trial, config: StudyConfig) -> dict[str, Any]:
    """Ask the trial for every active dimension; returns {dotted path: value}."""
    values: dict[str, Any] = {}
    for dim in dimensions(config):
        if dim.is_active(values, config):
            values[dim.path] = dim.suggest(trial)
    return values


def values_from_params(config: StudyConfig, params: dict[str, Any]) -> dict[str, Any]:
    """Invert `sample`: a finished trial's Optuna params back to {dotted path: value}."""
    values: dict[str, Any] = {}
    for dim in dimensions(config):
        names = dim.param_names()
        if all(name in params for name in names):
            drawn = [params[name] for name in names]
            values[dim.path] = drawn if dim.n_items is not None else drawn[0]
    return values
