"""Load-and-fault proof (issue 10, part 4): N `ee-search run` workers share one study while this
driver SIGKILLs a random worker at K random moments and restarts it; afterwards it checks that the
study came out as if nothing had happened.

    python benchmarks/faults.py --backend sqlite --json benchmarks/results/faults-sqlite.json
    python benchmarks/faults.py --backend postgres --json benchmarks/results/faults-postgres.json
    python benchmarks/faults.py --quick --json /tmp/faults-quick.json

Checks (each pass/fail in the JSON; exit 1 if any fails): exactly n_trials counted trials, all
COMPLETE; one MLflow run per logical trial (a retry chain shares its run, no orphan run, no trial
number twice); every kill that hit a trial was resumed from its last epoch, with at most one epoch
redone; each run's per-epoch metric histories are exactly steps 1..epochs_trained; no
'database is locked' and no traceback in any worker log.

Which trial a kill hit is not printed by the worker (it logs at WARNING), so it is read from the
storage: the trials RUNNING at the kill whose heartbeat then stops while they stay unfinished.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import sqlalchemy as sa
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402
from _servers import free_port, start_mlflow_server, start_postgres, stop_servers  # noqa: E402

STUDY = """\
name: faults
seed: 0
device: cpu
data:
  dataset: synthetic_svhn
  val_fraction: 0.2
  synthetic: {{train_size: {train_size}, test_size: 200}}
model: {{name: branchy_lenet, width: 8}}
train:
  max_epochs: {max_epochs}
  lr: 0.05
  batch_size: 64
  early_stopping: {{monitor: val_loss, patience: 100, tol: 0.0}}
exits: {{criterion: entropy, thresholds: [0.8]}}
search:
  n_trials: {n_trials}
  objectives: [accuracy, avg_exit_depth]
  sampler: {{type: random, seed: {seed}}}
  pruner: {{type: none}}
  storage: "{storage}"
  heartbeat: {{interval_s: {interval}, grace_period_s: {grace}}}
  retries: {retries}
  space:
    train.lr: {{type: float, low: 0.01, high: 0.1, log: true}}
