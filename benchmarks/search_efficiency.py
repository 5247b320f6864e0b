"""Which search finds the best dense front per epoch trained? An anytime curve per configuration:
the dense front's TEST hypervolume (front chosen on validation, its points evaluated on the held-out
test split at exactly their thresholds) against cumulative epochs trained, after every trial.

Configurations, on the quickstart's data and model (studies/quickstart.yaml):
  a  today's default: objectives accuracy & avg_exit_depth, thresholds searched, early-stopping pruner
  b  curve_hypervolume as the single objective, thresholds left to the dense front, monitor
     val_curve_hypervolume, our early-stopping pruner
  c  b without pruning
  d  random search over (a)'s space, no pruning
Each sampler seed runs all four, in an order rotated from seed to seed (a b c d, b c d a, ...), so
no configuration always runs first or last on a machine that warms up or slows down.

Goals (issue 9): (b) reaches (c)'s final test hypervolume in >= 40% fewer epochs; the best final
dense-front test hypervolume is >= 1.5x that of (a)'s sampled front (the trials at their own
thresholds) for the same number of trials. Reported per seed, with median and min-max.

    python benchmarks/search_efficiency.py --json benchmarks/results/search-efficiency-cpu.json
    python benchmarks/search_efficiency.py --quick --json /tmp/se.json     # 1 seed, 4 trials, 3 epochs
    python benchmarks/search_efficiency.py --tiny --json /tmp/se.json      # 1 seed, 1 trial of 1 epoch, 240 images
    ... --continue   # after an interruption: keep the runs already in --json, run the missing ones
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TINY_QUICKSTART_SETS, add_tiny_argument, spread, write_json

from ee_search.config import load_study_file
from ee_search.data import prepare_data
from ee_search.exits import evaluate, front_indices, hypervolume
from ee_search.checkpoints import checkpoint_logits
from ee_search.device import resolve_device
from ee_search.search import run_study, values_from_params
from ee_search.records import BEST_CHECKPOINT, TrialRecord, load_best_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SPACE = ("train.lr: {type: float, low: 0.003, high: 0.3, log: true}, "
         "train.momentum: {type: float, low: 0.5, high: 0.95}, "
         "train.batch_size: {type: categorical, choices: [64, 128]}, "
         "train.averaging.method: {type: categorical, choices: [none, ema]}, "
         "train.averaging.decay: {type: float, low: 0.9, high: 0.999, when: {train.averaging.method: [ema]}}")
THRESHOLDS = "exits.thresholds: {type: float, low: 0.3, high: 0.99, per_item: true}"
# (a) is the quick start as it was before this benchmark (two objectives, thresholds searched, the
# final exit's accuracy as the early-stopping monitor); (b) is the quick start now. Both are spelled
# out, so the comparison does not change when studies/quickstart.yaml does.
A = ["search.objectives=[accuracy, avg_exit_depth]", f"search.space={{{SPACE}, {THRESHOLDS}}}",
     "train.early_stopping.monitor=val_accuracy_exit_3", "train.early_stopping.tol=0.01"]
CURVE = ["search.objectives=[curve_hypervolume]", f"search.space={{{SPACE}}}",
         "train.early_stopping.monitor=val_curve_hypervolume", "train.early_stopping.tol=0.005"]
CONFIGS = {
    "a": A,
    "b": CURVE,
    "c": [*CURVE, "search.pruner.type=none"],
    "d": [*A, "search.sampler.type=random", "search.sampler.options={}", "search.pruner.type=none"],
}


def one_run(name: str, seed: int, workdir: Path, data_root: Path, n_trials: int, max_epochs: int | None,
            extra: tuple[str, ...] = ()) -> dict:
    overrides = [*extra, *CONFIGS[name], f"search.sampler.seed={seed}", f"search.n_trials={n_trials}",
                 f"search.storage=sqlite:///{workdir}/optuna.db", f"tracking.uri=sqlite:///{workdir}/mlflow.db",
                 f"data.root={data_root}", "device=cpu"]
    if max_epochs is not None:
        overrides.append(f"train.max_epochs={max_epochs}")
    loaded = load_study_file(ROOT / "studies" / "quickstart.yaml", overrides)
    prepare_data(loaded.config.data, loaded.config.seed)  # render/cache outside the timing
    started = time.perf_counter()
    summary = run_study(loaded, resolve_device("cpu"), n_trials, None)
    seconds = time.perf_counter() - started
    return {"config": name, "seed": seed, "seconds": seconds, **anytime(loaded, summary.study)}


def anytime(loaded, study: optuna.Study) -> dict:
    """After each trial (in number order): cumulative epochs, the dense front on validation and its
    test hypervolume, and the sampled front's test hypervolume."""
    from mlflow import MlflowClient

    client = MlflowClient(loaded.config.tracking.uri)
    epochs = 0
    pool, sampled, curve = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            record = TrialRecord.read(t)
            epochs += int(record.epochs_trained or 0)
            if t.state.name == "COMPLETE" and record.operating_points is not None:
                config = loaded.with_values(values_from_params(loaded.config, t.params))
                payload = load_best_checkpoint(client.download_artifacts(record.mlflow_run_id, BEST_CHECKPOINT, tmp))
                logits, costs = checkpoint_logits(payload, config, "test", torch.device("cpu"))
                criterion = payload["metadata"]["criterion"]

                def on_test(thresholds, logits=logits, costs=costs, criterion=criterion):
                    o = evaluate(logits.logits, logits.labels, thresholds, criterion, costs.relative)
                    return o.accuracy, o.avg_exit_depth

                pool += [(p.accuracy, p.avg_exit_depth, on_test(p.thresholds)) for p in record.points()]
                sampled.append((record.accuracy, record.avg_exit_depth, on_test(record.thresholds)))
            curve.append({"trial": t.number, "state": t.state.name, "cumulative_epochs": epochs,
                          **_fronts(pool, sampled)})
    return {"trials": len(curve), "epochs": epochs, "anytime": curve, "final": curve[-1] if curve else {}}


