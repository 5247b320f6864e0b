"""docs/design.md is the design the code cites: every "docs/design.md §N" in the project names a section
that exists, and the sections keep their numbers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
CITATION = re.compile(r"docs/design\.md((?:\s*§\s*\d+(?:\s*[-,–]\s*§?\s*\d+)*)?)")


def _sections() -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^## (\d+)\. (.+)$", DESIGN.read_text(), re.M)}


def _tracked_texts() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    keep = (".py", ".md", ".toml", ".yaml", ".yml", ".sh")
    return [ROOT / f for f in listed.split() if (f.endswith(keep) or f == ".ci/run") and (ROOT / f).is_file()]


def test_every_citation_of_the_design_names_a_section_that_exists():
    sections = _sections()
    assert sorted(sections) == list(range(1, len(sections) + 1))  # numbered 1..N, none skipped
    cited, dangling = 0, []
    for path in _tracked_texts():
        for line_number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            for match in CITATION.finditer(line):
                numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
                cited += len(numbers)
                dangling += [f"{path.relative_to(ROOT)}:{line_number} §{n}" for n in numbers if n not in sections]
    assert dangling == []
    assert cited >= 25  # the code cites the design; a scan that finds nothing is a broken scan


def test_the_citation_pattern_reads_single_numbers_and_ranges():
    found = [re.findall(r"\d+", m.group(1)) for m in CITATION.finditer("see docs/design.md §9, docs/design.md §2-§3")]
    assert found == [["9"], ["2", "3"]]