tracking: {{uri: "{tracking}"}}
"""

INTERVAL_S, GRACE_S = 1, 3  # short heartbeat: a killed trial is stale (and retried) within seconds


class Workers:
    """Worker slots; each (re)start is a new process with its own log, so a kill's log stays readable."""

    def __init__(self, study: Path, work: Path) -> None:
        self.study, self.work, self.procs, self.logs = study, work, {}, []
        self.all: list[subprocess.Popen] = []  # every process started, in the order of self.logs
        self.killed: set[int] = set()  # indices into self.logs of the SIGKILLed processes
        self.started: dict[int, float] = {}  # slot -> when its current process started
        # One thread per worker: 2-4 workers on a 2-core machine would otherwise oversubscribe.
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def start(self, slot: int) -> None:
        log = self.work / "logs" / f"worker{slot}.{len(self.logs)}.log"
        log.parent.mkdir(exist_ok=True)
        self.logs.append(log)
        self.procs[slot] = subprocess.Popen(
            [sys.executable, "-m", "ee_search.cli", "run", str(self.study), "--device", "cpu"],
            cwd=self.work, env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.all.append(self.procs[slot])
        self.started[slot] = time.monotonic()

    def kill(self, slot: int) -> None:
        proc = self.procs[slot]
        self.killed.add(self.all.index(proc))
        proc.send_signal(signal.SIGKILL)  # no cleanup of any kind
        proc.wait()

    def alive(self) -> list[int]:
        return [s for s, p in self.procs.items() if p.poll() is None]

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def running_snapshot(engine, study: optuna.Study) -> dict[int, dict]:
    """RUNNING trials: number -> heartbeat and epochs recorded (monitor_history). The heartbeat table
    is read with SQL: Optuna has no public reader for it."""
    with engine.connect() as con:
        beats = dict(con.execute(sa.text("SELECT trial_id, heartbeat FROM trial_heartbeats")).fetchall())
    return {t.number: {"trial_id": t._trial_id, "heartbeat": beats.get(t._trial_id),
                       "epochs": len(t.user_attrs.get("monitor_history", []))}
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def counted(study: optuna.Study) -> list:
    from ee_search.search.resume import counted_trials
    return counted_trials(study)


def drive(args, study_path: Path, storage_url: str, work: Path) -> tuple[list[dict], float, Workers]:
    rng = random.Random(args.seed)
    workers = Workers(study_path, work)
    started = time.monotonic()
    workers.start(0)  # alone first: it creates the storage, the study and the parent run (no race there)
    storage = engine = study = None
    while study is None:
        time.sleep(0.5)
        if workers.procs[0].poll() is not None:
            raise RuntimeError(f"worker 0 exited early: see {workers.logs[0]}")
        try:
            storage = optuna.storages.RDBStorage(storage_url)
            study = optuna.load_study(study_name="faults", storage=storage)
            if not study.get_trials(deepcopy=False):
                study = None  # the parent run is created before the first trial: wait for one
        except Exception:
            study = None
    # A process needs this long (imports, data) before it runs a trial: killing one younger than that
    # hits no trial and proves nothing, so kills pick among workers at least this old.
    startup_s = time.monotonic() - started
    engine = sa.create_engine(storage_url)
    for slot in range(1, args.workers):
        workers.start(slot)

    kills: list[dict] = []
    attributed: set[int] = set()
    deadline = started + args.max_wall
    while len(counted(study)) < args.trials and time.monotonic() < deadline:
        if len(kills) < args.kills:
            # A random moment, 0.3 to 1.5 kill-gaps after the last restart (a worker may still be starting).
            gap = rng.uniform(0.3, 1.5) * args.kill_gap
            t_end = time.monotonic() + gap
            while time.monotonic() < t_end and len(counted(study)) < args.trials:
                time.sleep(0.2)
            live = [s for s in workers.alive() if time.monotonic() - workers.started[s] >= startup_s]
            if not live or len(counted(study)) >= args.trials:
                time.sleep(0.5)
                continue
            slot = rng.choice(live)
            before = running_snapshot(engine, study)
            t_kill = time.time()
            workers.kill(slot)
            # Past the grace period: the killed trial's heartbeat has stopped, the others' moved on.
            time.sleep(GRACE_S + 1.5)
            after = running_snapshot(engine, study)
            states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
            hit = [n for n, s in before.items() if n not in attributed and states[n] not in
                   (TrialState.COMPLETE, TrialState.PRUNED)
                   and (n not in after or after[n]["heartbeat"] == s["heartbeat"])]
            hit = [n for n in hit if n in after or states[n] == TrialState.FAIL]
            trial = hit[0] if len(hit) == 1 else None
            if trial is not None:
                attributed.add(trial)
            kills.append({"t_s": round(time.monotonic() - started, 2),
                          "unix_time": t_kill, "worker": slot, "trial": trial, "candidates": hit,
                          "epochs_in_optuna_at_kill": before[trial]["epochs"] if trial is not None else None})
            print(f"kill {len(kills)}: worker {slot} at {kills[-1]['t_s']} s, trial {trial}", flush=True)
            workers.start(slot)  # the machine comes back
        else:
            time.sleep(1.0)
            if not workers.alive():
                # Every worker ended but a killed trial may still be RUNNING (stale): an operator runs
                # again, and the new worker's first trial retries it.
                time.sleep(GRACE_S + 1)
                if len(counted(study)) < args.trials:
                    workers.start(0)
    # Let workers end on their own (each stops once the study has n_trials), then stop stragglers.
    t_end = time.monotonic() + 120
    while workers.alive() and time.monotonic() < t_end:
        time.sleep(0.5)
    workers.stop_all()
    return kills, time.monotonic() - started, workers


def verify(args, storage_url: str, tracking: str, kills: list[dict], workers: Workers) -> tuple[dict, dict]:
    study = optuna.load_study(study_name="faults", storage=optuna.storages.RDBStorage(storage_url))
    trials = study.get_trials(deepcopy=False)
    final = counted(study)
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("faults")
    runs = client.search_runs([exp.experiment_id], "tags.`ee_search.role` = 'trial'", max_results=10000)
    parent = client.search_runs([exp.experiment_id], "tags.`ee_search.role` = 'study'")
    checks: dict[str, dict] = {}

    def check(name: str, ok: bool, **detail) -> None:
        checks[name] = {"pass": bool(ok), **detail}

    check("exactly_n_trials_finished", len(final) == args.trials and all(t.state == TrialState.COMPLETE for t in final),
          finished=len(final), wanted=args.trials, states=sorted({t.state.name for t in final}),
          all_trials={s.name: sum(t.state == s for t in trials) for s in TrialState})
    # Logical trials: a counted trial plus the FAILs it retried (retry_history); they share one run.
    run_of = {t.number: t.user_attrs.get("mlflow_run_id") for t in trials}
    logical = {t.number: [*t.system_attrs.get("retry_history", []), t.number] for t in final}
    chain_runs = {n: {run_of[m] for m in chain} for n, chain in logical.items()}
    final_runs = [run_of[n] for n in logical]
    mlflow_ids = [r.info.run_id for r in runs]
    tags = {r.info.run_id: r.data.tags for r in runs}
    check("one_mlflow_run_per_logical_trial",
          all(len(v) == 1 for v in chain_runs.values()) and len(set(final_runs)) == len(final_runs)
          and sorted(mlflow_ids) == sorted(final_runs) and len(set(t.number for t in trials)) == len(trials),
          logical_trials=len(logical), trial_runs_in_mlflow=len(mlflow_ids),
          orphan_runs=sorted(set(mlflow_ids) - set(final_runs)),
          chains_with_several_runs={n: sorted(map(str, v)) for n, v in chain_runs.items() if len(v) != 1})

    # Kills: what the retry found in last.pt vs the epoch the killed worker was in.
    successor = {t.system_attrs["retry_history"][-1]: t for t in trials if t.system_attrs.get("retry_history")}
    for k in kills:
        n = k["trial"]
        if n is None:
            k.update(epoch_reached=None, resumed_at=None, redone=None, resumed_by=None)
            continue
        run_id = run_of.get(n)
        logged = [m for m in client.get_metric_history(run_id, "val_loss") if m.timestamp <= k["unix_time"] * 1000] \
            if run_id else []
        done = max([k["epochs_in_optuna_at_kill"], *(m.step for m in logged)])
        reached = min(done + 1, args.max_epochs)  # the epoch it was in (its last one if all were done)
        nxt = successor.get(n)
        at = nxt.user_attrs.get("resumed_at_epoch") if nxt is not None else None
        k.update(epochs_completed_before_kill=done, epoch_reached=reached, resumed_by=nxt.number if nxt else None,
                 resumed_at=at, redone=None if at is None else reached - at)
    hits = [k for k in kills if k["trial"] is not None]
    check("every_killed_trial_resumed_from_last_epoch",
          all(k["resumed_at"] is not None and k["resumed_at"] >= k["epochs_completed_before_kill"] for k in hits),
          kills_on_a_trial=len(hits), kills=len(kills),
          not_resumed=[k["trial"] for k in hits if k["resumed_at"] is None])
    check("at_most_one_epoch_redone_per_kill", all(k["redone"] is not None and k["redone"] <= 1 for k in hits),
          redone=[k["redone"] for k in hits], total_redone=sum(k["redone"] or 0 for k in hits))
    check("kills_landed_on_trials", len(hits) >= 1 and len(kills) == args.kills,
          kills_made=len(kills), wanted=args.kills, unattributed=[k for k in kills if k["trial"] is None])

    # Metric histories: every per-epoch metric has each step 1..epochs_trained exactly once.
    bad: list[dict] = []
    final_by_run = {run_of[n]: t for n, t in zip(logical, final)}
    for r in runs:
        t = final_by_run.get(r.info.run_id)
        epochs = t.user_attrs.get("epochs_trained") if t is not None else None
        for key in r.data.metrics:
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, key))
            if steps == [0]:
                continue  # a final (per-trial) metric
            if epochs is None or steps != list(range(1, epochs + 1)):
                bad.append({"run": r.info.run_id, "trial": tags[r.info.run_id].get("ee_search.trial_number"),
                            "metric": key, "steps": steps, "epochs_trained": epochs})
    check("metric_histories_complete", not bad and len(runs) > 0, runs_checked=len(runs), problems=bad[:20])
    check("parent_run_finished", len(parent) == 1 and parent[0].info.status == "FINISHED",
          parents=[p.info.status for p in parent])

    locked, tracebacks = [], []
    for log in workers.logs:
        text = log.read_text(errors="replace")
        if "database is locked" in text.lower():
            locked.append(log.name)
        if "Traceback" in text:
            tracebacks.append(log.name)
    check("no_database_locked_in_worker_logs", not locked, logs=locked)
    check("no_traceback_in_worker_logs", not tracebacks, logs=tracebacks)
    codes = {log.name: p.returncode for log, p in zip(workers.logs, workers.all)}
    killed_logs = {workers.logs[i].name for i in workers.killed}
    check("unkilled_workers_exit_0", all(rc == 0 for name, rc in codes.items() if name not in killed_logs),
          exit_codes=codes)

    epochs_trained = sum(t.user_attrs.get("epochs_trained", 0) for t in final)
    totals = {"trials_in_storage": len(trials), "logical_trials": len(final), "kills": len(kills),
              "kills_on_a_trial": len(hits), "epochs_trained": epochs_trained,
              "epochs_redone_total": sum(k["redone"] or 0 for k in hits),
              "worker_processes_started": len(workers.logs)}
    return checks, totals


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    p.add_argument("--workers", type=int, default=None, help="default: 4 (postgres), 2 (sqlite)")
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=6)
    p.add_argument("--train-size", type=int, default=4000, help="synthetic_svhn images (epoch length)")
    p.add_argument("--kill-gap", type=float, default=8.0, help="mean seconds between a restart and the next kill")
    p.add_argument("--max-wall", type=float, default=3600.0, help="give up (and fail) after this many seconds")
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp dir, removed)")
    p.add_argument("--quick", action="store_true", help="sqlite, 2 workers, 6 trials, 3 kills")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    if args.quick:
        args.backend, args.workers, args.trials, args.kills = "sqlite", 2, 6, 3
    args.workers = args.workers or (4 if args.backend == "postgres" else 2)

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="ee-faults-")
    work = (args.keep or Path(tmp.name)).resolve()
    work.mkdir(parents=True, exist_ok=True)
    servers: list = []
    try:
        if args.backend == "postgres":
            pg_url = start_postgres(work, servers)
            storage_url = pg_url("optuna")
            tracking = start_mlflow_server(pg_url("mlflow"), work, servers)
        else:
            storage_url, tracking = f"sqlite:///{work}/optuna.db", f"sqlite:///{work}/mlflow.db"
        study_path = work / "faults.yaml"
        # Retries beyond the kills: a trial killed again during its retry must still be resumed.
        study_path.write_text(STUDY.format(
            train_size=args.train_size, max_epochs=args.max_epochs, n_trials=args.trials, seed=args.seed,
            storage=storage_url, tracking=tracking, interval=INTERVAL_S, grace=GRACE_S, retries=args.kills + 2))
        kills, wall, workers = drive(args, study_path, storage_url, work)
        checks, totals = verify(args, storage_url, tracking, kills, workers)
    finally:
        stop_servers(servers)
    ok = all(c["pass"] for c in checks.values())
    payload = {"backend": args.backend, "workers": args.workers, "trials": args.trials, "kills_wanted": args.kills,
               "seed": args.seed, "max_epochs": args.max_epochs, "heartbeat": {"interval_s": INTERVAL_S,
               "grace_period_s": GRACE_S}, "tracking": "mlflow server (postgres)" if args.backend == "postgres"
               else "sqlite", "pass": ok, "checks": checks, "kills": kills, "totals": totals,
               "wall_s": round(wall, 1), "work_dir": str(work) if args.keep else None}
    write_json(args.json, "faults", torch.device("cpu"), args.quick, payload)
    print(json.dumps({"pass": ok, "checks": {k: v["pass"] for k, v in checks.items()}, "totals": totals,
                      "wall_s": round(wall, 1)}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
