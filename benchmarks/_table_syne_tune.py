"""Syne Tune's own ASHA and MOASHA replayed over a learning-curve table (_table.py), through Syne Tune's
simulator: the table becomes a `BlackboxTabular`, a `UserBlackboxBackend` plays it epoch by epoch, and
a `Tuner` with one worker and the `SimulatorCallback` drives the scheduler, exactly as Syne Tune's own
simulated benchmarks do. Only the curve of the run is ours: one point per finished trial, the dense
front of the completed trials' kept epochs (the rule every strategy of search_table.py replay shares).

    run_syne_tune(table, "asha", seed=0, budget_epochs=360)  ->  [[cumulative_epochs, dense_test_hv, dense_val_hv], ...]
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from syne_tune import Tuner
from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular
from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
from syne_tune.config_space import choice, randint
from syne_tune.constants import SYNE_TUNE_ENV_FOLDER
from syne_tune.optimizer.baselines import ASHA
from syne_tune.optimizer.scheduler import SchedulerDecision
from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
from syne_tune.tuner_callback import TunerCallback

from _table import Curve, Table, config_key, dense_front, kept_epoch
from ee_search.config import StudyConfig, load_study_file
from ee_search.errors import UserInputError
from ee_search.metrics import monitor_mode
from ee_search.search.space import SearchDimension, dimensions

STRATEGIES = ("asha", "moasha")
RESOURCE = "epoch"
ELAPSED = "elapsed_seconds"
CURVE = "curve_index"  # which recorded Curve a trial plays, reported with every epoch
# MOASHA has one direction for all its metrics: it minimises, so accuracy goes in as its error.
MOASHA_METRICS = ("val_error", "val_avg_exit_depth")


@dataclass(frozen=True)
class GridSpace:
    """The table's grid as Syne Tune's config space: one `choice` per Optuna parameter (a per-item
    dimension is one parameter per item, as Optuna samples it), each choice JSON-encoded so that any
    value (a bool, None, a list) is one hashable category."""

    config: StudyConfig
    dims: list[SearchDimension]

    def config_space(self) -> dict[str, Any]:
        return {name: choice([json.dumps(c) for c in dim.spec.choices])
                for dim in self.dims for name in dim.param_names()}

    def values(self, sampled: dict[str, str]) -> dict[str, Any]:
        """A sampled configuration as the table's values: every parameter is always sampled, and a
        dimension whose `when` does not hold is dropped, as Optuna's samplers never ask for it."""
        values: dict[str, Any] = {}
        for dim in self.dims:
            if dim.is_active(values, self.config):
                drawn = [json.loads(sampled[name]) for name in dim.param_names()]
                values[dim.path] = drawn if dim.n_items is not None else drawn[0]
        return values


def grid_space(table: Table) -> GridSpace:
    config = load_study_file(table.folder / "study.yaml", table.meta.get("overrides", [])).config
    return GridSpace(config, dimensions(config))


def reported_metrics(row_metrics: dict[str, float], monitor: str, seconds: float) -> list[float]:
    """What a trial reports at one epoch, in `objective_names` order; a non-finite value (a diverged
    epoch) becomes the worst there is, so the schedulers rank it last instead of sorting a NaN."""
    worst_monitor = np.inf if monitor_mode(monitor) == "min" else -np.inf
    value = row_metrics[monitor]
    error = 1.0 - row_metrics["val_accuracy"]
    depth = row_metrics["val_avg_exit_depth"]
    return [value if np.isfinite(value) else worst_monitor, error if np.isfinite(error) else np.inf,
            depth if np.isfinite(depth) else np.inf, seconds]


def objective_names(monitor: str) -> list[str]:
    return [monitor, *MOASHA_METRICS, ELAPSED, CURVE]


def table_blackbox(table: Table, space: GridSpace) -> BlackboxTabular:
    """Every combination of the space's parameters, each mapped to its recorded curve; epochs past a
    diverged curve's last are NaN (the backend below ends the trial there)."""
    monitor = table.meta["early_stopping"]["monitor"]
    config_space = space.config_space()
    names = list(config_space)
    by_values = table.by_values()
    rows = [dict(zip(names, combo)) for combo in itertools.product(*(d.categories for d in config_space.values()))]
    evaluations = np.full((len(rows), 1, table.max_epochs, len(objective_names(monitor))), np.nan)
    for i, row in enumerate(rows):
        curve = by_values.get(config_key(space.values(row)))
        if curve is None:
            raise UserInputError(str(table.folder), None, f"has no recorded curve for {space.values(row)}: "
                                                          f"record the whole grid before replaying Syne Tune on it")
        seconds = np.cumsum([e.metrics.get("epoch_seconds", 1.0) for e in curve.epochs])
        for epoch, (e, elapsed) in enumerate(zip(curve.epochs, seconds)):
            evaluations[i, 0, epoch] = [*reported_metrics(e.metrics, monitor, float(elapsed)), curve.index]
    return BlackboxTabular(hyperparameters=pd.DataFrame(rows, columns=names), configuration_space=config_space,
                           fidelity_space={RESOURCE: randint(1, table.max_epochs)}, objectives_evaluations=evaluations,
                           fidelity_values=np.arange(1, table.max_epochs + 1), objectives_names=objective_names(monitor))


class RecordedEpochsBackend(UserBlackboxBackend):
    """Plays only the epochs a curve recorded: a diverged curve's trial ends at its last epoch (it
    completes short of max_t, and counts as stopped), instead of reporting the table's NaN padding."""

    def config_objectives(self, config: dict[str, Any], seed: int) -> list[dict]:
        return [r for r in super().config_objectives(config, seed) if np.isfinite(r[ELAPSED])]


