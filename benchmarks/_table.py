"""The learning-curve table of a grid study: its files, its grid, and the dense front of any set of
(configuration, stopping epoch) pairs (benchmarks/search_table.py records and replays it).

A table is a folder:

    DIR/study.yaml            the study file the table was recorded from, copied verbatim
    DIR/table.json            what was recorded: the grid, max_epochs, the device, the date
    DIR/configs/NNNN.json.gz  one per configuration of the grid, written once it is complete

Each configuration's file holds, for every epoch it trained, what a live trial sees and keeps:
- `metrics`: the validation metrics of that epoch (every early-stopping monitor among them);
- `objectives`: the objective values the trial would return had it kept this epoch's weights;
- `val_points`: the network's operating points on validation at this epoch, with their thresholds;
- `test_points`: the same thresholds evaluated on the test split, row for row.

A trial stopped at epoch e keeps its best epoch up to e, as early stopping judged it (live, the best
checkpoint is the stopper's best epoch): `kept_epoch` below. The dense front of a set of trials is the
non-dominated val points of their kept epochs; it is chosen on val and reported on test too.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ee_search.config import CategoricalDimension, LoadedStudy, StudyConfig
from ee_search.errors import UserInputError
from ee_search.exits import front_indices, hypervolume
from ee_search.search.space import dimensions
from ee_search.train.early_stopping import StopState, judge_epoch

FORMAT = 1
STUDY_FILE = "study.yaml"
META_FILE = "table.json"
CONFIGS = "configs"


def grid(loaded: LoadedStudy) -> list[dict[str, Any]]:
    """Every configuration of the study's search space, in sampling order, `when` conditions applied.
    Any dimension that is not categorical is one UserInputError: a table needs a finite grid."""
    config = loaded.config
    dims = dimensions(config)
    for dim in dims:
        if not isinstance(dim.spec, CategoricalDimension):
            raise UserInputError(loaded.path, f"search.space.{dim.path}",
                                 f"type {dim.spec.type} is not a grid dimension: a learning-curve table needs "
                                 f"categorical dimensions only (give it `type: categorical` and `choices: [...]`)")
    if not dims:
        raise UserInputError(loaded.path, "search.space", "is empty: a table needs at least one categorical dimension")
    configurations: list[dict[str, Any]] = [{}]
    for dim in dims:
        grown = []
        for values in configurations:
            if not dim.is_active(values, config):
                grown.append(values)
                continue
            choices = dim.spec.choices
            drawn = itertools.product(choices, repeat=dim.n_items) if dim.n_items is not None else choices
            grown.extend({**values, dim.path: list(v) if dim.n_items is not None else v} for v in drawn)
        configurations = grown
    return configurations


def config_key(values: dict[str, Any]) -> str:
    """The configuration as one hashable string, the same however the values were produced."""
    return json.dumps(values, sort_keys=True)


@dataclass(frozen=True)
class EpochRow:
    metrics: dict[str, float]
    objectives: dict[str, float]
    val_points: np.ndarray  # [P, 3]: accuracy, avg_exit_depth, relative_flops
    test_points: np.ndarray  # [P, 3]: the same thresholds on test


@dataclass(frozen=True)
class Curve:
    """One configuration's recorded epochs (fewer than max_epochs only when training diverged)."""

    index: int
    values: dict[str, Any]
    epochs: list[EpochRow]
    stop_reason: str

    def monitor(self, name: str) -> list[float]:
        return [row.metrics[name] for row in self.epochs]


@dataclass
class Table:
    folder: Path
    meta: dict[str, Any]
    curves: list[Curve]

    @property
    def max_epochs(self) -> int:
        return int(self.meta["max_epochs"])

    def by_values(self) -> dict[str, Curve]:
        return {config_key(c.values): c for c in self.curves}


def config_path(folder: Path, index: int) -> Path:
    return folder / CONFIGS / f"{index:04d}.json.gz"


