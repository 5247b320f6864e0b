"""Dotted paths into a raw (unvalidated) study mapping: `train.early_stopping.patience`, and the
`--set PATH=VALUE` overrides that write through them (the value parsed as YAML)."""

from __future__ import annotations

from typing import Any

import yaml

from ee_search.errors import FieldError, UserInputError

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
    """`--set train.lr=0.1`: the value is YAML, so lists, mappings and null work too."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise UserInputError("--set", text, "expected PATH=VALUE, e.g. --set train.max_epochs=3")
    try:
        return path.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UserInputError("--set", path.strip(), f"value {value!r} is {problem}") from None
