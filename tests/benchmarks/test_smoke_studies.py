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


def test_pruning_replay(tmp_path):
    record, proc = run_tiny("pruning_replay", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["benchmark"] == "pruning_replay" and len(record["studies"]) == 1
    assert record["studies"][0]["trials"] == 3
    settings = record["settings"]
    assert sum(s["configured"] for s in settings) == 1 and len(settings) > 1
    for s in settings:
        (study,) = s["per_study"]
        assert study["epochs_pruned"] <= study["epochs_none"] == 6  # 3 trials of 2 epochs
        assert s["epoch_reduction"] == pytest.approx(1 - study["epochs_pruned"] / study["epochs_none"], abs=1e-4)
        assert set(study["pruned_trials"]) <= {0, 1, 2}


def test_search_efficiency(tmp_path):
    record, proc = run_tiny("search_efficiency", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["partial"] is False and (record["trials"], record["max_epochs"]) == (1, 1)
    assert sorted(r["config"] for r in record["runs"]) == ["a", "b", "c", "d"]
    for run in record["runs"]:
        assert len(run["anytime"]) == run["trials"] == 1 and run["final"] == run["anytime"][-1]
        assert run["epochs"] == run["anytime"][-1]["cumulative_epochs"] == 1
    per_config = record["summary"]["per_config"]
    for run in record["runs"]:
        assert per_config[run["config"]]["dense_test_hv"]["values"] == [run["final"]["dense_test_hv"]]
