"""Throughput of local worker processes (`ee-search run --workers N`) on the quick start: the whole
study, start to summary, with 1, 2 and 4 workers, alternated and repeated, in fresh stores each time;
and the same through Ray (`ee-search run --ray ADDRESS`) with 1 and 2 workers.

    python benchmarks/workers.py --json benchmarks/results/workers-cpu.json          # full quick start, 3 repeats
    python benchmarks/workers.py --tiny --json /tmp/workers-tiny.json                # a minute: the smoke run
    python benchmarks/workers.py --rows ray1,ray2 --repeats 2 --json /tmp/workers-ray.json   # Ray only

Rows: `1` (one worker, torch's default threads: every core), `1@1thread` (one worker on one thread,
OMP_NUM_THREADS=1), `2` and `4` (two and four workers, the cores split between them, at least one
thread each, search/devices.py). `ray1` and `ray2`: one and two workers as Ray tasks on a Ray head
this script starts on this machine with every core (`--num-cpus`), each worker asking for
cores / workers CPUs (`search.cpus_per_trial`, so Ray sets its threads), on the stores a cluster needs: a
PostgreSQL (pgserver) for Optuna and an `mlflow server` over PostgreSQL; the head and the servers are up
before the first run and are not timed, but each run's driver start, connection and Ray worker start are.
Each repeat runs the rows in a rotated order, so slow drift on a
shared machine falls on every row alike, and the ratios against one worker are taken within a repeat
(benchmarks/_common.py, `paired_ratios`).

Per run: wall seconds of the `ee-search run` command (process start to exit, the parent's and the
workers' imports included), trials per hour, and training images per second (epochs trained, read
from the study, times the training split); and what logging each completed trial's network as an
MLflow LoggedModel cost the trial (seconds, and their share of the trial's time; `--rows 1 --repeats
1` is enough for that). Images per second is the fair measure of throughput:
processes with their own sampler seeds explore other configurations, and a pruned or early-stopped
trial trains fewer epochs, so trials per hour also depends on what the search happened to try.
The dataset is rendered once before any run, into a cache every run shares.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

from ee_search.records import TrialRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TINY_QUICKSTART_SETS, add_tiny_argument, paired_ratios, spread, write_json  # noqa: E402
from _servers import start_mlflow_server, start_postgres, start_ray_head, stop_servers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "quickstart.yaml"
ROWS = {"1": (1, None), "1@1thread": (1, 1), "2": (2, None), "4": (4, None),  # name -> (workers, OMP_NUM_THREADS or default)
        "ray1": (1, None), "ray2": (2, None)}  # through Ray: its own threads per task


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    add_tiny_argument(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (two workers then share the GPU)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="cut the quick start: PATH=VALUE")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which of {', '.join(ROWS)}")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temp dir)")
    args = parser.parse_args()
    if args.tiny:  # one repeat of one epoch on a few hundred images, 1 and 2 workers
        args.repeats, args.rows = 1, "1,2"
        args.sets = [*TINY_QUICKSTART_SETS, "search.n_trials=2", *args.sets]
    return args


def train_images(sets: list[str], data_root: Path) -> int:
    """Render (or load) the quick start's data into the shared cache; the training split's size."""
    from ee_search.config import load_study_file
    from ee_search.data import prepare_data

    config = load_study_file(STUDY, [*sets, f"data.root={data_root}"]).config
    return len(prepare_data(config.data, config.seed).train)


def placement(row: str, work: Path, args, cluster: dict | None) -> tuple[str, str, str, list[str]]:
    """(study name, Optuna storage, tracking URI, flags): fresh SQLite stores in `work` for a local row;
    for a Ray row, a study (and so an MLflow experiment) of its own on the shared servers."""
    workers, _ = ROWS[row]
    if not row.startswith("ray"):
        flags = ["--device", args.device] + (["--set", f"search.trials_per_device={workers}"] if args.device != "cpu" else [])
        return "quickstart", f"sqlite:///{work}/optuna.db", f"sqlite:///{work}/mlflow.db", flags
    name = f"quickstart_{work.name}".replace("-", "_")
    share = ["--set", f"search.gpus_per_trial={1 / workers:g}"] if args.device != "cpu" else \
        ["--set", f"search.cpus_per_trial={max(1, (os.cpu_count() or 1) // workers)}"]
    return name, cluster["storage"], cluster["tracking"], ["--ray", cluster["address"], "--set", f"name={name}", *share]


def run_once(row: str, work: Path, args, data_root: Path, images: int, cluster: dict | None = None) -> dict:
    workers, threads = ROWS[row]
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    name, storage, tracking, flags = placement(row, work, args, cluster)
    command = [sys.executable, "-m", "ee_search.cli", "run", str(STUDY), "--workers", str(workers), "-q",
               "--storage", storage, "--tracking-uri", tracking, "--set", f"data.root={data_root}",
               *[a for s in args.sets for a in ("--set", s)], *flags]
    started = time.perf_counter()
    with open(work / "run.log", "w") as log:
        code = subprocess.run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    epochs = sum(len(TrialRecord.read(t).monitor_history or []) for t in trials)
    states = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return {"exit_code": code, "wall_s": round(wall, 3), "trials": len(trials), "states": states, "epochs": epochs,
            "trials_per_hour": round(len(trials) * 3600 / wall, 2), "images_per_second": round(epochs * images / wall, 2),
            **logged_model_cost(trials)}


def logged_model_cost(trials) -> dict:
    """What logging each completed trial's network as an MLflow LoggedModel cost it (the trial's
    `mlflow_model_seconds`, timed in the worker), against the trial's own wall time (Optuna's start
    to complete)."""
    timed = [(TrialRecord.read(t).mlflow_model_seconds, (t.datetime_complete - t.datetime_start).total_seconds())
             for t in trials if t.state.name == "COMPLETE" and TrialRecord.read(t).mlflow_model_seconds is not None]
    return {"logged_model": {"trials": len(timed), "seconds": spread([m for m, _ in timed]),
                             "trial_seconds": spread([w for _, w in timed]),
                             "share_of_trial": spread([m / w for m, w in timed])}}


def start_cluster(work: Path, servers: list) -> dict:
    """The Ray rows' cluster on this machine: PostgreSQL, an mlflow server over it, a Ray head with every core."""
    if os.geteuid() == 0:  # as root, pgserver runs PostgreSQL as its own user, who must reach work/pg
        work.chmod(0o755)
    pg = start_postgres(work, servers)
    tracking = start_mlflow_server(pg("mlflow"), work, servers)
    return {"storage": pg("optuna"), "tracking": tracking, "address": start_ray_head(os.cpu_count() or 1, servers)}


