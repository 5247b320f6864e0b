"""Several `ee-search run` workers on one device, as a user shares a GPU today: one study, one journal
storage, one MLflow store, each worker a process of its own. Measures the study's wall time, trials
per hour and training images per second, and, where `nvidia-smi` exists, samples the GPU's
utilisation and memory every half second while the workers run.

    python benchmarks/gpu_workers.py --device cuda --json OUT.json           # 4 workers, 8 trials of 3 epochs, SVHN's size
    python benchmarks/gpu_workers.py --device cpu --tiny --json OUT.json     # seconds: the smoke run

The data are the project's synthetic house numbers at SVHN's size (73,257 train, 26,032 test),
rendered once by this driver before any worker starts, so the workers do not all render them.
Worker 0 starts alone and creates the storage, the study and the MLflow experiment: MLflow 3 races
when several processes create a fresh database (mlflow#19943).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ee_search.records import TrialRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_tiny_argument, median, resolve, write_json  # noqa: E402

STUDY = """\
name: gpu_workers
seed: 3
data:
  dataset: synthetic_svhn
  root: data
  val_fraction: 0.1
  augment: {{crop: 28, rotation: 30}}
  synthetic: {{train_size: {train_size}, test_size: {test_size}}}
model: {{name: {model}, width: {width}}}
train:
  max_epochs: {epochs}
  lr: 0.05
  batch_size: 256
  early_stopping: {{monitor: val_loss, patience: 100, tol: 0.0}}
exits: {{criterion: max_softmax, thresholds: {thresholds}}}
search:
  n_trials: {trials}
  objectives: [curve_hypervolume]
  sampler: {{type: random, seed: 3}}
  pruner: {{type: none}}
  storage: "journal:optuna.journal"
  space:
    train.lr: {{type: float, low: 0.01, high: 0.1, log: true}}
    train.averaging.method: {{type: categorical, choices: [none, ema]}}
tracking: {{uri: "sqlite:///mlflow.db"}}
"""
SMI_FIELDS = "timestamp,utilization.gpu,memory.used,power.draw"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    add_tiny_argument(parser)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-wall", type=float, default=300.0, help="seconds before the workers are stopped")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a fresh temp dir)")
    return parser.parse_args()


def sizes(args) -> dict:
    if args.tiny:
        return {"train_size": 256, "test_size": 128, "model": "branchy_lenet", "width": 8,
                "epochs": 1, "trials": 2, "thresholds": [0.9]}
    return {"train_size": 73_257, "test_size": 26_032, "model": "ee_resnet", "width": 64,
            "epochs": args.epochs, "trials": args.trials, "thresholds": [0.9, 0.9]}


def start_worker(slot: int, work: Path, device: str, env: dict) -> subprocess.Popen:
    log = open(work / f"worker{slot}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", "study.yaml", "--device", device, "-q"],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_smi(work: Path) -> subprocess.Popen | None:
    """nvidia-smi's own sampler (every 500 ms) into a CSV; None where there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits", "-lms", "500"],
                            stdout=open(work / "nvidia-smi.csv", "w"), stderr=subprocess.DEVNULL)


def wait_for_study(worker: subprocess.Popen, work: Path) -> None:
    """Until worker 0 has created the study and started its first trial (the stores exist then)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    while worker.poll() is None:
        time.sleep(0.5)
        if not (work / "optuna.journal").exists():
            continue
        storage = JournalStorage(JournalFileBackend(str(work / "optuna.journal")))
        if any(s.study_name == "gpu_workers" for s in storage.get_all_studies()):
            if optuna.load_study(study_name="gpu_workers", storage=storage).get_trials(deepcopy=False):
                return
    if worker.returncode == 0:
        return  # it ran the whole study alone (a tiny one)
    raise RuntimeError(f"worker 0 exited before its first trial: see {work / 'worker0.log'}")


def run_workers(args, work: Path, device: str) -> tuple[float, list[int]]:
    # Each worker gets an equal share of the host's cores for its intra-op threads.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    started = time.monotonic()
    procs = [start_worker(0, work, device, env)]
    wait_for_study(procs[0], work)
    procs += [start_worker(slot, work, device, env) for slot in range(1, args.workers)]
    deadline = started + args.max_wall
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.terminate()  # SIGTERM: each worker saves its trial as resumable (docs/design.md §9)
            p.wait(timeout=60)
    return time.monotonic() - started, [p.returncode for p in procs]


def gpu_samples(work: Path) -> dict | None:
    path = work / "nvidia-smi.csv"
    if not path.exists():
        return None
    rows = [r for r in csv.reader(path.open()) if len(r) == 4]
    util = [float(r[1]) for r in rows if r[1].strip().replace(".", "", 1).isdigit()]
    memory = [float(r[2]) for r in rows if r[2].strip().replace(".", "", 1).isdigit()]
    return {"samples": len(rows), "utilization_pct_median": median(util) if util else None,
            "utilization_pct_max": max(util, default=None), "memory_used_mib_max": max(memory, default=None)}


def study_summary(work: Path, train_images: int) -> dict:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(work / "optuna.journal")))
    trials = optuna.load_study(study_name="gpu_workers", storage=storage).get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    epochs = sum(len(TrialRecord.read(t).monitor_history or []) for t in trials)
    return {"trials": len(trials), "states": {k: v for k, v in states.items() if v}, "epochs": epochs,
            "train_images_seen": epochs * train_images}


def main() -> int:
    args = parse_args()
    device = resolve(args.device)
    size = sizes(args)
    work = args.work or Path(__import__("tempfile").mkdtemp(prefix="gpu-workers-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "study.yaml").write_text(STUDY.format(**size))
    from ee_search.data.sources import load_synthetic_svhn

    rendered = time.monotonic()
    load_synthetic_svhn(str(work / "data"), 3, size["train_size"], size["test_size"])
    render_s = time.monotonic() - rendered
    smi = start_smi(work)
    try:
        wall_s, exit_codes = run_workers(args, work, device.type)
    finally:
        if smi is not None:
            smi.terminate()
            smi.wait()
    train_images = round(size["train_size"] * 0.9)  # val_fraction 0.1 is carved from the train split
    summary = study_summary(work, train_images)
    payload = {"workers": args.workers, "sizes": size, "work": str(work), "render_seconds": round(render_s, 1),
               "wall_seconds": round(wall_s, 1), "exit_codes": exit_codes, **summary,
               "trials_per_hour": round(summary["states"].get("COMPLETE", 0) * 3600 / wall_s, 1),
               "train_images_per_second": round(summary["train_images_seen"] / wall_s, 1),
               "gpu": gpu_samples(work)}
    write_json(args.json, "gpu_workers", device, False, payload, tiny=args.tiny)
    print(f"{args.workers} workers: {summary['states']} in {wall_s:.0f} s, "
          f"{payload['train_images_per_second']} train img/s; GPU {payload['gpu']}")
    return 0 if summary["states"].get("COMPLETE", 0) == size["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
