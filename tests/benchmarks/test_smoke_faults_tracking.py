"""benchmarks/faults_tracking.py at its --tiny size: a real `mlflow server` stopped for 5 s under a trial."""

from __future__ import annotations

import pytest

from tests.benchmarks.tiny import run_tiny


@pytest.mark.slow  # a real mlflow server, stopped and started again
def test_faults_tracking(tmp_path):
    record, proc = run_tiny("faults_tracking", tmp_path)
    assert record["tiny"] is True and record["n_trials"] == 1 and record["outage_s"] == 5.0
    assert proc.returncode == (0 if all(record["checks"].values()) else 1)
    assert all(record["checks"].values()), (record["checks"], proc.stdout[-2000:], proc.stderr[-2000:])
