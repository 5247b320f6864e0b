"""`search_table.py record`: train every configuration of a grid study to max_epochs and keep, after
every epoch, what a live trial would see (its monitors) and keep (its operating points on val, and
the same thresholds on test). The table's format is in _table.py.

Early stopping and pruning are off while recording (patience past max_epochs, no pruning callback):
the replay applies them afterwards, epoch by epoch, through the same code a live trial runs. Every
configuration trains as trial `trial` of a live study would (`--trial`, default 0): on the data split
of the study's seed, with the training seed `seed + trial` (search/objective.py), so two
configurations of one table differ only by their values, and two tables recorded with different
`--trial` show what training noise alone does to one configuration.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from _table import CONFIGS, FORMAT, META_FILE, STUDY_FILE, describe, grid, iter_pending, write_curve
from ee_search.config import LoadedStudy, load_study_file
from ee_search.errors import UserInputError
from ee_search.exits import curve_hypervolume, exit_costs, operating_points
from ee_search.exits.logits import collect_exit_logits
from ee_search.exits.policy import outcomes, scores_and_correct
from ee_search.fit import build_fit
from ee_search.data import prepare_data
from ee_search.train import Callback, TrainerView

DIGITS = 6  # rounding of every recorded number: a millionth of accuracy is far below one sample


class EpochTable(Callback):
    """Records each validated epoch: the monitors, the objectives at the trial's thresholds, the val
    operating points (relative FLOPs included) and those thresholds on the test split."""

    def __init__(self, criterion: str, thresholds: tuple[float, ...]) -> None:
        self.criterion = criterion
        self.thresholds = thresholds
        self.test_batches = None  # set once the fit is built
        self.costs: tuple[float, ...] | None = None
        self.epochs: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        val = trainer.val_logits
        points = operating_points(val.logits, val.labels, self.criterion, self.costs, include=self.thresholds)
        test = collect_exit_logits(trainer.eval_model, self.test_batches, getattr(trainer, "autocast_dtype", None))
        settings = torch.tensor([list(p.thresholds) for p in points], dtype=torch.float32)
        scores, correct = scores_and_correct(test.logits, test.labels, self.criterion)
        on_test = outcomes(scores, correct, settings, self.criterion, self.costs)
        own_val = outcomes(*scores_and_correct(val.logits, val.labels, self.criterion),
                           torch.tensor([list(self.thresholds)]), self.criterion, self.costs).outcome(0)
        curve_hv = round(curve_hypervolume(points), DIGITS)
        self.epochs.append({
            "metrics": {k: round(float(v), DIGITS) for k, v in metrics.items()},
            "objectives": {k: round(v, DIGITS) for k, v in own_val.metrics().items()} | {"curve_hypervolume": curve_hv},
            "val_points": [[round(p.accuracy, DIGITS), round(p.avg_exit_depth, DIGITS), round(p.relative_flops, DIGITS),
                            list(p.thresholds)] for p in points],
            "test_points": [[round(float(a), DIGITS), round(float(d), DIGITS), round(float(f), DIGITS)] for a, d, f in
                            zip(on_test.accuracy, on_test.avg_exit_depth, on_test.relative_flops)],
        })


def recording_study(study_file: Path, overrides: list[str]) -> LoadedStudy:
    """The study as recorded: early stopping can never fire (its patience is past max_epochs)."""
    loaded = load_study_file(study_file, overrides)
    epochs = loaded.config.train.max_epochs
    return load_study_file(study_file, [*overrides, f"train.early_stopping.patience={epochs + 1}"])


def record_configuration(loaded: LoadedStudy, values: dict[str, Any], device: torch.device,
                         trial: int = 0) -> tuple[list[dict], str]:
    config = loaded.with_values(values)
    table = EpochTable(config.exits.criterion, tuple(config.exits.thresholds))
    prepared = prepare_data(config.data, config.seed)
    built = build_fit(config, device=device, seed=config.seed + trial, prepared=prepared, recorders=[table])
    data = built.data
    table.test_batches = data.test
    table.costs = tuple(exit_costs(built.trainer.model, (data.channels, data.input_size, data.input_size)).relative)
    result = built.trainer.fit()
    return table.epochs, result.stop_reason


def record(study_file: Path, out: Path, device: torch.device, limit: int | None, overrides: list[str],
           shard: tuple[int, int] = (0, 1), trial: int = 0) -> int:
    """Record the grid's pending configurations into `out` (those of index K modulo N for shard
    (K, N): several processes share one table); returns how many are recorded in all."""
    loaded = recording_study(study_file, overrides)
    configurations = grid(loaded)
    meta = {"format": FORMAT, "study": loaded.config.name, "study_file": str(study_file), "overrides": overrides,
            "trial": trial, "grid_size": len(configurations), **describe(load_study_file(study_file, overrides).config)}
    _start_or_check(out, study_file, meta)
    mine = [(i, v) if i % shard[1] == shard[0] else (i, None) for i, v in enumerate(configurations)]
    for index, values in iter_pending(out, mine, limit):
        started = time.perf_counter()
        epochs, stop_reason = record_configuration(loaded, values, device, trial)
        write_curve(out, index, values, epochs, stop_reason)
        print(f"config {index + 1}/{len(configurations)} {json.dumps(values)}: {len(epochs)} epochs, "
              f"final val_curve_hypervolume {epochs[-1]['metrics'].get('val_curve_hypervolume', float('nan')):.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    done = len(list((out / CONFIGS).glob("*.json.gz")))
    meta_path = out / META_FILE
    saved = json.loads(meta_path.read_text())
    saved.update(recorded=done, complete=done == len(configurations), device=str(device),
                 torch=torch.__version__, date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    meta_path.write_text(json.dumps(saved, indent=2) + "\n")
    return done


def _start_or_check(out: Path, study_file: Path, meta: dict[str, Any]) -> None:
    """A new table gets the study file and meta; an existing one must be the same study, so that a
    resumed recording never mixes two grids."""
    copy = out / STUDY_FILE
    if copy.exists():
        saved = json.loads((out / META_FILE).read_text())
        if (copy.read_text() != study_file.read_text() or saved["overrides"] != meta["overrides"]
                or saved.get("trial", 0) != meta["trial"]):
            raise UserInputError(str(out), None, f"holds a table of another study file, other --set values or another --trial: "
                                                 f"record into a new folder, or resume with {study_file}, --set and --trial as they were")
        return
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(study_file, copy)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
