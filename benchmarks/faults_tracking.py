"""Tracking-outage proof (docs/design.md §5, "Tracking outages"): the quick start runs against a real
`mlflow server`, which this driver stops (SIGKILL) at a random moment of the training and starts again
on the same port and store after `--outage-s` seconds; afterwards it checks what the outage cost.

    python benchmarks/faults_tracking.py --json benchmarks/results/faults-tracking-cpu.json   # 5-minute outage
    python benchmarks/faults_tracking.py --quick --json /tmp/faults-tracking-quick.json      # 2 short trials, 20 s
    python benchmarks/faults_tracking.py --tiny --json /tmp/faults-tracking-tiny.json        # 1 trial, 5 s (smoke test)

Reported (goal in brackets): trials finished against n_trials [equal], epochs redone [0], metrics lost
[0] (per-epoch metric steps missing from a run, against 1..epochs_trained), duplicate steps [0],
trials trained twice [0] (a retry that started over from epoch 0), runs left RUNNING [0], tracebacks
printed [0], and the exit code [0]. Exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from mlflow import MlflowClient

from ee_search.records import TrialRecord
from ee_search.search.budget import counted_trials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402
from _servers import start_mlflow_server, stop_servers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^trial\s+(\d+)\s+epoch (\d+)/")
EPOCH_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_avg_exit_depth", "lr")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="2 trials of 3 epochs, a 20 s outage")
    parser.add_argument("--tiny", action="store_true", help="the test suite's smoke run: 1 trial of 3 epochs, 5 s")
    parser.add_argument("--outage-s", type=float, default=None, help="default 300 (quick: 20, tiny: 5)")
    parser.add_argument("--seed", type=int, default=0, help="draws the moment of the outage")
    args = parser.parse_args()
    short = args.quick or args.tiny
    outage_s = args.outage_s or (5.0 if args.tiny else 20.0 if args.quick else 300.0)
    n_trials = 1 if args.tiny else 2 if args.quick else 12  # 12: the quick start's search.n_trials
    sets = ["--n-trials", str(n_trials), "--set", "train.max_epochs=3"] if short else []
    work = Path(tempfile.mkdtemp(prefix="ee-search-faults-tracking-"))
    servers: list = []
    try:
        result = drive(work, servers, sets, outage_s, random.Random(args.seed))
        result["n_trials"] = n_trials
    finally:
        stop_servers(servers)
    result["checks"] = checks(result)
    payload = {"study": "studies/quickstart.yaml" + (f" ({n_trials} trial(s), 3 epochs)" if short else ""),
               "outage_s": outage_s, **result}
    write_json(args.json, "faults_tracking", torch.device("cpu"), args.quick, payload, tiny=args.tiny)
    print(json.dumps({k: result[k] for k in ("checks", "trials_finished", "n_trials", "epochs_redone",
                                               "metrics_lost", "tracebacks_printed")}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(result["checks"].values()) else 1


def drive(work: Path, servers: list, sets: list[str], outage_s: float, rng: random.Random) -> dict:
    """Run the study; stop the server at a random moment after its first epoch, start it again."""
    backend = f"sqlite:///{work}/server.db"
    uri = start_mlflow_server(backend, work, servers)
    port = int(uri.rsplit(":", 1)[1])
    shutil.copy(ROOT / "studies" / "quickstart.yaml", work / "quickstart.yaml")
    out = open(work / "run.log", "w+")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ee_search.cli", "run", "quickstart.yaml", "--tracking-uri", uri,
                             "--device", "cpu", "--set", f"data.root={ROOT / 'data'}", *sets], cwd=work,
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    while not EPOCH_LINE.search(_text(out)) and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(rng.uniform(0, 5 if sets else 60))  # a random moment of the training
    down_at = time.monotonic() - started
    _, server = servers.pop()
    os.killpg(server.pid, signal.SIGKILL)  # the server is gone, mid-request or not
    server.wait()
    time.sleep(outage_s)
    start_mlflow_server(backend, work, servers, port=port)
    up_at = time.monotonic() - started
    proc.wait()
    text = _text(out)
    return {"exit_code": proc.returncode, "seconds": round(time.monotonic() - started, 1),
            "server_down_at_s": round(down_at, 1), "server_up_at_s": round(up_at, 1),
            "tracebacks_printed": text.count("Traceback"), "output_tail": text.strip().splitlines()[-3:],
            **measure(work, uri, text)}


def measure(work: Path, uri: str, text: str) -> dict:
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{work}/optuna.db")
    client = MlflowClient(uri)
    trials = study.get_trials(deepcopy=False)
    run_of = {t.number: TrialRecord.read(t).mlflow_run_id for t in trials}
    lines = [(run_of.get(int(m[1])), int(m[2])) for m in map(EPOCH_LINE.match, text.splitlines()) if m]
    lost = duplicates = 0
    finished = [t for t in trials if t.state.is_finished() and TrialRecord.read(t).epochs_trained is not None]
    for t in finished:
        expected = set(range(1, int(TrialRecord.read(t).epochs_trained) + 1))
        for key in EPOCH_KEYS:
            steps = [m.step for m in client.get_metric_history(run_of[t.number], key)]
            lost += len(expected - set(steps))
            duplicates += len(steps) - len(set(steps))
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    return {"trials_finished": len(counted_trials(study)),
            "trial_states": [t.state.name for t in trials], "epochs_redone": len(lines) - len(set(lines)),
            "metrics_lost": lost, "duplicate_steps": duplicates,
            "trials_trained_twice": sum(1 for t in trials if TrialRecord.read(t).resumed_at_epoch == 0),
            "runs_left_running": sum(1 for r in runs if r.info.status == "RUNNING")}


def checks(r: dict) -> dict[str, bool]:
    return {"exit_code_0": r["exit_code"] == 0, "n_trials_finished": r["trials_finished"] == r["n_trials"],
            "no_epoch_redone": r["epochs_redone"] == 0, "no_metric_lost": r["metrics_lost"] == 0,
            "no_duplicate_step": r["duplicate_steps"] == 0, "no_trial_trained_twice": r["trials_trained_twice"] == 0,
            "no_run_left_running": r["runs_left_running"] == 0, "no_traceback": r["tracebacks_printed"] == 0}


def _text(out) -> str:
    out.flush()
    return Path(out.name).read_text(errors="replace")


if __name__ == "__main__":
    sys.exit(main())
