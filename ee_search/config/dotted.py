"""Dotted paths (`train.early_stopping.patience`) into the three things a study is: the schema
(`walk_schema`, the one walker over it), a raw unvalidated mapping (`get_path`, `set_path`, and the
`--set PATH=VALUE` overrides that write through them, the value parsed as YAML), and a validated
config (`config_value`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from ee_search.config.schema import StudyConfig
from ee_search.config.search_schema import (
    CategoricalDimension,
    Dimension,
    FloatDimension,
    IntDimension,
    SearchConfig,
)
from ee_search.config.safe_yaml import parse_yaml
from ee_search.errors import QUOTE_CHARS, FieldError, UserInputError, cut, quote

# Fields whose values are free-form mappings: in a dotted path, everything after them is one key
# (search.space.train.lr names the dimension "train.lr", not a field "lr" of "train").
_MAPPING_FIELDS = {("search", "space"), ("search", "sampler", "options"), ("search", "pruner", "options")}


def split_path(path: str) -> list[str]:
    tokens = path.split(".")
    for i in range(len(tokens)):
        if tuple(tokens[: i + 1]) in _MAPPING_FIELDS and i + 1 < len(tokens):
            return tokens[: i + 1] + [".".join(tokens[i + 1 :])]
    return tokens


def set_path(raw: dict, path: str, value: Any) -> None:
    """Write `value` at a dotted path of a raw (unvalidated) config, creating mappings on the way."""
    keys = split_path(path)
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise FieldError(path, f"'{key}' holds a value, not a mapping, so it has no field '{keys[-1]}'")
        node = child
    node[keys[-1]] = value


def get_path(raw: dict, path: str, default: Any = None) -> Any:
    node: Any = raw
    for key in split_path(path):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """`--set train.lr=0.1`: the value is YAML, so lists, mappings and null work too (within the limits of
    `safe_yaml`, as the file is)."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise UserInputError("--set", text, "expected PATH=VALUE, e.g. --set train.max_epochs=3")
    try:
        return path.strip(), parse_yaml(value, "--set", path.strip())
    except yaml.YAMLError as exc:
        problem = cut(getattr(exc, "problem", None) or "not valid YAML", 2 * QUOTE_CHARS)
        raise UserInputError("--set", path.strip(), f"value {quote(value)} is {problem}") from None


def config_value(config: StudyConfig, path: str) -> Any:
    """The validated value at a dotted path of a config (no search.space keys: those hold dots)."""
    node: Any = config
    for key in path.split("."):
        node = getattr(node, key)
    return node


_DIMENSION_CLASSES = {"float": FloatDimension, "int": IntDimension, "categorical": CategoricalDimension}


def walk_schema(keys: Sequence[Any]) -> tuple[type[BaseModel] | None, Any]:
    """Follow `keys` (a dotted path's parts, or a pydantic error location) down the schema from
    `StudyConfig`. Returns the model the keys end at (None when they end at a plain value) and the
    last field's annotation; ValueError says where the path stops naming anything.

    Inside `search.space` the next key is a dimension's name and the one after it pydantic's
    discriminator tag (float, int, categorical), which picks the dimension's class."""
    model: Any = StudyConfig
    annotation: Any = None
    i = 0
    while i < len(keys):
        key = keys[i]
        if model is None:
            raise ValueError(f"'{'.'.join(map(str, keys[:i]))}' is a value, so it has no field '{key}'")
        if model is SearchConfig and key == "space" and i + 1 < len(keys):
            tag = keys[i + 2] if i + 2 < len(keys) else None
            model, annotation = _DIMENSION_CLASSES.get(tag, CategoricalDimension), Dimension
            i += 3
            continue
        field = model.model_fields.get(key)
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            where = ".".join(map(str, keys[:i])) or "the study file"
            raise ValueError(f"names nothing: {where} has no field '{key}' (fields: {known})")
        annotation = field.annotation
        model = model_of(annotation)
        i += 1
    return model, annotation


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (`X`, `X | None`, `list[X]`...), or None for a value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = model_of(arg)
        if found is not None:
            return found
    return None
