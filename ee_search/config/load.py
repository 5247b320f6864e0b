"""Loading a study file: read it, apply `--set` overrides, validate it against the schema, and check
its search space, so that every mistake fails here with one line and nothing has been created yet.

The raw text is kept for provenance (it goes to MLflow as the study's `config/study.yaml`). A trial's
configuration is the base file with the sampled values written in at their dotted paths, validated
again by the same schema, so every field can be searched.

The space is checked against the schema itself: a dimension's path must name a leaf field,
`per_item` needs a list, `when` must name a field and reachable values, and every bound and choice
must be a value the field accepts (so a typo in a categorical model name fails at `validate`, not in
trial 17).
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ee_search.config.dotted import config_value, get_path, parse_override, set_path, walk_schema
from ee_search.config.messages import to_user_error
from ee_search.config.safe_yaml import MAX_YAML_BYTES, check_size, parse_yaml
from ee_search.config.schema import StudyConfig
from ee_search.config.search_schema import CategoricalDimension, Dimension
from ee_search.errors import QUOTE_CHARS, FieldError, UserInputError, cut, quote

# Searching these would change what the study *is* (its name, its storage), not a trial's config.
SEARCHABLE_ROOTS = ("data", "model", "train", "exits", "seed")
# Every trial is judged on the same validation split, drawn from the study's seed and data config:
# searching them would compare trials on different data. Augmentation is a training choice.
FIXED_FOR_THE_SPLIT = "seed and data.* (apart from data.augment.*) decide the validation split every trial is " \
    "judged on, so they cannot be searched: remove this dimension, or run one study per value"


class LoadedStudy(BaseModel):
    """A validated study file plus what produced it: the path, the raw text and the raw mapping after
    overrides (the base every trial writes its sampled values into)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    path: str
    raw_text: str
    raw: dict
    config: StudyConfig

    def with_values(self, values: dict[str, Any]) -> StudyConfig:
        return validate_raw(self.raw_with(values), self.path)

    def overridden(self, values: dict[str, Any]) -> LoadedStudy:
        """This study with `values` written in at their dotted paths, validated again, without reading
        or parsing the file again (it may have been a pipe, and is parsed once per command)."""
        raw = self.raw_with(values)
        return self.model_copy(update={"raw": raw, "config": validate_raw(raw, self.path)})

    def raw_with(self, values: dict[str, Any]) -> dict:
        raw = copy.deepcopy(self.raw)
        for path, value in values.items():
            try:
                set_path(raw, path, value)
            except FieldError as exc:
                raise UserInputError(self.path, exc.field, exc.message) from None
        return raw


def validate_raw(raw: Any, source: str) -> StudyConfig:
    if not isinstance(raw, dict):
        raise UserInputError(source, None, "the study file must be a YAML mapping of fields")
    try:
        return StudyConfig.model_validate(raw)
    except FieldError as exc:
        raise UserInputError(source, exc.field, exc.message) from None
    except ValidationError as exc:
        raise to_user_error(exc, source) from None


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[StudyConfig, str]:
    """The study file of docs/design.md §2: the validated config and the file's raw text."""
    loaded = load_study_file(path, overrides)
    return loaded.config, loaded.raw_text


def load_study_file(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedStudy:
    """Read, parse, override and validate: the file is read and parsed once (it may be a pipe)."""
    source = str(path)
    raw_text = read_study_text(path)
    try:
        raw = parse_yaml(raw_text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = cut(getattr(exc, "problem", None) or "invalid YAML", 2 * QUOTE_CHARS)
        raise UserInputError(source, line, f"{problem}: fix the YAML syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserInputError(source, None, "the study file must be a YAML mapping of fields")
    for text in overrides:
        key, value = parse_override(text)
        try:
            set_path(raw, key, value)
        except FieldError as exc:
            raise UserInputError("--set", exc.field, exc.message) from None
    config = validate_raw(raw, source)
    check_space(config, raw, source)
    return LoadedStudy(path=source, raw_text=raw_text, raw=raw, config=config)


def read_study_text(path: str | Path) -> str:
    """The file's text, refused past MAX_YAML_BYTES before it is read whole: by its size when it is a
    regular file, by reading one byte more than the limit when it is not (a pipe, a device)."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                check_size(os.fstat(f.fileno()).st_size, source, None)
            data = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise UserInputError(source, None, "no such file: check the path") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise UserInputError(source, None, f"cannot read the file ({type(exc).__name__})") from None
    check_size(len(data), source, None, exact=False)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserInputError(source, None, "cannot read the file (UnicodeDecodeError): save it as UTF-8") from None


# ---------------------------------------------------------------------------------------- space
def sampling_order(space: dict[str, Dimension]) -> list[str]:
    """The space's paths in sampling order: file order, except that a dimension comes after those its
    `when` depends on (a conditional can only be decided once its controlling value is known)."""
    pending = list(space)
    ordered: list[str] = []
    while pending:
        ready = [p for p in pending if all(d in ordered or d not in space for d in (space[p].when or {}))]
        if not ready:
            raise UserInputError("search.space", None, f"'when' conditions form a cycle among {pending}")
        ordered.append(ready[0])
        pending.remove(ready[0])
    return ordered


def field_annotation(path: str) -> Any:
    """The schema annotation of a searchable leaf field; ValueError says what is wrong with `path`."""
    keys = path.split(".")
    if keys[0] not in SEARCHABLE_ROOTS:
        raise ValueError(f"only fields under {', '.join(SEARCHABLE_ROOTS)} can be searched")
    model, annotation = walk_schema(keys)
    if model is not None:
        raise ValueError(f"names a group of fields; search one of its fields: {', '.join(model.model_fields)}")
    return annotation


def check_space(config: StudyConfig, raw: dict, source: str) -> None:
    """Reject a space that could only fail later; see the module docstring."""
    for path, spec in config.search.space.items():
        field = f"search.space[{path!r}]"
        if path == "seed" or (path.startswith("data.") and not path.startswith("data.augment.")):
            raise UserInputError(source, field, FIXED_FOR_THE_SPLIT)
        try:
            annotation = field_annotation(path)
        except ValueError as exc:
            raise UserInputError(source, field, str(exc)) from None
        base = get_path(raw, path, default=config_value(config, path))
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
                    source, field, f"{quote(value)} is not a valid value here: {exc.field}: {exc.message}"
                ) from None
    sampling_order(config.search.space)  # raises on a cycle


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
        else None if spec is not None else [config_value(config, controller)]
    )
    if reachable is not None and not any(v in reachable for v in allowed):
        raise UserInputError(
            source, where, f"{controller} never takes any of {quote(allowed)} (it can be {quote(reachable)}), "
            "so this dimension would never be sampled",
        )