@dataclass
class TrialLog(TunerCallback):
    """The results the scheduler saw, trial by trial, and the order trials finished in (completed, or
    stopped by the scheduler); the Tuner's own count also holds results it dropped after a stop."""

    epochs: dict[int, int] = field(default_factory=dict)
    curves: dict[int, int] = field(default_factory=dict)
    finished: list[tuple[int, int]] = field(default_factory=list)  # (trial_id, epochs reported by then)

    def on_trial_result(self, trial, status, result, decision) -> None:
        self.epochs[trial.trial_id] = int(result[RESOURCE])
        self.curves[trial.trial_id] = int(result[CURVE])
        if decision == SchedulerDecision.STOP:
            self._finish(trial.trial_id)

    def on_trial_complete(self, trial, result) -> None:
        self._finish(trial.trial_id)

    def _finish(self, trial_id: int) -> None:
        if trial_id not in {t for t, _ in self.finished}:
            self.finished.append((trial_id, sum(self.epochs.values())))

    def spent(self) -> int:
        return sum(self.epochs.values())


def make_scheduler(strategy: str, table: Table, space: GridSpace, seed: int, options: dict[str, Any]):
    """Syne Tune's scheduler at its own defaults (grace_period 1, reduction_factor 3, one bracket),
    max_t the table's max_epochs; `options` override them (the tests' never-stopping reference)."""
    config_space = space.config_space()
    monitor = table.meta["early_stopping"]["monitor"]
    if strategy == "asha":
        return ASHA(config_space, metric=monitor, time_attr=RESOURCE, max_t=table.max_epochs,
                    do_minimize=monitor_mode(monitor) == "min", random_seed=seed, **options)
    if strategy == "moasha":
        return MOASHA(config_space, metrics=list(MOASHA_METRICS), do_minimize=True, time_attr=RESOURCE,
                      max_t=table.max_epochs, random_seed=seed, **options)
    raise ValueError(f"strategy must be one of {STRATEGIES} but got {strategy!r}")


def run_syne_tune(table: Table, strategy: str, seed: int, budget_epochs: int,
                  scheduler_options: dict[str, Any] | None = None) -> list[list[float]]:
    """strategy: "asha" or "moasha". Returns the run's curve: one point per finished trial (completed
    or stopped by the scheduler) within the budget, [cumulative_epochs, dense_test_hv, dense_val_hv]."""
    space = grid_space(table)
    backend = RecordedEpochsBackend(blackbox=table_blackbox(table, space), elapsed_time_attr=ELAPSED, seed=0)
    log = TrialLog()
    with _quiet_and_seeded(seed) as folder:
        scheduler = make_scheduler(strategy, table, space, seed, scheduler_options or {})
        # The budget is judged on the log, not the Tuner's status: see TrialLog.
        tuner = Tuner(trial_backend=backend, scheduler=scheduler, stop_criterion=lambda _: log.spent() >= budget_epochs,
                      n_workers=1, sleep_time=0, callbacks=[SimulatorCallback(), log], save_tuner=False,
                      tuner_name="replay", suffix_tuner_name=False, trial_backend_path=folder,
                      print_update_interval=1e9, results_update_interval=1e9)
        with contextlib.redirect_stdout(io.StringIO()):  # the Tuner's own logger prints its progress
            tuner.run()
    return front_curve(table, log, budget_epochs)


def front_curve(table: Table, log: TrialLog, budget_epochs: int) -> list[list[float]]:
    """One point per trial finished within the budget; only a trial that ran to max_epochs adds its
    kept epoch to the dense front (a stopped or diverged one adds nothing)."""
    es = table.meta["early_stopping"]
    monitor, tol = es["monitor"], float(es["tol"])
    curves = {c.index: c for c in table.curves}
    kept, points = [], []
    for trial_id, spent in log.finished:
        if spent > budget_epochs:
            break
        curve: Curve = curves[log.curves[trial_id]]
        if log.epochs[trial_id] >= table.max_epochs:
            epoch = kept_epoch(curve, table.max_epochs, monitor, monitor_mode(monitor), tol)
            kept.append(curve.epochs[epoch - 1])
        front = dense_front(kept)
        points.append([spent, float(front.test_hypervolume), float(front.val_hypervolume)])
    return points


@contextlib.contextmanager
def _quiet_and_seeded(seed: int) -> Iterator[str]:
    """Syne Tune's schedulers draw from numpy's global generator (MOASHA's configurations, the bracket
    of a trial), and its Tuner logs and writes a results folder: seed the one, silence and redirect
    the others into a temporary folder, and put everything back afterwards."""
    state = np.random.get_state()
    syne_logger = logging.getLogger("syne_tune")
    level = syne_logger.level
    previous_folder = os.environ.get(SYNE_TUNE_ENV_FOLDER)
    np.random.seed(seed)
    syne_logger.setLevel(logging.CRITICAL)
    try:
        with tempfile.TemporaryDirectory(prefix="syne-tune-replay-") as folder:
            os.environ[SYNE_TUNE_ENV_FOLDER] = folder
            yield folder
    finally:
        np.random.set_state(state)
        syne_logger.setLevel(level)
        if previous_folder is None:
            os.environ.pop(SYNE_TUNE_ENV_FOLDER, None)
        else:
            os.environ[SYNE_TUNE_ENV_FOLDER] = previous_folder
