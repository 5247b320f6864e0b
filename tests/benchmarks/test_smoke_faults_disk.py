"""The smoke run of the disk-full benchmark (see test_smoke.py): a real tmpfs, filled while the second
trial trains, then freed; the study must stop in one line, keep `status` and `pareto` working, and
finish on the next run with no trial failed, no epoch redone, no metric lost and no traceback."""

from __future__ import annotations

import subprocess

import pytest

from tests.benchmarks.tiny import run_tiny


def _user_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.slow  # three `ee-search` commands and two runs of a 2-trial study
@pytest.mark.skipif(not _user_namespaces(), reason="mounting a tmpfs needs unprivileged user namespaces (unshare -rm)")
def test_faults_disk(tmp_path):
    record, proc = run_tiny("faults_disk", tmp_path)
    assert record["pass"] and proc.returncode == 0, (record["checks"], proc.stdout[-3000:], proc.stderr[-3000:])
    assert record["checks"] and all(record["checks"].values())
    (r,) = record["per_round"]
    assert r["moment"]["hit"] and r["exit_codes"] == {"run1": 75, "status_while_full": 0, "pareto_while_full": 0,
                                                      "run2": 0}
    assert (r["trials_finished"], r["n_trials"], r["trials_failed"], r["retries"]) == (2, 2, 0, 1)
    totals = record["totals"]
    assert totals["tracebacks_printed"] == totals["metric_steps_lost"] == totals["trials_trained_twice"] == 0
