"""Does the early-stopping pruner make the search cheaper without making it worse?

Runs a study (the quickstart by default) twice per sampler seed, with `pruner: none` and with
`pruner: early_stopping`, side by side in one process, and reports for each: total epochs trained
(over every trial, complete or pruned), wall time, trials pruned, and the hypervolume of the
accuracy / avg_exit_depth front of completed trials (reference point: accuracy 0, depth 1).

    python benchmarks/pruning.py --json benchmarks/results/pruning-cpu.json
    python benchmarks/pruning.py --quick --json /tmp/pruning.json      # 1 seed, fewer trials
    python benchmarks/pruning.py --keep runs/ --json ...  # keep the stores; replay them with pruning_replay.py

Goal: at least 30% fewer epochs, with a hypervolume at least 97% of the unpruned one.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import torch

from ee_search.config import load_study_file
from ee_search.data import prepare_data
from ee_search.experiment import resolve_device
from ee_search.pareto import collect_points, hypervolume
from ee_search.search.study import run_study

ROOT = Path(__file__).resolve().parents[1]


def one_run(study_path: Path, pruner: str, sampler_seed: int, workdir: Path, data_root: Path,
            n_trials: int | None, device: str) -> dict:
    overrides = [
        f"search.pruner.type={pruner}",
        f"search.sampler.seed={sampler_seed}",
        f"search.storage=sqlite:///{workdir}/optuna.db",
        f"tracking.uri=sqlite:///{workdir}/mlflow.db",
        f"data.root={data_root}",
        f"device={device}",
    ]
    if n_trials is not None:
        overrides.append(f"search.n_trials={n_trials}")
    loaded = load_study_file(study_path, overrides)
    prepare_data(loaded.config.data, loaded.config.seed)  # render/cache the data outside the timing
    started = time.perf_counter()
    summary = run_study(loaded, resolve_device(device), loaded.config.search.n_trials, None)
    seconds = time.perf_counter() - started
    trials = summary.study.get_trials(deepcopy=False)
    points = collect_points(summary.study)
    return {
        "pruner": pruner,
        "sampler_seed": sampler_seed,
        "trials": len(trials),
        "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "epochs_trained": sum(int(t.user_attrs.get("epochs_trained", 0)) for t in trials),
        "seconds": round(seconds, 2),
        "hypervolume": hypervolume([(p.accuracy, p.avg_exit_depth) for p in points]),
        "front_size": sum(p.on_front for p in points),
        "best_accuracy": max((p.accuracy for p in points), default=None),
        "per_trial": [
            {"number": t.number, "state": t.state.name, "epochs": t.user_attrs.get("epochs_trained"),
             "stop_reason": t.user_attrs.get("stop_reason"), "lr": round(t.params.get("train.lr", float("nan")), 5),
             "values": [round(v, 4) for v in t.values] if t.values else None}
            for t in trials
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9], help="sampler seeds")
    parser.add_argument("--n-trials", type=int, default=None, help="override search.n_trials")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="one seed and 6 trials: a smoke run")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep every run's stores under this folder (for benchmarks/pruning_replay.py)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = args.seeds[:1] if args.quick else args.seeds
    n_trials = 6 if args.quick and args.n_trials is None else args.n_trials

    runs = []
    with tempfile.TemporaryDirectory(prefix="ee-search-bench-pruning-") as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        data_root = Path(tmp) / "data"
        for seed in seeds:
            for pruner in ("none", "early_stopping"):  # same seed back to back: a side-by-side pair
                workdir = Path(tmp) / f"{pruner}-{seed}"
                workdir.mkdir(exist_ok=False)
                record = one_run(args.study, pruner, seed, workdir, data_root, n_trials, args.device)
                runs.append(record)
                print(json.dumps({k: v for k, v in record.items() if k != "per_trial"}), flush=True)

    def mean(pruner: str, key: str) -> float:
        return statistics.fmean(r[key] for r in runs if r["pruner"] == pruner)

    pairs = [(a, b) for a in runs for b in runs
             if a["pruner"] == "none" and b["pruner"] == "early_stopping" and a["sampler_seed"] == b["sampler_seed"]]
    summary = {
        "epochs_none_mean": mean("none", "epochs_trained"),
        "epochs_pruned_mean": mean("early_stopping", "epochs_trained"),
        "epoch_reduction": 1 - mean("early_stopping", "epochs_trained") / mean("none", "epochs_trained"),
        "hypervolume_none_mean": mean("none", "hypervolume"),
        "hypervolume_pruned_mean": mean("early_stopping", "hypervolume"),
        "hypervolume_ratio": mean("early_stopping", "hypervolume") / mean("none", "hypervolume"),
        "per_seed": [
            {"sampler_seed": a["sampler_seed"],
             "epoch_reduction": 1 - b["epochs_trained"] / a["epochs_trained"],
             "hypervolume_ratio": b["hypervolume"] / a["hypervolume"] if a["hypervolume"] else None}
            for a, b in pairs
        ],
        "seconds_none_total": sum(r["seconds"] for r in runs if r["pruner"] == "none"),
        "seconds_pruned_total": sum(r["seconds"] for r in runs if r["pruner"] == "early_stopping"),
    }
    summary["goal_epochs"] = summary["epoch_reduction"] >= 0.30
    summary["goal_hypervolume"] = summary["hypervolume_ratio"] >= 0.97
    result = {
        "benchmark": "pruning",
        "study": str(args.study.relative_to(ROOT) if args.study.is_relative_to(ROOT) else args.study),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "quick": args.quick,
        "n_trials_override": n_trials,
        "reference_point": {"accuracy": 0.0, "avg_exit_depth": 1.0},
        "summary": summary,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