def summarise(runs: dict[str, list[dict]]) -> tuple[dict, dict]:
    rows = {name: {"workers": ROWS[name][0], "omp_num_threads": ROWS[name][1], "runs": rs,
                   **{k: spread([r[k] for r in rs]) for k in ("wall_s", "trials_per_hour", "images_per_second")}}
            for name, rs in runs.items()}
    scaling = {}
    for base in ("1", "1@1thread", "ray1"):
        if base not in runs:
            continue
        for name in runs:
            if name != base:
                key = f"{name}_vs_{base}"
                scaling[key] = {
                    "images_per_second": paired_ratios([r["images_per_second"] for r in runs[name]],
                                                       [r["images_per_second"] for r in runs[base]]),
                    "wall_time": paired_ratios([r["wall_s"] for r in runs[name]], [r["wall_s"] for r in runs[base]])}
    return rows, scaling


def main() -> int:
    args = parse_args()
    rows = [r.strip() for r in args.rows.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="ee-workers-"))
    data_root = work / "data"
    images = train_images(args.sets, data_root)
    runs: dict[str, list[dict]] = {r: [] for r in rows}
    order, servers = [], []
    try:
        cluster = start_cluster(work, servers) if any(r.startswith("ray") for r in rows) else None
        for repeat in range(args.repeats):
            turn = rows[repeat % len(rows):] + rows[: repeat % len(rows)]
            order.append(turn)
            for row in turn:
                runs[row].append(run_once(row, work / f"r{repeat}-{row}", args, data_root, images, cluster))
                print(f"repeat {repeat + 1}/{args.repeats} {row}: {runs[row][-1]}", flush=True)
    finally:
        stop_servers(servers)
    table, scaling = summarise(runs)
    payload = {"study": str(STUDY.relative_to(ROOT)), "sets": args.sets, "repeats": args.repeats, "order": order,
               "cores": os.cpu_count(), "train_images": images, "rows": table, "scaling": scaling,
               "work": str(work),
               "limits": "Expected, not measured by this record: on a CPU two workers share the memory bandwidth and the last-level cache, and each "
                         "process pays its own start (imports, data load): short studies scale less. One worker "
                         "already uses every core through intra-op threads, so the 2-worker row gains most "
                         "against 1@1thread, little against 1 on a machine that is otherwise idle. The Ray rows run "
                         "on one machine's head with PostgreSQL and an mlflow server: they measure what Ray and the "
                         "shared stores cost against the local rows, not a cluster's scaling across nodes."}
    write_json(args.json, "workers", torch.device(args.device), False, payload, tiny=args.tiny)
    ok = all(r["exit_code"] == 0 for rs in runs.values() for r in rs)
    print({k: v["images_per_second"]["median"] for k, v in scaling.items()})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
