"""Turning a pydantic ValidationError into the one line a user reads: file, field, what to fix."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ee_search.config.dotted import walk_schema
from ee_search.errors import UserInputError, quote
from ee_search.metrics import MONITOR_HINT

_DIMENSION_TAGS = {"float", "int", "categorical"}
# Regex patterns mean nothing to a user; say what is allowed instead.
_PATTERN_HINTS = {
    "name": "use letters, digits, '_', '-' and '.', starting with a letter or digit (no spaces)",
    "monitor": MONITOR_HINT,
    "device": "use auto, cpu, cuda or cuda:<index>",
}


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if i >= 1 and loc[i - 1 : i] and _is_space_key(loc, i - 1) and part in _DIMENSION_TAGS:
            continue  # pydantic's discriminator tag, not a key the user wrote
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in str(part):
            out += f"[{str(part)!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _is_space_key(loc: tuple[Any, ...], i: int) -> bool:
    return i >= 2 and loc[i - 2 : i] == ("search", "space")


def to_user_error(exc: ValidationError, source: str) -> UserInputError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return UserInputError(source, format_loc(loc), f"unknown key{hint}")
    if kind == "missing":
        return UserInputError(source, format_loc(loc), "required field is missing")
    if kind == "string_pattern_mismatch" and loc and loc[-1] in _PATTERN_HINTS:
        return UserInputError(source, format_loc(loc), f"{_PATTERN_HINTS[loc[-1]]} (got {quote(err.get('input'))})")
    if kind == "too_short" and loc and loc[-1] == "choices":
        return UserInputError(source, format_loc(loc), "the choice list is empty: give at least one choice")
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    if isinstance(given, (str, int, float, bool)) and kind not in ("value_error",):
        message += f" (got {quote(given)})"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        message = "type must be one of float, int, categorical"
    return UserInputError(source, format_loc(loc), message)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the schema node at `loc`, for 'unknown key' messages."""
    try:
        model, _ = walk_schema(loc)
    except ValueError:
        return []
    return sorted(model.model_fields) if model is not None else []
