"""benchmarks/latency_front.py at its `--tiny` size: the quick start cut to seconds, `pareto --latency`,
two rows exported and timed; the record's derived figures are recomputed from its raw ones (timing
itself is not judged: the machine is shared)."""

from __future__ import annotations

import statistics

import pytest

from tests.benchmarks.tiny import run_tiny


@pytest.mark.slow  # three ee-search processes (run, pareto --latency) and four torch.export runs
def test_latency_front(tmp_path):
    record, proc = run_tiny("latency_front", tmp_path, "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert record["benchmark"] == "latency_front" and record["tiny"] is True and record["batches"] == [1, 16]
    rows = record["rows"]
    assert 1 <= len(rows) <= 2 and len(rows) == min(2, record["front_rows"])
    assert set(record["stage_costs_by_trial"]) >= {str(r["trial_number"]) for r in rows}
    for b in (1, 16):
        errors = []
        for row in rows:
            cell = row[f"batch_{b}"]
            assert len(cell["measured_ms_spread"]["values"]) == record["repeats"] == 2
            assert cell["measured_ms"] == pytest.approx(statistics.median(cell["measured_ms_spread"]["values"]))
            assert cell["expected_ms"] > 0 and cell["ratio"] == pytest.approx(cell["measured_ms"] / cell["expected_ms"])
            errors.append(abs(cell["ratio"] - 1))
        summary = record["summary"][f"batch_{b}"]
        assert summary["median_abs_relative_error"] == pytest.approx(statistics.median(errors))
        assert summary["pass"] == (statistics.median(errors) <= record["tolerance"])
    assert record["pass"] == all(s["pass"] for s in record["summary"].values())