def write_curve(folder: Path, index: int, values: dict[str, Any], epochs: list[dict], stop_reason: str) -> None:
    """Write one configuration's file atomically: a file there is always a complete configuration."""
    path = config_path(folder, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    payload = {"index": index, "values": values, "stop_reason": stop_reason, "epochs": epochs}
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(payload, f, separators=(",", ":"))
    os.replace(tmp, path)


def read_table(folder: Path) -> Table:
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise UserInputError(str(folder), None, f"no {META_FILE} here: record a table first (search_table.py record)")
    meta = json.loads(meta_path.read_text())
    curves = []
    for path in sorted((folder / CONFIGS).glob("*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            raw = json.load(f)
        curves.append(Curve(raw["index"], raw["values"], [_epoch_row(e) for e in raw["epochs"]], raw["stop_reason"]))
    if not curves:
        raise UserInputError(str(folder), None, "the table has no recorded configuration yet")
    return Table(folder, meta, curves)


def _epoch_row(raw: dict) -> EpochRow:
    val = np.asarray([p[:3] for p in raw["val_points"]], dtype=np.float64).reshape(-1, 3)
    test = np.asarray(raw["test_points"], dtype=np.float64).reshape(-1, 3)
    return EpochRow(raw["metrics"], raw["objectives"], val, test)


def read_complete_table(folder: Path) -> Table:
    """The table, refused in one line unless every configuration of its grid is recorded."""
    table = read_table(folder)
    if len(table.curves) < table.meta["grid_size"]:
        raise UserInputError(str(folder), None, f"holds {len(table.curves)} of the grid's {table.meta['grid_size']} "
                                                f"configurations: finish it with search_table.py record first")
    return table


def recorded_indices(folder: Path) -> set[int]:
    return {int(p.name.split(".")[0]) for p in (Path(folder) / CONFIGS).glob("*.json.gz")}


def kept_epoch(curve: Curve, stopped_at: int, monitor: str, mode: str, tol: float) -> int:
    """The epoch (1-based) a trial stopped at `stopped_at` keeps: early stopping's best, that is the
    first epoch that beat the best before it by more than tol (train/early_stopping.judge_epoch)."""
    best, best_epoch = None, 1
    for epoch, value in enumerate(curve.monitor(monitor)[:stopped_at], start=1):
        if not np.isfinite(value):
            break
        gain = None if best is None else (best - value if mode == "min" else value - best)
        if gain is None or gain > tol:
            best, best_epoch = value, epoch
    return best_epoch


def stop_epoch(curve: Curve, monitor: str, mode: str, patience: int, tol: float) -> int:
    """Where early stopping (train/early_stopping.judge_epoch) ends this configuration; its whole
    curve if it never does."""
    state = StopState()
    for epoch, value in enumerate(curve.monitor(monitor), start=1):
        decision = judge_epoch(state, value, epoch, mode=mode, patience=patience, tol=tol)
        state = decision.state
        if decision.stop:
            return epoch
    return len(curve.epochs)


@dataclass(frozen=True)
class DenseFront:
    val_hypervolume: float
    test_hypervolume: float
    size: int


def dense_front(rows: Sequence[EpochRow]) -> DenseFront:
    """The dense front of the kept epochs `rows`: chosen on val (docs/design.md §4: non-dominated,
    the cheapest in FLOPs among equals), and the test hypervolume of exactly those points."""
    if not rows:
        return DenseFront(0.0, 0.0, 0)
    val = np.concatenate([r.val_points for r in rows])
    test = np.concatenate([r.test_points for r in rows])
    keep = front_indices(val[:, 0], val[:, 1], val[:, 2])
    return DenseFront(hypervolume([(a, d) for a, d, _ in val[keep]]),
                      hypervolume([(a, d) for a, d, _ in test[keep]]), len(keep))


def iter_pending(folder: Path, configurations: list[tuple[int, dict | None]], limit: int | None) -> Iterator[tuple[int, dict]]:
    """The (index, values) not yet recorded, in grid order, at most `limit` of them; values None:
    another shard's configuration. Checked just before each one, so shards never record one twice."""
    pending = ((i, v) for i, v in configurations if v is not None and not config_path(folder, i).exists())
    return itertools.islice(pending, limit) if limit is not None else pending


def describe(config: StudyConfig) -> dict[str, Any]:
    """The parts of the study a replay needs, in the table's meta."""
    es = config.train.early_stopping
    return {"max_epochs": config.train.max_epochs, "objectives": list(config.search.objectives),
            "early_stopping": {"monitor": es.monitor, "patience": es.patience, "tol": es.tol}}
