"""Storage-outage proof: `ee-search run --workers 2` on one study in a real PostgreSQL, which this
driver stops (a fast shutdown: every connection ends, new ones are refused) at random moments for a
random 2-25 s and starts again; afterwards it measures what the outages cost.

    python benchmarks/faults_storage.py --json benchmarks/results/faults-storage-postgres.json
    python benchmarks/faults_storage.py --tiny --json /tmp/faults-storage-tiny.json   # 2 trials, 1 short outage

Figures (docs/design.md §9, "Storage outages"): trials finished vs n_trials, epochs redone (a retry
resumed behind where its predecessor had got), metrics lost (epochs a run lacks), trials trained twice
(runs with an epoch logged twice: two workers in one run), tracebacks printed (goal 0 for the last
three), and the run's exit code. MLflow is a SQLite file here: the outage is the Optuna storage's.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import psutil
import sqlalchemy as sa
import torch
from mlflow import MlflowClient

from ee_search.records import RETRY_HISTORY, TrialRecord
from ee_search.search.budget import counted_trials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_tiny_argument, write_json  # noqa: E402
from _fault_study import fault_study  # noqa: E402
from _servers import start_postgres, stop_servers  # noqa: E402



def outage(server, seconds: float) -> None:
    """Down for `seconds`, then up again on the same data and socket (see tests/conftest.py Postgres)."""
    process = psutil.Process(server.get_pid())
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    time.sleep(seconds)
    server.ensure_pgdata_inited()
    server.ensure_postgres_running()


def _running(engine) -> bool:
    try:
        with engine.connect() as con:
            return bool(con.execute(sa.text("SELECT count(*) FROM trials WHERE state = 'RUNNING'")).scalar())
    except sa.exc.SQLAlchemyError:  # the tables are not made yet
        return False


def drive(args, work: Path, server, storage_url: str) -> tuple[int, list[dict], str, float]:
    rng = random.Random(args.seed)
    log_path = work / "run.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        run = subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", str(work / "study.yaml")],
                               cwd=work, stdout=log, stderr=subprocess.STDOUT)
    engine = sa.create_engine(storage_url)
    while not _running(engine):  # the faults hit a run under way: both workers started, trials running
        if run.poll() is not None or time.monotonic() - started > args.timeout_s:
            break
        time.sleep(0.5)
    engine.dispose()
    faults = []
    for _ in range(args.faults):
        wait = rng.uniform(*args.between_s)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        if run.poll() is not None:
            break
        down = rng.uniform(*args.down_s)
        faults.append({"at_s": round(time.monotonic() - started, 1), "down_s": round(down, 1)})
        outage(server, down)
    code = run.wait(timeout=args.timeout_s)
    if code != 0:
        print(log_path.read_text()[-4000:], file=sys.stderr)
    return code, faults, log_path.read_text(), time.monotonic() - started


def measure(storage_url: str, tracking: str, n_trials: int) -> dict:
    study = optuna.load_study(study_name="outages", storage=storage_url)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    final = counted_trials(study)
    client = MlflowClient(tracking)
    lost = twice = 0
    for trial in final:
        record = TrialRecord.read(trial)
        steps = Counter(m.step for m in client.get_metric_history(record.mlflow_run_id, "val_loss"))
        epochs = int(record.epochs_trained or 0)
        lost += sum(1 for e in range(1, epochs + 1) if e not in steps)
        twice += any(n > 1 for n in steps.values())
    redone = 0
    for t in trials:  # a retry resumed at epoch r; its predecessor had recorded h epochs: h - r redone
        history = t.system_attrs.get(RETRY_HISTORY)
        resumed_at = TrialRecord.read(t).resumed_at_epoch
        if history and resumed_at is not None:
            had = len(TrialRecord.read(by_number[history[-1]]).monitor_history or [])
            redone += max(0, had - int(resumed_at))
    return {"n_trials": n_trials, "trials_finished": sum(t.state.name == "COMPLETE" for t in final),
            "retries": sum(bool(t.system_attrs.get(RETRY_HISTORY)) for t in trials), "epochs_redone": redone,
            "metrics_lost": lost, "trials_trained_twice": twice,
            "states": dict(Counter(t.state.name for t in trials))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--n-trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--faults", type=int, default=3)
    parser.add_argument("--between-s", type=float, nargs=2, default=(4.0, 15.0))
    parser.add_argument("--down-s", type=float, nargs=2, default=(2.0, 25.0))
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=0)
    add_tiny_argument(parser)
    args = parser.parse_args()
    if args.tiny:
        args.n_trials, args.epochs, args.faults, args.between_s, args.down_s = 2, 3, 1, (3.0, 5.0), (2.0, 4.0)
    servers: list = []
    with tempfile.TemporaryDirectory(prefix="ee-faults-storage-") as tmp:
        work = Path(tmp)
        try:
            url = start_postgres(work, servers)
            server = servers[-1][1]
            tracking = f"sqlite:///{work}/mlflow.db"
            (work / "study.yaml").write_text(fault_study(
                "outages", {"dataset": "digits", "val_fraction": 0.2}, width=32, batch_size=64,
                max_epochs=args.epochs, n_trials=args.n_trials, seed=args.seed,
                search={"storage": url("optuna"), "heartbeat": {"interval_s": 1, "grace_period_s": 8}, "workers": 2},
                tracking_uri=tracking))
            code, faults, log, seconds = drive(args, work, server, url("optuna"))
            result = {"exit_code": code, "seconds": round(seconds, 1), "faults": faults,
                      **measure(url("optuna"), tracking, args.n_trials),
                      "tracebacks_printed": log.count("Traceback"),
                      "trials_taken_over": log.count("by another worker"),
                      "outages_seen": log.count("is reachable again")}
        finally:
            stop_servers(servers)
    checks = {"exit 0": result["exit_code"] == 0, "all trials": result["trials_finished"] == args.n_trials,
              **{f"{k} == 0": result[k] == 0 for k in ("metrics_lost", "trials_trained_twice", "tracebacks_printed")}}
    write_json(args.json, "faults_storage", torch.device("cpu"), False,
               {"backend": "postgres (pgserver), mlflow sqlite", "workers": 2,
                "config": {k: v for k, v in vars(args).items() if k not in ("json", "tiny")},
                "result": result, "checks": checks, "passed": all(checks.values())}, tiny=args.tiny)
    print(json.dumps({"result": result, "checks": checks}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
