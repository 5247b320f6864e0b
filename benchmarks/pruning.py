"""Does the early-stopping pruner make the search cheaper without making it worse?

Runs a study (the quickstart by default) twice per sampler seed, with `pruner: none` and with
`pruner: early_stopping`, side by side in one process, and reports for each: total epochs trained
(over every trial, complete or pruned), wall time, trials pruned, and the hypervolume of the dense
accuracy / avg_exit_depth front of completed trials (reference point: accuracy 0, depth 1).

The two runs of a seed alternate their order (`none` first on the 1st, 3rd, ... seed, `early_stopping`
first on the others), so neither always runs on a cold or a warm process. Wall time depends on the
order; epochs and hypervolume only through nondeterminism in training. Per seed: epoch reduction, hypervolume ratio and wall-time
ratio of the pair; then their median, min and max over seeds, next to the pooled figures
(epoch_reduction = 1 - sum of pruned epochs / sum of unpruned ones).

    python benchmarks/pruning.py --json benchmarks/results/pruning-cpu.json    # sampler seeds 7-11
    python benchmarks/pruning.py --seeds 7 8 9 --json ...   # the first results file's three seeds
    python benchmarks/pruning.py --quick --json /tmp/pruning.json      # 1 seed, 6 trials
    python benchmarks/pruning.py --tiny --json /tmp/pruning.json       # 1 seed, 2 trials of 1 epoch, 240 images
    python benchmarks/pruning.py --trials 4 --max-epochs 4 --json ...  # a shorter run
    python benchmarks/pruning.py --keep runs/ --json ...  # keep every run's stores

Goal: at least 50% fewer epochs, with a dense front test hypervolume at least 0.99x the unpruned one's
(the front chosen on val, as `ee-search pareto --split test` reports it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import torch

from ee_search.config import load_study_file
from ee_search.data import prepare_data
from ee_search.device import resolve_device
from ee_search.pareto import collect_operating_points, collect_points, front, front_hypervolume, hypervolume
from ee_search.pareto_export import add_test_metrics
from ee_search.records import TrialRecord
from ee_search.search.study import run_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TINY_QUICKSTART_SETS, add_tiny_argument, spread

ROOT = Path(__file__).resolve().parents[1]


def one_run(study_path: Path, pruner: str, sampler_seed: int, workdir: Path, data_root: Path,
            n_trials: int | None, device: str, max_epochs: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    overrides = [
        *extra,
        f"search.pruner.type={pruner}",
        f"search.sampler.seed={sampler_seed}",
        f"search.storage=sqlite:///{workdir}/optuna.db",
        f"tracking.uri=sqlite:///{workdir}/mlflow.db",
        f"data.root={data_root}",
        f"device={device}",
    ]
    if n_trials is not None:
        overrides.append(f"search.n_trials={n_trials}")
    if max_epochs is not None:
        overrides.append(f"train.max_epochs={max_epochs}")
    loaded = load_study_file(study_path, overrides)
    prepare_data(loaded.config.data, loaded.config.seed)  # render/cache the data outside the timing
    started = time.perf_counter()
    summary = run_study(loaded, resolve_device(device), loaded.config.search.n_trials, None)
    seconds = time.perf_counter() - started
    trials = summary.study.get_trials(deepcopy=False)
    points = collect_points(summary.study)  # each trial at its own sampled thresholds
    dense = collect_operating_points(summary.study)  # each trial's whole curve (docs/design.md §4)
    chosen = front(dense)  # chosen on val, as `ee-search pareto` does; then reported on test
    add_test_metrics(loaded, summary.study, chosen)
    return {
        "pruner": pruner,
        "sampler_seed": sampler_seed,
        "trials": len(trials),
        "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "epochs_trained": sum(int(TrialRecord.read(t).epochs_trained or 0) for t in trials),
        "seconds": round(seconds, 2),
        # The dense front is what a study delivers now; the sampled one is kept for comparison with
        # older result files (and is all there is when thresholds are searched as objectives).
        "hypervolume": front_hypervolume(dense),
        "test_hypervolume": hypervolume([(p.test["accuracy"], p.test["avg_exit_depth"]) for p in chosen]),
        "sampled_hypervolume": hypervolume([(p.accuracy, p.avg_exit_depth) for p in points]),
        "front_size": sum(p.on_front for p in points),
        "best_accuracy": max((p.accuracy for p in points), default=None),
        "per_trial": [
            {"number": t.number, "state": t.state.name, "epochs": TrialRecord.read(t).epochs_trained,
             "stop_reason": TrialRecord.read(t).stop_reason, "lr": round(t.params.get("train.lr", float("nan")), 5),
             "values": [round(v, 4) for v in t.values] if t.values else None}
            for t in trials
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "quickstart.yaml")
    # five seeds: fewer make the min-max spread over seeds say little
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9, 10, 11], help="sampler seeds")
    parser.add_argument("--trials", "--n-trials", dest="n_trials", type=int, default=None, help="override search.n_trials")
    parser.add_argument("--max-epochs", type=int, default=None, help="override train.max_epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="one seed and 6 trials: a smoke run")
    add_tiny_argument(parser)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep every run's stores under this folder")
    parser.add_argument("--from-records", type=Path, default=None,
                        help="rebuild --json from the one-line run records an earlier (interrupted) run printed")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = args.seeds[:1] if args.quick or args.tiny else args.seeds
    n_trials = 6 if args.quick and args.n_trials is None else args.n_trials
    if args.tiny:
        n_trials = args.n_trials or 2
    if args.from_records is not None:
        runs = [json.loads(line) for line in args.from_records.read_text().splitlines()
                if line.startswith('{"pruner"')]
        done = {(r["sampler_seed"]) for r in runs if sum(q["sampler_seed"] == r["sampler_seed"] for q in runs) == 2}
        write(args, [r for r in runs if r["sampler_seed"] in done], n_trials, partial=set(done) != set(seeds))
        return

    write(args, run_pairs(args, seeds, n_trials), n_trials, partial=False)


def run_pairs(args, seeds: list[int], n_trials: int | None) -> list[dict]:
    """Each seed's pair of runs (without and with the pruner, in alternating order), the JSON rewritten
    after each pair."""
    extra = TINY_QUICKSTART_SETS if args.tiny else ()
    runs = []
    with tempfile.TemporaryDirectory(prefix="ee-search-bench-pruning-") as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        data_root = Path(tmp) / "data"
        for i, seed in enumerate(seeds):
            # same seed back to back: a side-by-side pair, in alternating order (see the docstring)
            order = ("none", "early_stopping") if i % 2 == 0 else ("early_stopping", "none")
            for position, pruner in enumerate(order):
                workdir = Path(tmp) / f"{pruner}-{seed}"
                workdir.mkdir(exist_ok=False)
                record = one_run(args.study, pruner, seed, workdir, data_root, n_trials, args.device, args.max_epochs,
                                 extra)
                record["position_in_pair"] = position
                runs.append(record)
                print(json.dumps({k: v for k, v in record.items() if k != "per_trial"}), flush=True)
            write(args, runs, n_trials, partial=True)
    return runs


def summarize(runs: list[dict]) -> dict:
    def mean(pruner: str, key: str) -> float:
        return statistics.fmean(r[key] for r in runs if r["pruner"] == pruner)

    pairs = [(a, b) for a in runs for b in runs
             if a["pruner"] == "none" and b["pruner"] == "early_stopping" and a["sampler_seed"] == b["sampler_seed"]]
    per_seed = [
        {"sampler_seed": a["sampler_seed"],
         "order": "none first" if a["position_in_pair"] == 0 else "early_stopping first",
         "epochs_none": a["epochs_trained"], "epochs_pruned": b["epochs_trained"],
         "epoch_reduction": 1 - b["epochs_trained"] / a["epochs_trained"],
         "hypervolume_none": a["hypervolume"], "hypervolume_pruned": b["hypervolume"],
         "hypervolume_ratio": b["hypervolume"] / a["hypervolume"] if a["hypervolume"] else None,
         "test_hypervolume_none": a["test_hypervolume"], "test_hypervolume_pruned": b["test_hypervolume"],
         "test_hypervolume_ratio": b["test_hypervolume"] / a["test_hypervolume"] if a["test_hypervolume"] else None,
         "seconds_ratio": b["seconds"] / a["seconds"]}
        for a, b in pairs
    ]
    summary = {
        "epochs_none_mean": mean("none", "epochs_trained"),
        "epochs_pruned_mean": mean("early_stopping", "epochs_trained"),
        "epoch_reduction": 1 - mean("early_stopping", "epochs_trained") / mean("none", "epochs_trained"),
        "hypervolume_none_mean": mean("none", "hypervolume"),
        "hypervolume_pruned_mean": mean("early_stopping", "hypervolume"),
        "hypervolume_ratio": mean("early_stopping", "hypervolume") / mean("none", "hypervolume"),
        "test_hypervolume_none_mean": mean("none", "test_hypervolume"),
        "test_hypervolume_pruned_mean": mean("early_stopping", "test_hypervolume"),
        "test_hypervolume_ratio": mean("early_stopping", "test_hypervolume") / mean("none", "test_hypervolume"),
        "per_seed": per_seed,
        # median, min and max over seeds of the paired figures above
        "epoch_reduction_spread": spread([p["epoch_reduction"] for p in per_seed]),
        "hypervolume_ratio_spread": spread([p["hypervolume_ratio"] for p in per_seed]),
        "test_hypervolume_ratio_spread": spread([p["test_hypervolume_ratio"] for p in per_seed]),
        "seconds_none_spread": spread([r["seconds"] for r in runs if r["pruner"] == "none"]),
        "seconds_pruned_spread": spread([r["seconds"] for r in runs if r["pruner"] == "early_stopping"]),
        "seconds_ratio_spread": spread([p["seconds_ratio"] for p in per_seed]),
        "seconds_none_total": sum(r["seconds"] for r in runs if r["pruner"] == "none"),
        "seconds_pruned_total": sum(r["seconds"] for r in runs if r["pruner"] == "early_stopping"),
    }
    # Issue 21's live confirmation: at least 50% fewer epochs, a dense test HV at least 0.99x.
    summary["goal_epochs"] = summary["epoch_reduction"] >= 0.50
    summary["goal_test_hypervolume"] = summary["test_hypervolume_ratio"] >= 0.99
    return summary


def write(args, runs: list[dict], n_trials: int | None, partial: bool) -> None:
    summary = summarize(runs)
    result = {
        "benchmark": "pruning",
        "study": str(args.study.relative_to(ROOT) if args.study.is_relative_to(ROOT) else args.study),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "quick": args.quick,
        "tiny": args.tiny,
        # partial: written after each finished pair, so an interrupted benchmark keeps what it measured
        "partial": partial,
        "seeds_done": sorted({r["sampler_seed"] for r in runs}),
        "load_average_1_5_15min_at_write": [round(x, 2) for x in os.getloadavg()],
        "n_trials_override": n_trials,
        "max_epochs_override": args.max_epochs,
        "reference_point": {"accuracy": 0.0, "avg_exit_depth": 1.0},
        "summary": summary,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not partial:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
