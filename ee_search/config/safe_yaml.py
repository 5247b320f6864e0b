"""Reading YAML a user wrote (the study file, a `--set` value) within bounds, so that a hostile or
mistaken file fails in one line instead of exhausting the memory or the stack.

`yaml.safe_load` builds only plain values, but nothing bounds how many: a 1 KB "billion laughs" file
of nested aliases is a handful of nodes that expand to 10^9 values as soon as anything walks the result
as a tree (pydantic's `model_dump`, `json.dumps`), and PyYAML composes nested collections by recursion,
so 20,000 levels end in a RecursionError. Neither PyYAML nor libyaml offers a limit, so `_BoundedLoader`
is `yaml.SafeLoader` (the same resolver and constructors, so the same values as `yaml.safe_load`) whose
composer counts as it goes: the depth of the node it is composing, and how many values the document
stands for, an alias counting as everything it repeats (merge keys `<<: *a` included). Both are checked
before the next event is parsed, so nothing past a limit is read, let alone expanded.
"""

from __future__ import annotations

from typing import Any

import yaml

from ee_search.errors import UserInputError, cut

MAX_YAML_BYTES = 1 << 20  # a study file, or one --set value: settings, never data
MAX_DEPTH = 64  # collections inside collections; a real study file needs fewer than 10
MAX_VALUES = 100_000  # scalars, lists and mappings, every alias expanded; a real study has hundreds


class _Refused(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._steps: list[str] = []  # the path from the document's root to the node being composed
        self._inside: list[int] = [0]  # per open collection: the values its finished children stand for
        self._sizes: dict[int, int] = {}  # id(node) -> the values a finished node stands for
        self._total = 0  # values composed so far, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self._steps.append(_step(index))
        line = self.peek_event().start_mark.line + 1
        if len(self._steps) > MAX_DEPTH:
            raise _Refused(self._path(), f"is nested more than {MAX_DEPTH} levels deep (line {line}): "
                                         "flatten it; settings need only a few levels")
        if self.check_event(yaml.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None and id(target) not in self._sizes:
                raise _Refused(self._path(), f"an alias refers to a list or mapping that holds it (line {line}), "
                                             "so the value would be infinite: remove the alias")
        self._inside.append(0)
        node = super().compose_node(parent, index)  # an alias: the node it names, already finished
        inside = self._inside.pop()
        size = self._sizes.setdefault(id(node), 1 + inside)
        self._inside[-1] += size
        self._total += size - inside  # an alias adds everything it repeats; any other node, itself
        if self._total > MAX_VALUES:
            raise _Refused(self._path(), self._too_many(line))
        self._steps.pop()
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # int('9' * 5000) and date(2001, 13, 1) raise ValueError, which yaml.safe_load lets out as a
        # traceback: make it a YAML error at the value's line.
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {cut(str(node.value))!r} ({cut(str(exc))})", node.start_mark
            ) from None

    def _too_many(self, line: int) -> str:
        if self._total > len(self._sizes):  # some value was counted more than once: an alias repeated it
            return (f"the file stands for more than {MAX_VALUES:,} values once its YAML aliases are expanded "
                    f"(line {line}): write the values out, or use fewer aliases")
        return (f"the file holds more than {MAX_VALUES:,} values (line {line}): a study holds settings, not data; "
                "remove what is not a setting")

    def _path(self) -> str:
        return "".join(s if s.startswith("[") or not i else f".{s}" for i, s in enumerate(self._steps[1:]))


def _step(index: Any) -> str:
    """A node's place in its parent: the key it is the value of, its position in a list, or '?' for a
    mapping's key itself (and for the document's root, which `_path` leaves out)."""
    if isinstance(index, int):
        return f"[{index}]"
    if isinstance(index, yaml.ScalarNode):
        return cut(str(index.value))
    return "?"


def check_size(n_bytes: int, source: str, field: str | None, exact: bool = True) -> None:
    """Refuse more than MAX_YAML_BYTES; `exact=False`: `n_bytes` is only what was read of a longer stream."""
    if n_bytes > MAX_YAML_BYTES:
        what = "the value" if field else "the file"
        size = f"is {n_bytes:,} bytes, over" if exact else "is over"
        raise UserInputError(source, field, f"{what} {size} the {MAX_YAML_BYTES:,}-byte limit: "
                                            "a study holds settings, not data; remove what is not a setting")


def parse_yaml(text: str, source: str, field: str | None = None) -> Any:
    """`yaml.safe_load(text)` within the limits above. A limit breached is a UserInputError naming the
    place (under `field`, for a `--set` value); a syntax error is left to the caller as yaml.YAMLError."""
    check_size(len(text.encode("utf-8")), source, field)
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        place = (field or "") + ("." if field and exc.path and not exc.path.startswith("[") else "") + exc.path
        raise UserInputError(source, place or None, exc.message) from None
    finally:
        loader.dispose()
