"""Disk-full proof: a study's disk fills up at a random moment, then space is freed and the study is
run again; afterwards the driver checks the study came out as if nothing had happened.

    python benchmarks/faults_disk.py --json benchmarks/results/faults-disk-cpu.json
    python benchmarks/faults_disk.py --tiny --json /tmp/faults-disk-tiny.json   # 1 round, 2 short trials

The disk is real: each round mounts a fresh tmpfs of --disk-mb (a user + mount namespace, `unshare -rm`,
so no root is needed) and the study's Optuna and MLflow stores, its artifacts and TMPDIR (the
trials' checkpoints) all live on it. `ee-search run` starts; at a random moment (seeded: a random
trial, epoch and point in that epoch) this driver writes a file until the disk refuses a byte more
(ENOSPC). The command must stop in one line naming the disk and exit 75; `status` and `pareto` must
still work while the disk is full; the file is deleted and `ee-search run` run once more must
finish the study. Counters per round and in total: trials finished vs n_trials, completed epochs
redone (goal 0), metric steps lost (goal 0), trials trained twice (goal 0), tracebacks printed
(goal 0), trials ended FAIL for the disk (goal 0). Exit 1 if a check fails, 77 where this machine
does not allow unprivileged user namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fault_study import fault_study  # noqa: E402 - yaml only: nothing heavy before the namespace

NAMESPACE_FLAG = "EE_FAULTS_DISK_IN_NAMESPACE"
SKIP = 77  # no user namespaces here: nothing measured


def in_namespace() -> None:
    """Run this script again inside a user + mount namespace, where mounting a tmpfs needs no root."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"faults_disk: needs unprivileged user namespaces (unshare -rm): {probe.stderr.strip()}", file=sys.stderr)
        sys.exit(SKIP)
    env = {**os.environ, NAMESPACE_FLAG: "1"}
    sys.exit(subprocess.run(["unshare", "-rm", sys.executable, *sys.argv], env=env).returncode)


