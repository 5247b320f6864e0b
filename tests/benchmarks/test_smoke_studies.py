"""The smoke runs of the benchmarks that run whole studies (see test_smoke.py)."""

from __future__ import annotations


import pytest

from tests.benchmarks.tiny import run_tiny


def test_pruning(tmp_path):
    record, proc = run_tiny("pruning", tmp_path, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = record["runs"]
    assert record["partial"] is False and sorted(r["pruner"] for r in runs) == ["early_stopping", "none"]
    for run in runs:
        assert run["trials"] == len(run["per_trial"]) == 2
        assert run["complete"] + run["pruned"] + run["failed"] == run["trials"] and run["failed"] == 0
        assert run["epochs_trained"] == sum(t["epochs"] for t in run["per_trial"])
    by = {r["pruner"]: r for r in runs}
    summary = record["summary"]
    assert summary["epoch_reduction"] == pytest.approx(
        1 - by["early_stopping"]["epochs_trained"] / by["none"]["epochs_trained"])
    assert summary["hypervolume_ratio"] == pytest.approx(by["early_stopping"]["hypervolume"] / by["none"]["hypervolume"])
    if by["none"]["test_hypervolume"]:
        assert summary["test_hypervolume_ratio"] == pytest.approx(
            by["early_stopping"]["test_hypervolume"] / by["none"]["test_hypervolume"])
