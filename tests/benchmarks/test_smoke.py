"""Every script under benchmarks/ runs at its `--tiny` size (seconds of CPU each) and writes its JSON:
a benchmark that no test runs breaks silently when the package changes under it. Beyond the keys, each
test recomputes what the record derives from its own raw figures (a median of per-repeat ratios from
the repeats' seconds, a FLOPs speedup from the exit shares, totals from the per-study rows), so a
record that is well-formed but wrong fails too."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
CHECKED = {"concurrency", "exit_inference", "faults", "operating_points", "pruning", "pruning_replay",
           "search_efficiency", "train_throughput"}


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


def test_every_benchmark_script_has_a_smoke_test():
    assert set(BENCHMARKS) == CHECKED


def test_exit_inference(tmp_path):
    record, proc = run_tiny("exit_inference", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["benchmark"] == "exit_inference" and record["tiny"] is True and record["repeats"] == 2
    assert record["outputs_match_dense"] is True
    shares = record["exit_fractions"]
    assert sum(shares) == pytest.approx(1.0) and record["early_share"] == pytest.approx(1 - shares[-1])
    flops = record["flops_per_image"]
    mean_cost = sum(s * c for s, c in zip(shares, flops["per_exit_cumulative"]))
    assert record["flops_speedup"] == pytest.approx(flops["full_depth"] / mean_cost)
    seconds = {k: v["values"] for k, v in record["seconds_spread"].items()}
    assert all(len(v) == 2 for v in seconds.values())
    assert record["measured_speedup"] == pytest.approx(
        statistics.median(ratios(seconds["full_depth"], seconds["compacted"])))
    assert record["measured_over_flops"] == pytest.approx(record["measured_speedup"] / record["flops_speedup"])


def test_operating_points(tmp_path):
    record, proc = run_tiny("operating_points", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (record["samples"], record["exits"]) == (400, 3)
    assert record["settings_per_trial"] == record["candidates_per_side_exit"] ** (record["exits"] - 1)
    for criterion in ("max_softmax", "entropy"):
        timing = record["seconds"][criterion]
        assert len(timing["runs"]) == 2 and timing["median"] == pytest.approx(statistics.median(timing["runs"]))
        assert record["front_points"][criterion] >= 2  # a trade-off, not a single point
        assert 0 < record["curve_hypervolume"][criterion] <= 1


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


def test_faults(tmp_path):
    record, proc = run_tiny("faults", tmp_path)
    checks = record["checks"]
    # Whether the one kill lands on a trial depends on timing; what follows from the storage does not.
    for name in ("exactly_n_trials_finished", "one_mlflow_run_per_logical_trial", "metric_histories_complete",
                 "parent_run_finished", "no_database_locked_in_worker_logs", "no_traceback_in_worker_logs",
                 "unkilled_workers_exit_0", "every_killed_trial_resumed_from_last_epoch",
                 "at_most_one_epoch_redone_per_kill"):
        assert checks[name]["pass"], (name, checks[name])
    assert record["pass"] == all(c["pass"] for c in checks.values())
    assert proc.returncode == (0 if record["pass"] else 1)
    assert (record["backend"], record["trials"], record["totals"]["logical_trials"]) == ("sqlite", 2, 2)
    assert len(record["kills"]) == record["totals"]["kills"] == 1


def test_train_throughput(tmp_path):
    record, proc = run_tiny("train_throughput", tmp_path, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["benchmark"] == "train_throughput"
    per_pair = [statistics.median(t) / statistics.median(b)
                for t, b in zip(record["trial_epoch_seconds_all"], record["bare_trainer_epoch_seconds_all"])]
    assert record["trial_overhead_ratio_spread"]["values"] == pytest.approx(per_pair)
    assert record["trial_overhead_ratio"] == pytest.approx(statistics.median(per_pair))


def test_concurrency(tmp_path):
    record, proc = run_tiny("concurrency", tmp_path, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert record["benchmark"] == "concurrency"
    rates = {n: s["values"] for n, s in record["aggregate_images_per_second_spread"].items()}
    for n, values in rates.items():
        assert record["scaling_vs_one_spread"][n]["values"] == pytest.approx(ratios(values, rates["1"]))
        assert record["scaling_vs_one"][n] == pytest.approx(statistics.median(ratios(values, rates["1"])))
