"""The bounded YAML reader gives `yaml.safe_load`'s values for every file within its limits, and one
UserInputError (never a RecursionError, a ValueError or an expansion) for what lies past them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ee_search.config import load_study_file
from ee_search.config import safe_yaml
from ee_search.config.safe_yaml import MAX_DEPTH, MAX_VALUES, parse_yaml
from ee_search.errors import UserInputError
from tests.conftest import TINY_STUDY

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted([*ROOT.glob("studies/*.yaml"), *ROOT.glob("examples/*.yaml")]),
                         ids=lambda p: p.name)
def test_the_project_s_study_files_read_as_safe_load_reads_them(path):
    text = path.read_text()
    assert parse_yaml(text, str(path)) == yaml.safe_load(text)


def test_anchors_aliases_and_merge_keys_within_the_limits_keep_their_meaning():
    text = """\
base: &base {lr: 0.1, momentum: 0.9}
train: {<<: *base, lr: 0.2}
lists: [&x [1, 2], *x, *x]
when: &w [a, b]
again: *w
"""
    assert parse_yaml(text, "f.yaml") == yaml.safe_load(text)


def test_nesting_up_to_the_limit_is_read_and_one_level_more_is_refused():
    def nested(levels: int) -> str:  # `levels` collections, the document's root mapping included
        return "a: " + "[" * (levels - 1) + "]" * (levels - 1)

    assert parse_yaml(nested(MAX_DEPTH), "f.yaml") == yaml.safe_load(nested(MAX_DEPTH))
    with pytest.raises(UserInputError, match=f"a\\[0\\].*nested more than {MAX_DEPTH} levels deep") as caught:
        parse_yaml(nested(MAX_DEPTH + 1), "f.yaml")
    assert caught.value.source == "f.yaml"


def test_aliases_count_as_everything_they_repeat():
    # 10 strings, repeated 10 times at each of 5 levels: 10^5 strings from a few lines.
    lines = ["l0: &l0 [s, s, s, s, s, s, s, s, s, s]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 5)]
    with pytest.raises(UserInputError, match=f"more than {MAX_VALUES:,} values") as caught:
        parse_yaml("\n".join(lines), "f.yaml")
    assert caught.value.field.startswith("l4[")


def test_merge_keys_count_as_what_they_copy():
    # Each level merges the one before ten times: PyYAML copies 10^k key/value pairs at level k.
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(10)) + "}"]
    lines += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + "]}" for i in range(1, 9)]
    with pytest.raises(UserInputError, match="aliases") as caught:
        parse_yaml("\n".join(lines), "f.yaml")
    assert caught.value.field.startswith("m4")


def test_a_recursive_alias_is_refused():
    with pytest.raises(UserInputError, match="holds it") as caught:
        parse_yaml("model:\n  options: &o {self: *o}\n", "f.yaml")
    assert caught.value.field == "model.options.self"


def test_a_set_value_names_its_path_under_the_set_field():
    with pytest.raises(UserInputError) as caught:
        parse_yaml("[" * (MAX_DEPTH + 1), "--set", "model.options")
    assert str(caught.value).startswith("--set: model.options[0][0]")


@pytest.mark.parametrize("value", ["9" * 5000, "2001-13-45"], ids=["int_over_python_s_digit_limit", "impossible_date"])
def test_a_value_python_cannot_build_is_one_line_on_its_line(tmp_path, value):
    words = "line 2: cannot read the value"
    study = tmp_path / "study.yaml"
    study.write_text(TINY_STUDY.replace("seed: 3", f"seed: {value}"))
    with pytest.raises(UserInputError) as caught:
        load_study_file(study)
    line = str(caught.value)
    assert "\n" not in line and len(line) <= 300 + len(str(study)) and words in line, line


def test_a_stream_that_never_ends_is_refused_after_the_limit():
    """/dev/zero, or a pipe: no size to check beforehand, so reading stops one byte past the limit."""
    with pytest.raises(UserInputError, match="the file is over the 1,048,576-byte limit"):
        load_study_file("/dev/zero")


def test_too_many_values_without_aliases_are_refused_as_data(monkeypatch):
    monkeypatch.setattr(safe_yaml, "MAX_VALUES", 1000)  # the real limit takes seconds of parsing to reach
    with pytest.raises(UserInputError, match="holds more than 1,000 values .*not data") as caught:
        parse_yaml("model:\n  options:\n    table: [" + "0, " * 1000 + "]\n", "f.yaml")
    assert caught.value.field.startswith("model.options.table[")
