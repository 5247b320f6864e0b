"""The size rules of docs/design.md §6: no module over 400 lines and no function over 60, in the
package and in the benchmarks, checked on the source itself so a long function cannot land unseen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted([*(ROOT / "ee_search").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])


def too_long(source: str) -> list[str]:
    """Every function (methods and nested ones included) longer than the limit, with its length."""
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_the_checker_sees_a_long_function_and_a_short_one():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert too_long(f"def long():\n{body}\n") == [f"long ({MAX_FUNCTION_LINES + 1} lines)"]
    assert too_long("def short():\n    return 1\n") == []


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_within_the_limits(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES} lines"
    assert too_long(source) == []
