"""Replay the early-stopping pruner over a finished unpruned study: how much could pruning save here?

Every trial records its monitored value per epoch in the Optuna storage (user attribute
`monitor_history`), pruned or not. This script takes a study run with `pruner: none`, walks its trials
in order and, epoch by epoch, asks the same pure rule the pruner uses (`decide_prune`, with the
trial's own early-stopping patience and tol) whether it would have pruned, for a grid of pruner
settings. For each setting it reports the epochs saved and the hypervolume kept, and a bound: what a
rule with the same startup and warm-up would save if it knew the final front, cutting every other
trial at the first epoch the warm-up allows and keeping the startup trials whole. (A setting beats the
bound only by pruning front trials.)

    ee-search run studies/quickstart.yaml --set search.pruner.type=none --set search.storage=sqlite:///none.db
    python benchmarks/pruning_replay.py studies/quickstart.yaml --storage sqlite:///none.db --json replay.json
    python benchmarks/pruning.py --keep runs/ --json ...   # then, over its unpruned runs:
    python benchmarks/pruning_replay.py studies/quickstart.yaml --storage sqlite:///runs/none-{7,8,9}/optuna.db
    python benchmarks/pruning_replay.py --tiny --json /tmp/replay.json   # runs a 3-trial study, then replays it

The replay reads two objective values per trial (accuracy, avg_exit_depth): a study whose single
objective is curve_hypervolume (the quick start's today) is run with those two objectives to be replayed.

A replay is an approximation: in a real pruned study the sampler sees the pruned trials and proposes
different ones afterwards. Until the first prune the two agree exactly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ee_search.config import load_study_file
from ee_search.pareto import hypervolume
from ee_search.records import TrialRecord
from ee_search.search.pruning import best_so_far, decide_prune
from ee_search.search.study import load_existing
from ee_search.config import redact
from ee_search.metrics import monitor_mode
from ee_search.train.early_stopping import StopState, judge_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TINY_QUICKSTART_SETS, add_tiny_argument  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# --tiny: the quick start's data cut down, two objectives, no pruner, a history of 2 epochs per trial.
# Thresholds that send every sample out at the first exit: a barely trained network is confident nowhere, and a front of all-final-exit
# points has no hypervolume to compare.
TINY_SETS = (*TINY_QUICKSTART_SETS, "train.max_epochs=2", "search.objectives=[accuracy, avg_exit_depth]",
             "search.pruner.type=none", "search.n_trials=3", "exits.thresholds=[0.0, 0.0]")


def ratio(a: float, b: float) -> float | None:
    """a / b to 4 places; None where b is 0 (a front with no hypervolume)."""
    return round(a / b, 4) if b else None


@dataclass(frozen=True)
class RecordedTrial:
    number: int
    history: list[float | None]
    values: tuple[float, float]
    patience: int
    tol: float


@dataclass(frozen=True)
class Setting:
    percentile: float
    n_startup_trials: int
    n_warmup_epochs: int
    min_stale_epochs: int


def recorded_trials(study: optuna.Study, patience: int, tol: float) -> list[RecordedTrial]:
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        out.append(RecordedTrial(
            t.number, list(TrialRecord.read(t).monitor_history or []), (t.values[0], t.values[1]),
            int(t.params.get("train.early_stopping.patience", patience)),
            float(t.params.get("train.early_stopping.tol", tol)),
        ))
    return out


def replay(trials: list[RecordedTrial], setting: Setting, mode: str) -> tuple[int, int, list[tuple[float, float]], list[int]]:
    """(epochs unpruned, epochs pruned, kept objective values, pruned trial numbers)."""
    finished: list[list[float | None]] = []
    epochs_none = epochs_pruned = 0
    kept, pruned = [], []
    for trial in trials:
        state, cut = StopState(), None
        for epoch, value in enumerate(trial.history, 1):
            if value is None:
                break  # a non-finite value stops the trial anyway
            state = judge_epoch(state, value, epoch, mode=mode, patience=trial.patience, tol=trial.tol).state
            if epoch == len(trial.history):
                break  # the trial ends here on its own: nothing left to save
            others = [b for b in (best_so_far(h, epoch, mode) for h in finished) if b is not None]
            if decide_prune(epoch=epoch, own_best=state.best, stale_epochs=state.stale, others_best=others,
                            n_completed=len(finished), mode=mode, n_startup_trials=setting.n_startup_trials,
                            n_warmup_epochs=setting.n_warmup_epochs, min_stale_epochs=setting.min_stale_epochs,
                            percentile=setting.percentile).prune:
                cut = epoch
                break
        epochs_none += len(trial.history)
        if cut is None:
            epochs_pruned += len(trial.history)
            finished.append(trial.history)
            kept.append(trial.values)
        else:
            epochs_pruned += cut
            pruned.append(trial.number)
    return epochs_none, epochs_pruned, kept, pruned


def keep_front_bound(trials: list[RecordedTrial], front: set[int], n_startup: int, n_warmup: int) -> int:
    epochs = 0
    for i, trial in enumerate(trials):
        whole = i < n_startup or trial.number in front
        epochs += len(trial.history) if whole else min(len(trial.history), n_warmup + 1)
    return epochs


def replay_study(study_file: Path, storage: str, overrides: tuple[str, ...] = ()) -> tuple[dict, list[dict]]:
    loaded = load_study_file(study_file, [*overrides, f"search.storage={storage}"])
    cfg = loaded.config
    study = load_existing(cfg, str(study_file), storage)
    if any(t.state == TrialState.PRUNED for t in study.get_trials(deepcopy=False)):
        print(f"warning: {storage} has pruned trials; replay a study run with pruner: none", file=sys.stderr)
    es = cfg.train.early_stopping
    mode = monitor_mode(es.monitor)
    trials = recorded_trials(study, es.patience, es.tol)
    hv_none = hypervolume([t.values for t in trials])
    front = {t.number for t in study.best_trials}
    configured = Setting(cfg.search.pruner.percentile, cfg.search.pruner.n_startup_trials,
                         cfg.search.pruner.n_warmup_epochs, cfg.search.pruner.min_stale_epochs)
    grid = {configured} | {Setting(*s) for s in itertools.product([50.0, 40.0, 30.0], [2, 3, 4], [1, 2, 3], [1, 2])}
    rows = []
    for s in sorted(grid, key=lambda s: (s.n_warmup_epochs, s.n_startup_trials, s.min_stale_epochs, -s.percentile)):
        none, pruned, kept, numbers = replay(trials, s, mode)
        rows.append({**s.__dict__, "configured": s == configured, "epochs_none": none, "epochs_pruned": pruned,
                     "hypervolume_none": hv_none, "hypervolume_pruned": hypervolume(kept), "pruned_trials": numbers,
                     "epochs_keep_front_bound": keep_front_bound(trials, front, s.n_startup_trials, s.n_warmup_epochs)})
    meta = {"storage": redact(storage), "study": cfg.name, "monitor": es.monitor, "trials": len(trials),
            "front": sorted(front), "sampler_seed": cfg.search.sampler.seed}
    return meta, rows


def run_tiny_study(study_file: Path, work: Path) -> str:
    """Run the quick start cut down to TINY_SETS into `work`; returns its Optuna storage URL."""
    import torch

    from ee_search.search.study import run_study

    storage = f"sqlite:///{work}/optuna.db"
    loaded = load_study_file(study_file, [*TINY_SETS, f"search.storage={storage}", f"tracking.uri=sqlite:///{work}/mlflow.db",
                                          f"data.root={work}/data", "device=cpu"])
    run_study(loaded, torch.device("cpu"), loaded.config.search.n_trials, None)
    return storage


def totals(studies: list[tuple[dict, list[dict]]]) -> list[dict]:
    """Per pruner setting, totals over the studies, as benchmarks/pruning.py reports them: the epoch
    reduction of the summed epochs and the hypervolume ratio of the means."""
    settings = []
    for i, first in enumerate(studies[0][1]):
        rows = [rows[i] for _, rows in studies]
        total = {k: sum(r[k] for r in rows) for k in ("epochs_none", "epochs_pruned", "epochs_keep_front_bound",
                                                      "hypervolume_none", "hypervolume_pruned")}
        settings.append({
            **{k: first[k] for k in ("percentile", "n_startup_trials", "n_warmup_epochs", "min_stale_epochs", "configured")},
            "epoch_reduction": round(1 - total["epochs_pruned"] / total["epochs_none"], 4),
            "hypervolume_ratio": ratio(total["hypervolume_pruned"], total["hypervolume_none"]),
            "keep_front_bound_epoch_reduction": round(1 - total["epochs_keep_front_bound"] / total["epochs_none"], 4),
            "per_study": [{"epochs_none": r["epochs_none"], "epochs_pruned": r["epochs_pruned"],
                           "hypervolume_ratio": ratio(r["hypervolume_pruned"], r["hypervolume_none"]),
                           "pruned_trials": r["pruned_trials"]} for r in rows],
        })
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_file", type=Path, nargs="?", default=ROOT / "studies" / "quickstart.yaml")
    parser.add_argument("--storage", nargs="+",
                        help="Optuna storage(s) of studies run with pruner: none (e.g. one per sampler seed)")
    add_tiny_argument(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.tiny and not args.storage:
        parser.error("--storage is required (or --tiny, which runs a study of its own)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ee-search-bench-replay-") as work:
        storages = [run_tiny_study(args.study_file, Path(work))] if args.tiny else args.storage
        overrides = TINY_SETS if args.tiny else ()
        studies = [replay_study(args.study_file, url, overrides) for url in storages]
    settings = totals(studies)
    for r in settings:
        mark = "*" if r["configured"] else " "
        print(f"{mark} pct {r['percentile']:>4g} startup {r['n_startup_trials']} warm-up {r['n_warmup_epochs']} "
              f"stale {r['min_stale_epochs']}: reduction {r['epoch_reduction']:.3f} "
              f"(keeping the front at best {r['keep_front_bound_epoch_reduction']:.3f}), hypervolume ratio {r['hypervolume_ratio']}, "
              f"per study {[(p['epochs_pruned'], p['epochs_none'], p['hypervolume_ratio']) for p in r['per_study']]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "pruning_replay", "study_file": str(args.study_file), "tiny": args.tiny,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reference_point": {"accuracy": 0.0, "avg_exit_depth": 1.0},
            "studies": [meta for meta, _ in studies], "settings": settings,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
