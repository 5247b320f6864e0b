"""`search.space` -> `trial.suggest_*` calls -> dotted-path overrides.

Each dimension names a field of the study file by its dotted path. Checks happen once, at load time,
against the schema itself: the path must name a leaf field, `per_item` needs a list, `when` must name a
field and reachable values, and every bound and choice must be a value the field accepts (so a typo in
a categorical model name fails at `validate`, not in trial 17).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ee_search.config import (
    CategoricalDimension,
    FloatDimension,
    IntDimension,
    StudyConfig,
    get_path,
    set_path,
    validate_raw,
)
from ee_search.config_errors import model_of
from ee_search.errors import UserInputError

if TYPE_CHECKING:
    import optuna

# Searching these would change what the study *is* (its name, its storage), not a trial's config.
_SEARCHABLE_ROOTS = ("data", "model", "train", "exits", "seed")


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
            current = values[path] if path in values else _config_value(base, path)
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


def _config_value(config: StudyConfig, path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        node = getattr(node, key)
    return node


def field_annotation(path: str) -> Any:
    """The schema annotation of a searchable leaf field, or UserInputError-ready text of what's wrong."""
    keys = path.split(".")
    if keys[0] not in _SEARCHABLE_ROOTS:
        raise ValueError(f"only fields under {', '.join(_SEARCHABLE_ROOTS)} can be searched")
    model: Any = StudyConfig
    annotation: Any = None
    for i, key in enumerate(keys):
        if model is None:
            raise ValueError(f"'{'.'.join(keys[:i])}' is a value, so it has no field '{key}'")
        field = model.model_fields.get(key)
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            where = ".".join(keys[:i]) or "the study file"
            raise ValueError(f"names nothing: {where} has no field '{key}' (fields: {known})")
        annotation = field.annotation
        model = model_of(annotation) if _is_model(annotation) else None
    if model is not None:
        raise ValueError(f"names a group of fields; search one of its fields: {', '.join(model.model_fields)}")
    return annotation


def _is_model(annotation: Any) -> bool:
    found = model_of(annotation)
    return found is not None and issubclass(found, BaseModel)


def dimensions(config: StudyConfig) -> list[SearchDimension]:
    """The space in sampling order: file order, except that a dimension comes after those its `when`
    depends on (a conditional can only be decided once its controlling value is known)."""
    specs = config.search.space
    pending = list(specs)
    ordered: list[str] = []
    while pending:
        ready = [p for p in pending if all(d in ordered or d not in specs for d in (specs[p].when or {}))]
        if not ready:
            raise UserInputError("search.space", None, f"'when' conditions form a cycle among {pending}")
        ordered.append(ready[0])
        pending.remove(ready[0])
    out = []
    for path in ordered:
        spec = specs[path]
        n_items = len(_config_value(config, path)) if spec.per_item else None
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


def check_space(config: StudyConfig, raw: dict, source: str) -> None:
    """Reject a space that could only fail later; see the module docstring."""
    for path, spec in config.search.space.items():
        field = f"search.space[{path!r}]"
        try:
            annotation = field_annotation(path)
        except ValueError as exc:
            raise UserInputError(source, field, str(exc)) from None
        base = get_path(raw, path, default=_config_value(config, path))
        is_list = isinstance(base, list) or "list" in str(annotation)
        if spec.per_item and not is_list:
            raise UserInputError(source, field, f"per_item needs a list field, but {path} is not one")
        if spec.per_item and not base:
            raise UserInputError(source, field, f"per_item needs a non-empty {path} in the file")
        if is_list and not spec.per_item:
            raise UserInputError(
                source, field, f"{path} is a list: add per_item: true to sample one value per element"
            )
        for controller, allowed in (spec.when or {}).items():
            _check_when(config, source, field, controller, allowed)
        candidates = (
            list(spec.choices) if isinstance(spec, CategoricalDimension) else [spec.low, spec.high]
        )
        for value in candidates:
            trial_raw = copy.deepcopy(raw)
            set_path(trial_raw, path, [value] * len(base) if spec.per_item else value)
            try:
                validate_raw(trial_raw, source)
            except UserInputError as exc:
                raise UserInputError(
                    source, field, f"{value!r} is not a valid value here: {exc.field}: {exc.message}"
                ) from None
    dimensions(config)  # raises on a cycle


def _check_when(config: StudyConfig, source: str, field: str, controller: str, allowed: list) -> None:
    where = f"{field}.when"
    try:
        field_annotation(controller)
    except ValueError as exc:
        raise UserInputError(source, where, f"{controller}: {exc}") from None
    spec = config.search.space.get(controller)
    reachable = (
        list(spec.choices)
        if isinstance(spec, CategoricalDimension)
        else None if spec is not None else [_config_value(config, controller)]
    )
    if reachable is not None and not any(v in reachable for v in allowed):
        raise UserInputError(
            source, where, f"{controller} never takes any of {allowed} (it can be {reachable}), "
            "so this dimension would never be sampled",
        )
