"""Load-and-fault proof: N `ee-search run` workers share one study while this
driver SIGKILLs a random worker at K random moments and restarts it; afterwards it checks that the
study came out as if nothing had happened.

    python benchmarks/faults.py --backend sqlite --json benchmarks/results/faults-sqlite.json
    python benchmarks/faults.py --backend postgres --json benchmarks/results/faults-postgres.json
    python benchmarks/faults.py --quick --json /tmp/faults-quick.json
    python benchmarks/faults.py --tiny --json /tmp/faults-tiny.json    # sqlite, 2 workers, 2 short trials, 1 kill

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

from ee_search.records import RETRY_HISTORY, TrialRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_tiny_argument, write_json  # noqa: E402
from _fault_study import fault_study  # noqa: E402
from _servers import start_mlflow_server, start_postgres, stop_servers  # noqa: E402


INTERVAL_S, GRACE_S = 1, 3  # short heartbeat: a killed trial is stale (and retried) within seconds
# --tiny runs beside other tests on a loaded machine: a live worker's heartbeat may lag a few seconds,
# and 3 s would call its trial stale and have it trained twice (a false kill, not the one measured).
TINY_GRACE_S = 10


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
                       "epochs": len(TrialRecord.read(t).monitor_history or [])}
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def counted(study: optuna.Study) -> list:
    from ee_search.search.budget import counted_trials
    return counted_trials(study)


def wait_for_study(workers: Workers, storage_url: str) -> optuna.Study:
    """The study once worker 0 has created it and started its first trial (the parent run exists then)."""
    storage = None  # one for every poll: each new one would hold a server connection until collected
    while True:
        time.sleep(0.5)
        if workers.procs[0].poll() is not None:
            raise RuntimeError(f"worker 0 exited early: see {workers.logs[0]}")
        try:
            storage = storage or optuna.storages.RDBStorage(storage_url)
            study = optuna.load_study(study_name="faults", storage=storage)
            if study.get_trials(deepcopy=False):
                return study
        except Exception:
            pass  # not created yet


def kill_one(workers: Workers, slot: int, engine, study: optuna.Study, attributed: set[int], t0: float,
             grace: float) -> dict:
    """SIGKILL the worker in `slot` and find the trial it was running (the one RUNNING before whose
    heartbeat stopped after); restart the slot."""
    before = running_snapshot(engine, study)
    t_kill = time.time()
    workers.kill(slot)
    # Past the grace period: the killed trial's heartbeat has stopped, the others' moved on.
    time.sleep(grace + 1.5)
    after = running_snapshot(engine, study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    hit = [n for n, s in before.items() if n not in attributed and states[n] not in
           (TrialState.COMPLETE, TrialState.PRUNED)
           and (n not in after or after[n]["heartbeat"] == s["heartbeat"])]
    hit = [n for n in hit if n in after or states[n] == TrialState.FAIL]
    trial = hit[0] if len(hit) == 1 else None
    if trial is not None:
        attributed.add(trial)
    workers.start(slot)  # the machine comes back
    return {"t_s": round(time.monotonic() - t0, 2), "unix_time": t_kill, "worker": slot, "trial": trial,
            "candidates": hit, "epochs_in_optuna_at_kill": before[trial]["epochs"] if trial is not None else None}


def drive(args, study_path: Path, storage_url: str, work: Path) -> tuple[list[dict], float, Workers]:
    rng = random.Random(args.seed)
    workers = Workers(study_path, work)
    started = time.monotonic()
    workers.start(0)  # alone first: it creates the storage, the study and the parent run (no race there)
    study = wait_for_study(workers, storage_url)
    # A process needs this long (imports, data) before it runs a trial: killing one younger than that
    # hits no trial and proves nothing, so kills pick among workers at least this old.
    startup_s = time.monotonic() - started
    engine = sa.create_engine(storage_url)
    for slot in range(1, args.workers):
        workers.start(slot)

    def unfinished() -> bool:
        return len(counted(study)) < args.trials

    kills: list[dict] = []
    attributed: set[int] = set()
    deadline = started + args.max_wall
    while unfinished() and time.monotonic() < deadline:
        if len(kills) < args.kills:
            # A random moment, 0.3 to 1.5 kill-gaps after the last restart (a worker may still be starting).
            t_end = time.monotonic() + rng.uniform(0.3, 1.5) * args.kill_gap
            while time.monotonic() < t_end and unfinished():
                time.sleep(0.2)
            live = [s for s in workers.alive() if time.monotonic() - workers.started[s] >= startup_s]
            if not live or not unfinished():
                time.sleep(0.5)
                continue
            kills.append(kill_one(workers, rng.choice(live), engine, study, attributed, started, args.grace))
            print(f"kill {len(kills)}: worker {kills[-1]['worker']} at {kills[-1]['t_s']} s, trial {kills[-1]['trial']}",
                  flush=True)
        else:
            time.sleep(1.0)
            if not workers.alive():
                # Every worker ended but a killed trial may still be RUNNING (stale): an operator runs
                # again, and the new worker's first trial retries it.
                time.sleep(args.grace + 1)
                if unfinished():
                    workers.start(0)
    # Let workers end on their own (each stops once the study has n_trials), then stop stragglers.
    t_end = time.monotonic() + 120
    while workers.alive() and time.monotonic() < t_end:
        time.sleep(0.5)
    workers.stop_all()
    return kills, time.monotonic() - started, workers


class Checks(dict):
    """name -> {"pass": bool, **detail}, in the order checked."""

    def check(self, name: str, ok: bool, **detail) -> None:
        self[name] = {"pass": bool(ok), **detail}


def check_trials_and_runs(checks: Checks, args, trials, final, runs, run_of: dict) -> None:
    """Exactly n_trials counted, all COMPLETE; one MLflow run per logical trial (a counted trial plus
    the FAILs it retried, which share its run), no orphan run, no trial number twice."""
    checks.check("exactly_n_trials_finished",
                 len(final) == args.trials and all(t.state == TrialState.COMPLETE for t in final),
                 finished=len(final), wanted=args.trials, states=sorted({t.state.name for t in final}),
                 all_trials={s.name: sum(t.state == s for t in trials) for s in TrialState})
    logical = {t.number: [*t.system_attrs.get(RETRY_HISTORY, []), t.number] for t in final}
    chain_runs = {n: {run_of[m] for m in chain} for n, chain in logical.items()}
    final_runs = [run_of[n] for n in logical]
    mlflow_ids = [r.info.run_id for r in runs]
    checks.check("one_mlflow_run_per_logical_trial",
                 all(len(v) == 1 for v in chain_runs.values()) and len(set(final_runs)) == len(final_runs)
                 and sorted(mlflow_ids) == sorted(map(str, final_runs))  # a trial without a run fails it
                 and len(set(t.number for t in trials)) == len(trials),
                 logical_trials=len(logical), trial_runs_in_mlflow=len(mlflow_ids),
                 orphan_runs=sorted(set(mlflow_ids) - set(final_runs)),
                 chains_with_several_runs={n: sorted(map(str, v)) for n, v in chain_runs.items() if len(v) != 1})


def check_kills(checks: Checks, args, client, trials, run_of: dict, kills: list[dict]) -> list[dict]:
    """What each retry found in last.pt against the epoch the killed worker was in; returns the kills
    that hit a trial."""
    successor = {t.system_attrs[RETRY_HISTORY][-1]: t for t in trials if t.system_attrs.get(RETRY_HISTORY)}
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
        at = TrialRecord.read(nxt).resumed_at_epoch if nxt is not None else None
        k.update(epochs_completed_before_kill=done, epoch_reached=reached, resumed_by=nxt.number if nxt else None,
                 resumed_at=at, redone=None if at is None else reached - at)
    hits = [k for k in kills if k["trial"] is not None]
    checks.check("every_killed_trial_resumed_from_last_epoch",
                 all(k["resumed_at"] is not None and k["resumed_at"] >= k["epochs_completed_before_kill"] for k in hits),
                 kills_on_a_trial=len(hits), kills=len(kills),
                 not_resumed=[k["trial"] for k in hits if k["resumed_at"] is None])
    checks.check("at_most_one_epoch_redone_per_kill", all(k["redone"] is not None and k["redone"] <= 1 for k in hits),
                 redone=[k["redone"] for k in hits], total_redone=sum(k["redone"] or 0 for k in hits))
    checks.check("kills_landed_on_trials", len(hits) >= 1 and len(kills) == args.kills,
                 kills_made=len(kills), wanted=args.kills, unattributed=[k for k in kills if k["trial"] is None])
    return hits


def check_histories(checks: Checks, client, runs, final, run_of: dict) -> None:
    """Every per-epoch metric has each step 1..epochs_trained exactly once."""
    bad: list[dict] = []
    final_by_run = {run_of[t.number]: t for t in final}
    for r in runs:
        t = final_by_run.get(r.info.run_id)
        epochs = TrialRecord.read(t).epochs_trained if t is not None else None
        # MLflow's system metrics are stepped per sampling window, not per epoch.
        for key in (k for k in r.data.metrics if not k.startswith("system/")):
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, key))
            if steps == [0]:
                continue  # a final (per-trial) metric
            if epochs is None or steps != list(range(1, epochs + 1)):
                bad.append({"run": r.info.run_id, "trial": r.data.tags.get("ee_search.trial_number"),
                            "metric": key, "steps": steps, "epochs_trained": epochs})
    checks.check("metric_histories_complete", not bad and len(runs) > 0, runs_checked=len(runs), problems=bad[:20])


def check_worker_logs(checks: Checks, workers: Workers) -> None:
    locked = [log.name for log in workers.logs if "database is locked" in log.read_text(errors="replace").lower()]
    tracebacks = [log.name for log in workers.logs if "Traceback" in log.read_text(errors="replace")]
    checks.check("no_database_locked_in_worker_logs", not locked, logs=locked)
    checks.check("no_traceback_in_worker_logs", not tracebacks, logs=tracebacks)
    codes = {log.name: p.returncode for log, p in zip(workers.logs, workers.all)}
    killed_logs = {workers.logs[i].name for i in workers.killed}
    checks.check("unkilled_workers_exit_0", all(rc == 0 for name, rc in codes.items() if name not in killed_logs),
                 exit_codes=codes)


def verify(args, storage_url: str, tracking: str, kills: list[dict], workers: Workers) -> tuple[dict, dict]:
    study = optuna.load_study(study_name="faults", storage=optuna.storages.RDBStorage(storage_url))
    trials = study.get_trials(deepcopy=False)
    final = counted(study)
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("faults")
    runs = client.search_runs([exp.experiment_id], "tags.`ee_search.role` = 'trial'", max_results=10000)
    parent = client.search_runs([exp.experiment_id], "tags.`ee_search.role` = 'study'")
    run_of = {t.number: TrialRecord.read(t).mlflow_run_id for t in trials}
    checks = Checks()
    check_trials_and_runs(checks, args, trials, final, runs, run_of)
    hits = check_kills(checks, args, client, trials, run_of, kills)
    check_histories(checks, client, runs, final, run_of)
    checks.check("parent_run_finished", len(parent) == 1 and parent[0].info.status == "FINISHED",
                 parents=[p.info.status for p in parent])
    check_worker_logs(checks, workers)
    totals = {"trials_in_storage": len(trials), "logical_trials": len(final), "kills": len(kills),
              "kills_on_a_trial": len(hits), "epochs_trained": sum(TrialRecord.read(t).epochs_trained or 0 for t in final),
              "epochs_redone_total": sum(k["redone"] or 0 for k in hits),
              "worker_processes_started": len(workers.logs)}
    return dict(checks), totals


def parse_args() -> argparse.Namespace:
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
    add_tiny_argument(p)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    if args.quick:
        args.backend, args.workers, args.trials, args.kills = "sqlite", 2, 6, 3
    if args.tiny:  # no server; the kill comes soon after the second worker is up
        args.backend, args.workers, args.trials, args.kills = "sqlite", 2, 2, 1
        args.max_epochs, args.train_size, args.kill_gap, args.max_wall = 3, 240, 1.0, 600.0
    args.workers = args.workers or (4 if args.backend == "postgres" else 2)
    args.grace = TINY_GRACE_S if args.tiny else GRACE_S
    return args


def main() -> int:
    args = parse_args()
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
        study_path.write_text(fault_study(
            "faults", {"dataset": "synthetic_svhn", "val_fraction": 0.2,
                       "synthetic": {"train_size": args.train_size, "test_size": 200}},
            width=8, batch_size=64, max_epochs=args.max_epochs, n_trials=args.trials, seed=args.seed,
            search={"storage": storage_url, "heartbeat": {"interval_s": INTERVAL_S, "grace_period_s": args.grace},
                    "retries": args.kills + 2}, tracking_uri=tracking))
        kills, wall, workers = drive(args, study_path, storage_url, work)
        checks, totals = verify(args, storage_url, tracking, kills, workers)
    finally:
        stop_servers(servers)
    ok = all(c["pass"] for c in checks.values())
    payload = {"backend": args.backend, "workers": args.workers, "trials": args.trials, "kills_wanted": args.kills,
               "seed": args.seed, "max_epochs": args.max_epochs, "heartbeat": {"interval_s": INTERVAL_S,
               "grace_period_s": args.grace}, "tracking": "mlflow server (postgres)" if args.backend == "postgres"
               else "sqlite", "pass": ok, "checks": checks, "kills": kills, "totals": totals,
               "wall_s": round(wall, 1), "work_dir": str(work) if args.keep else None}
    write_json(args.json, "faults", torch.device("cpu"), args.quick, payload, tiny=args.tiny)
    print(json.dumps({"pass": ok, "checks": {k: v["pass"] for k, v in checks.items()}, "totals": totals,
                      "wall_s": round(wall, 1)}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