def cli(*args: str, cwd: Path, env: dict, log: Path, wait: bool = True):
    argv = [sys.executable, "-m", "ee_search.cli", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if wait:
        proc.wait(timeout=600)
    return proc


def running_epochs(db: Path) -> dict[int, int] | None:
    """RUNNING trials: number -> epochs recorded; None while the store cannot be read yet."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            rows = con.execute(
                "SELECT t.number, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id AND a.key = 'monitor_history' WHERE t.state = 'RUNNING'").fetchall()
    except sqlite3.Error:
        return None
    return {n: len(json.loads(h)) if h else 0 for n, h in rows}


def fill(disk: Path) -> int:
    """Write one file until the disk takes no byte more; its size."""
    written = 0
    with open(disk / "filler", "wb", buffering=0) as file:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    written += file.write(bytes(chunk))
            except OSError:
                pass
    return written


def fill_at_random_moment(proc, db: Path, rng: random.Random, args) -> dict:
    """Wait for a random trial to be in a random epoch, then a random fraction of an epoch more, and
    fill the disk; the moment as it was."""
    trial, epoch = rng.randrange(args.trials), rng.randint(1, args.max_epochs)
    if args.tiny:
        trial, epoch = 1, 2  # a hit for sure: the second trial, after its first epoch
    t0 = time.monotonic()
    while proc.poll() is None:
        state = running_epochs(db) or {}
        if state.get(trial, -1) >= epoch - 1 or any(n > trial for n in state):
            time.sleep(rng.uniform(0.0, args.epoch_s))
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        return {"hit": False, "wanted_trial": trial, "wanted_epoch": epoch}
    before = running_epochs(db) or {}
    size = fill(db.parent)
    return {"hit": True, "wanted_trial": trial, "wanted_epoch": epoch, "t_s": round(time.monotonic() - t0, 2),
            "running_at_fill": {str(n): e for n, e in before.items()}, "filler_mb": round(size / 2**20, 1)}


def snapshot(disk: Path) -> dict[int, dict]:
    """Each trial after the stop: state, epochs in Optuna, the val_loss steps its run has."""
    import optuna
    from mlflow import MlflowClient

    from ee_search.records import TrialRecord

    study = optuna.load_study(study_name="faults_disk", storage=f"sqlite:///{disk}/optuna.db")
    client = MlflowClient(f"sqlite:///{disk}/mlflow.db")
    out = {}
    for t in study.get_trials(deepcopy=False):
        run_id = TrialRecord.read(t).mlflow_run_id
        steps = [m.step for m in client.get_metric_history(run_id, "val_loss")] if run_id else []
        out[t.number] = {"state": t.state.name, "epochs": len(TrialRecord.read(t).monitor_history or []),
                         "steps": max(steps, default=0)}
    return out


def verify(disk: Path, n_trials: int, at_stop: dict[int, dict]) -> dict:
    """The issue's counters, from the stores after the second run."""
    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    from ee_search.records import RETRY_HISTORY, TrialRecord
    from ee_search.search.budget import counted_trials

    study = optuna.load_study(study_name="faults_disk", storage=f"sqlite:///{disk}/optuna.db")
    trials, final = study.get_trials(deepcopy=False), counted_trials(study)
    client = MlflowClient(f"sqlite:///{disk}/mlflow.db")
    run_of = {t.number: TrialRecord.read(t).mlflow_run_id for t in trials}
    chains = [[*t.system_attrs.get(RETRY_HISTORY, []), t.number] for t in final]
    runs_per_chain = [len({run_of[n] for n in chain if run_of.get(n)}) for chain in chains]
    exp = client.get_experiment_by_name("faults_disk")
    runs = client.search_runs([exp.experiment_id], "tags.`ee_search.role` = 'trial'", max_results=1000)
    chain_runs = {run_of[c[-1]] for c in chains}
    lost = twice = 0
    for t in final:
        epochs = TrialRecord.read(t).epochs_trained or 0
        run = client.get_run(run_of[t.number])
        for key in (k for k in run.data.metrics if not k.startswith("system/")):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            if steps == [0]:
                continue  # a final metric
            lost += len(set(range(1, epochs + 1)) - set(steps))
            twice += len(steps) - len(set(steps))
    redone = [max(0, max(at_stop[h[-1]]["epochs"], at_stop[h[-1]]["steps"]) - (TrialRecord.read(t).resumed_at_epoch or 0))
              for t in trials if (h := t.system_attrs.get(RETRY_HISTORY)) and h[-1] in at_stop]
    return {"trials_finished": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in final),
            "n_trials": n_trials, "trials_failed": sum(t.state == TrialState.FAIL for t in final),
            "trials_in_storage": {s.name: sum(t.state == s for t in trials) for s in TrialState},
            "completed_epochs_redone": sum(redone), "retries": len(redone), "metric_steps_lost": lost,
            "metric_steps_logged_twice": twice,
            "trials_trained_twice": sum(n > 1 for n in runs_per_chain) + len({r.info.run_id for r in runs} - chain_runs)
            + max(0, len(final) - n_trials),
            "parent_run_finished": client.search_runs([exp.experiment_id], "tags.`ee_search.role` = 'study'")[0].info.status
            == "FINISHED"}