def _fronts(pool: list, sampled: list) -> dict:
    import numpy as np

    out = {"dense_val_hv": 0.0, "dense_test_hv": 0.0, "dense_points": 0, "sampled_val_hv": 0.0, "sampled_test_hv": 0.0}
    if pool:
        keep = front_indices(np.array([p[0] for p in pool]), np.array([p[1] for p in pool]))
        chosen = [pool[i] for i in keep]  # chosen on validation ...
        out["dense_val_hv"] = hypervolume([(a, d) for a, d, _ in chosen])
        out["dense_test_hv"] = hypervolume([test for _, _, test in chosen])  # ... measured on test
        out["dense_points"] = len(chosen)
    if sampled:
        mask = front_indices(np.array([p[0] for p in sampled]), np.array([p[1] for p in sampled]))
        out["sampled_val_hv"] = hypervolume([(sampled[i][0], sampled[i][1]) for i in mask])
        out["sampled_test_hv"] = hypervolume([sampled[i][2] for i in mask])
    return out


def epochs_to_reach(run: dict, level: float) -> int | None:
    for row in run["anytime"]:
        if row["dense_test_hv"] >= level:
            return row["cumulative_epochs"]
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=None, help="cap train.max_epochs (default: the quickstart's 15)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 4 trials, 3 epochs: checks the script")
    add_tiny_argument(parser)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="keep the runs already in --json (same trials and epochs) and run only the missing ones")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.max_epochs = args.seeds[:1], 4, 3
    if args.tiny:
        args.seeds, args.trials, args.max_epochs = args.seeds[:1], 1, 1
    return args


def earlier_runs(args) -> list[dict]:
    """With --continue, the runs an interrupted benchmark already wrote to --json (same trials and epochs)."""
    if not (args.resume and args.json and args.json.exists()):
        return []
    import json

    before = json.loads(args.json.read_text())
    if (before.get("trials"), before.get("max_epochs")) != (args.trials, args.max_epochs):
        return []
    return [r for r in before["runs"] if r["seed"] in args.seeds]


def record(args, payload: dict) -> None:
    if args.json:
        write_json(args.json, "search_efficiency", torch.device("cpu"), args.quick,
                   {"seeds": args.seeds, "trials": args.trials, "max_epochs": args.max_epochs, **payload}, tiny=args.tiny)


def run_all(args, runs: list[dict]) -> list[dict]:
    """Every (configuration, seed) not yet in `runs`, each seed's configurations in a rotated order."""
    data_root = Path(tempfile.mkdtemp(prefix="ee-search-bench-data-"))
    extra = TINY_QUICKSTART_SETS if args.tiny else ()
    done = {(r["config"], r["seed"]) for r in runs}
    names = list(CONFIGS)
    for i, seed in enumerate(args.seeds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            if (name, seed) in done:
                continue
            with tempfile.TemporaryDirectory(prefix=f"ee-search-se-{name}-{seed}-") as workdir:
                run = one_run(name, seed, Path(workdir), data_root, args.trials, args.max_epochs, extra)
            runs.append(run)
            f = run["final"]
            print(f"seed {seed} config {name}: {run['epochs']} epochs, {run['seconds']:.0f} s; dense front "
                  f"{f['dense_points']} points, test hv {f['dense_test_hv']:.4f} (val {f['dense_val_hv']:.4f}); "
                  f"sampled front test hv {f['sampled_test_hv']:.4f}", flush=True)
            record(args, {"partial": True, "runs": runs})  # after every run: an interruption keeps what it measured
    return runs


def summarize(runs: list[dict], seeds: list[int]) -> dict:
    names = list(CONFIGS)
    by = {(r["config"], r["seed"]): r for r in runs}
    savings, ratios = [], []
    for seed in seeds:
        b, c, a = by[("b", seed)], by[("c", seed)], by[("a", seed)]
        reached = epochs_to_reach(b, c["final"]["dense_test_hv"])
        savings.append(None if reached is None else 1.0 - reached / c["epochs"])
        best = max(by[(n, seed)]["final"]["dense_test_hv"] for n in names)
        base = a["final"]["sampled_test_hv"]
        ratios.append(best / base if base > 0 else None)
    return {
        "per_config": {n: {k: spread([by[(n, s)]["final"][k] for s in seeds])
                           for k in ("dense_test_hv", "dense_val_hv", "sampled_test_hv", "dense_points")}
                       | {"epochs": spread([by[(n, s)]["epochs"] for s in seeds])} for n in names},
        "b_epochs_saved_reaching_c_final_test_hv": spread(savings),
        "best_dense_test_hv_over_a_sampled_test_hv": spread(ratios),
        "goals": {"epochs_saved": 0.40, "hv_ratio": 1.5},
    }


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    runs = run_all(args, earlier_runs(args))
    summary = summarize(runs, args.seeds)
    print(f"(b) vs (c), epochs saved at equal test hv: {summary['b_epochs_saved_reaching_c_final_test_hv']}")
    print(f"best dense / (a) sampled, test hv: {summary['best_dense_test_hv_over_a_sampled_test_hv']}")
    record(args, {"partial": False, "configs": {n: " ".join(CONFIGS[n]) for n in CONFIGS}, "summary": summary,
                  "runs": runs})


if __name__ == "__main__":
    main()
