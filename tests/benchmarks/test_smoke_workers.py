"""benchmarks/workers.py at its --tiny size: the quick start cut to two one-epoch trials, run by
`ee-search run --workers 1` and `--workers 2`; the record's rates and ratios are recomputed from its
own per-run figures."""

from __future__ import annotations

import statistics

import pytest

from tests.benchmarks.tiny import ratios, run_tiny


@pytest.mark.slow  # four processes (two parents, three workers counted with the one-worker run)
def test_workers(tmp_path):
    record, proc = run_tiny("workers", tmp_path, "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert record["benchmark"] == "workers" and record["tiny"] is True and record["order"] == [["1", "2"]]
    rows = record["rows"]
    assert set(rows) == {"1", "2"} and rows["2"]["workers"] == 2
    for row in rows.values():
        (run,) = row["runs"]
        assert run["exit_code"] == 0 and run["states"] == {"COMPLETE": 2} and run["epochs"] == 2
        assert run["images_per_second"] == pytest.approx(run["epochs"] * record["train_images"] / run["wall_s"],
                                                         rel=0.01)
        assert run["trials_per_hour"] == pytest.approx(2 * 3600 / run["wall_s"], rel=0.01)
        cost = run["logged_model"]  # each completed trial's LoggedModel, against the trial's time
        assert cost["trials"] == 2 and len(cost["seconds"]["values"]) == 2
        assert cost["share_of_trial"]["values"] == pytest.approx(
            [m / w for m, w in zip(cost["seconds"]["values"], cost["trial_seconds"]["values"])])
        assert 0 < cost["share_of_trial"]["max"] < 1
    scaling = record["scaling"]["2_vs_1"]
    per_repeat = ratios(rows["2"]["images_per_second"]["values"], rows["1"]["images_per_second"]["values"])
    assert scaling["images_per_second"]["median"] == pytest.approx(statistics.median(per_repeat))