def one_round(index: int, args, work: Path, rng: random.Random) -> dict:
    here = work / f"round{index}"
    disk = here / "disk"
    (disk).mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}m", "tmpfs", str(disk)], check=True)
    try:
        return measure(args, here, disk, rng)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def measure(args, here: Path, disk: Path, rng: random.Random) -> dict:
    (disk / "tmp").mkdir()
    study = here / "study.yaml"
    study.write_text(fault_study("faults_disk", {"dataset": "digits", "val_fraction": 0.2,
                                                 "train_subset": args.train_subset},
                                 width=16, batch_size=32, max_epochs=args.max_epochs, n_trials=args.trials,
                                 seed=rng.randrange(1000)))
    # One thread per process: a 2-core machine shared with other work. TMPDIR: checkpoints on the disk too.
    env = {**os.environ, "TMPDIR": str(disk / "tmp"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = ("run", str(study), "--device", "cpu")
    first = cli(*run, cwd=disk, env=env, log=here / "run1.log", wait=False)
    moment = fill_at_random_moment(first, disk / "optuna.db", rng, args)
    first.wait(timeout=600)
    status = cli("status", str(study), cwd=disk, env=env, log=here / "status.log")
    pareto = cli("pareto", str(study), "--out", str(here / "pareto"), cwd=disk, env=env, log=here / "pareto.log")
    at_stop = snapshot(disk)
    (disk / "filler").unlink(missing_ok=True)
    second = cli(*run, cwd=disk, env=env, log=here / "run2.log")
    logs = {name: (here / f"{name}.log").read_text(errors="replace") for name in ("run1", "status", "pareto", "run2")}
    stop_lines = [line for line in logs["run1"].splitlines() if line.startswith("stopped: ")]
    counters = verify(disk, args.trials, at_stop)
    return {"moment": moment, "exit_codes": {"run1": first.returncode, "status_while_full": status.returncode,
                                              "pareto_while_full": pareto.returncode, "run2": second.returncode},
            "stop_lines": stop_lines, "tracebacks_printed": sum(text.count("Traceback") for text in logs.values()),
            "trials_at_stop": {str(n): s for n, s in at_stop.items()}, **counters}


def round_checks(r: dict) -> dict[str, bool]:
    hit = r["moment"]["hit"]
    completed_at_stop = any(t["state"] == "COMPLETE" for t in r["trials_at_stop"].values())
    return {
        "stopped_in_one_line_exit_75": not hit or (r["exit_codes"]["run1"] == 75 and len(r["stop_lines"]) == 1
                                                   and "free space there" in r["stop_lines"][0]),
        # pareto refuses (exit 2, one line) a study with no completed trial yet, full disk or not.
        "status_and_pareto_work_while_full": r["exit_codes"]["status_while_full"] == 0
        and r["exit_codes"]["pareto_while_full"] == (0 if completed_at_stop else 2),
        "rerun_completes_n_trials": r["exit_codes"]["run2"] == 0 and r["trials_finished"] == r["n_trials"],
        "no_trial_failed": r["trials_failed"] == 0,
        "no_completed_epoch_redone": r["completed_epochs_redone"] == 0,
        "no_metric_lost_or_twice": r["metric_steps_lost"] == 0 and r["metric_steps_logged_twice"] == 0,
        "no_trial_trained_twice": r["trials_trained_twice"] == 0,
        "no_traceback": r["tracebacks_printed"] == 0,
        "parent_run_finished": r["parent_run_finished"],
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6, help="fresh disks, each filled once at a random moment")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--train-subset", type=int, default=512)
    p.add_argument("--epoch-s", type=float, default=1.0, help="how far into an epoch the fill may land (seconds)")
    p.add_argument("--disk-mb", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp dir, removed)")
    p.add_argument("--tiny", action="store_true", help="1 round, 2 trials of 2 epochs (the test suite's smoke run)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    if args.tiny:
        args.rounds, args.trials, args.max_epochs, args.train_subset = 1, 2, 2, 256
    return args


def main() -> int:
    args = parse_args()
    if os.environ.get(NAMESPACE_FLAG) != "1":
        in_namespace()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_json

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="ee-faults-disk-")
    work = (args.keep or Path(tmp.name)).resolve()
    rng = random.Random(args.seed)
    started = time.monotonic()
    rounds = [one_round(i, args, work, rng) for i in range(args.rounds)]
    checks = {name: all(round_checks(r)[name] for r in rounds) for name in round_checks(rounds[0])}
    totals = {key: sum(r[key] for r in rounds) for key in ("trials_finished", "n_trials", "trials_failed",
              "completed_epochs_redone", "metric_steps_lost", "metric_steps_logged_twice", "trials_trained_twice",
              "tracebacks_printed", "retries")}
    totals["fills_that_hit_a_running_study"] = sum(r["moment"]["hit"] for r in rounds)
    ok = all(checks.values()) and totals["fills_that_hit_a_running_study"] >= 1
    payload = {"disk": f"tmpfs of {args.disk_mb} MiB in a user+mount namespace (unshare -rm): stores, artifacts, TMPDIR",
               "rounds": args.rounds, "trials": args.trials, "max_epochs": args.max_epochs, "seed": args.seed,
               "pass": ok, "checks": checks, "totals": totals, "per_round": rounds,
               "wall_s": round(time.monotonic() - started, 1)}
    write_json(args.json, "faults_disk", torch.device("cpu"), False, payload, tiny=args.tiny)
    print(json.dumps({"pass": ok, "checks": checks, "totals": totals}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
