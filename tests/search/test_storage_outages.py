"""PostgreSQL stopped under two workers (docs/design.md §9, "Storage outages"): a real server, really
stopped (`pg_ctl stop -m fast`: every connection ends, new ones are refused) and started again.

Before ResilientRDBStorage a 20 s outage crashed the worker at its next epoch end (OperationalError ->
StorageInternalError -> Optuna's UnboundLocalError), and a 6 s blip killed Optuna's heartbeat thread,
so that the other worker resumed the live trial in parallel (a step logged twice, "Cannot tell a FAIL
trial"). The oracle: the study ends with its trials, each run logs each epoch once, nothing crashes
and no traceback is printed."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient

from ee_search.search.budget import counted_trials

pytestmark = pytest.mark.slow  # worker processes and a PostgreSQL server stopped and started

EPOCHS = 4
SETS = ["train.max_epochs=4", "train.early_stopping.patience=50", "search.n_trials=2",
        "search.heartbeat={interval_s: 1, grace_period_s: 8}"]  # 8: a busy machine delays live beats


def _epochs_of_running_trials(postgres) -> list[int]:
    """Epochs recorded by each RUNNING trial, read with psql (the workers own the connections)."""
    try:
        out = postgres.psql("\\c optuna\nSELECT json_array_length(a.value_json::json) FROM trials t JOIN "
                            "trial_user_attributes a ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' "
                            "AND a.key = 'monitor_history';")
    except Exception:  # noqa: BLE001 - tables not made yet
        return []
    return [int(line) for line in out.split() if line.isdigit()]


@pytest.mark.parametrize("down_s", [20, 6])
def test_postgresql_stopped_under_two_workers_costs_no_trial(tiny_study, workdir, postgres, down_s):
    sets = [a for s in SETS for a in ("--set", s)]
    tracking = f"sqlite:///{workdir}/mlflow.db"  # MLflow elsewhere: the outage is Optuna's storage's
    with open(workdir / "parent.log", "w") as log:
        parent = subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", str(tiny_study), "--workers", "2",
                                   "--storage", postgres.url("optuna"), "--tracking-uri", tracking, *sets],
                                  cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not (len(epochs := _epochs_of_running_trials(postgres)) == 2 and min(epochs) >= 1):
        assert parent.poll() is None and time.monotonic() < deadline, (workdir / "parent.log").read_text()
        time.sleep(0.2)
    postgres.stop()  # both workers mid-trial, at some moment of an epoch
    time.sleep(down_s)
    postgres.start()
    assert parent.wait(timeout=300) == 0, (workdir / "parent.log").read_text()
    output = (workdir / "parent.log").read_text()
    assert "Traceback" not in output and "is unreachable" in output and "reachable again" in output

    study = optuna.load_study(study_name="tiny", storage=postgres.url("optuna"))
    final = counted_trials(study)
    assert len(final) == 2 and all(t.state.name == "COMPLETE" for t in final), [t.state for t in study.trials]
    client = MlflowClient(tracking)
    for trial in final:  # one run per logical trial, every epoch logged once: none trained twice
        steps = [m.step for m in client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_loss")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (trial.number, steps)
