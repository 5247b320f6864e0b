"""Every script under benchmarks/ runs at its `--tiny` size (seconds of CPU each) and writes its JSON:
a benchmark that no test runs breaks silently when the package changes under it. Beyond the keys, each
test recomputes what the record derives from its own raw figures (a median of per-repeat ratios from
the repeats' seconds, a FLOPs speedup from the exit shares, totals from the per-study rows), so a
record that is well-formed but wrong fails too."""

from __future__ import annotations

import statistics

import pytest

from tests.benchmarks.tiny import ROOT, ratios, run_tiny

BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
CHECKED = {"concurrency", "exit_inference", "faults", "faults_disk", "faults_storage", "faults_tracking",
           "latency_front", "operating_points", "pruning", "search_table", "train_throughput", "workers"}


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
