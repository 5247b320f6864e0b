"""Replay the early-stopping pruner over a finished unpruned study: how much could pruning save here?

Every trial records its monitored value per epoch in the Optuna storage (user attribute
`monitor_history`), pruned or not. This script takes a study run with `pruner: none`, walks its trials
in order and, epoch by epoch, asks the same pure rule the pruner uses (`decide_prune`, with the
trial's own early-stopping patience and tol) whether it would have pruned, for a grid of pruner
settings. For each setting it reports the epochs saved and the hypervolume kept. It also reports an
oracle bound: every trial that is not on the final front cut at the first epoch the warm-up allows,
startup trials kept whole -- what no rule under the same startup and warm-up could beat.

    ee-search run studies/quickstart.yaml --set search.pruner.type=none --set search.storage=sqlite:///none.db
    python benchmarks/pruning_replay.py studies/quickstart.yaml --storage sqlite:///none.db --json replay.json
    python benchmarks/pruning.py --keep DIR ...  then  --storage sqlite:///DIR/none-7/optuna.db

A replay is an approximation: in a real pruned study the sampler sees the pruned trials and proposes
different ones afterwards. Until the first prune the two agree exactly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ee_search.config import load_study_file
from ee_search.pareto import hypervolume
from ee_search.pruning import HISTORY_ATTR, best_so_far, decide_prune
from ee_search.study import load_existing
from ee_search.train.early_stopping import StopState, decide, monitor_mode


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
            t.number, list(t.user_attrs.get(HISTORY_ATTR, [])), (t.values[0], t.values[1]),
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
            state = decide(state, value, epoch, mode=mode, patience=trial.patience, tol=trial.tol).state
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


def oracle(trials: list[RecordedTrial], front: set[int], n_startup: int, n_warmup: int) -> int:
    epochs = 0
    for i, trial in enumerate(trials):
        whole = i < n_startup or trial.number in front
        epochs += len(trial.history) if whole else min(len(trial.history), n_warmup + 1)
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_file", type=Path)
    parser.add_argument("--storage", required=True, help="Optuna storage of a study run with pruner: none")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = load_study_file(args.study_file, [f"search.storage={args.storage}"])
    cfg = loaded.config
    study = load_existing(cfg, str(args.study_file), args.storage)
    es = cfg.train.early_stopping
    mode = monitor_mode(es.monitor)
    trials = recorded_trials(study, es.patience, es.tol)
    if any(t.state == TrialState.PRUNED for t in study.get_trials(deepcopy=False)):
        print("warning: the study has pruned trials; replay a study run with pruner: none", file=sys.stderr)
    hv_none = hypervolume([t.values for t in trials])
    front = {t.number for t in study.best_trials}
    configured = Setting(cfg.search.pruner.percentile, cfg.search.pruner.n_startup_trials,
                         cfg.search.pruner.n_warmup_epochs, cfg.search.pruner.min_stale_epochs)
    grid = {configured} | {Setting(*s) for s in itertools.product([50.0, 40.0, 30.0], [2, 3, 4], [1, 2, 3], [1, 2])}
    rows = []
    for s in sorted(grid, key=lambda s: (s.n_warmup_epochs, s.n_startup_trials, s.min_stale_epochs, -s.percentile)):
        none, pruned, kept, numbers = replay(trials, s, mode)
        rows.append({**s.__dict__, "configured": s == configured, "epochs_none": none, "epochs_pruned": pruned,
                     "epoch_reduction": round(1 - pruned / none, 4),
                     "hypervolume_ratio": round(hypervolume(kept) / hv_none, 4) if hv_none else None,
                     "pruned_trials": numbers,
                     "oracle_epoch_reduction": round(1 - oracle(trials, front, s.n_startup_trials, s.n_warmup_epochs) / none, 4)})
    for r in rows:
        mark = "*" if r["configured"] else " "
        print(f"{mark} pct {r['percentile']:>4g} startup {r['n_startup_trials']} warm-up {r['n_warmup_epochs']} "
              f"stale {r['min_stale_epochs']}: {r['epochs_pruned']:>4}/{r['epochs_none']} epochs, "
              f"reduction {r['epoch_reduction']:.3f} (oracle {r['oracle_epoch_reduction']:.3f}), "
              f"hypervolume ratio {r['hypervolume_ratio']:.3f}, pruned {r['pruned_trials']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "pruning_replay", "study_file": str(args.study_file), "study": cfg.name,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "monitor": es.monitor, "trials": len(trials), "front": sorted(front),
            "hypervolume_none": hv_none, "settings": rows,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
