"""Running one benchmark at its `--tiny` size, for the smoke tests (split over files so that pytest-xdist
spreads them over its workers)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def run_tiny(name: str, tmp_path: Path, *extra: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / f"{name}.json"
    # The checkout's package first: the benchmark must run against the code under test.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--tiny", "--json", str(out), *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert_finite(record)
    return record, proc


def assert_finite(value, where: str = "") -> None:
    """Every number in the record is finite (NaN and inf are not JSON, and mean a broken figure)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_finite(v, f"{where}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), where


def ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]
