"""`search_table.py replay`, Optuna's side: real Optuna studies (in-memory) whose objective reads the
learning-curve table instead of training.

A strategy is the table's study file with a few `--set` values (`STRATEGIES`), so each one is built
by the product's own code: the sampler from `search.sampler` (search/samplers.py), Optuna's pruner
from `search.pruner` (search/pruners.py), ee-search's pruner from the same config, the search space
sampled by search/space.py. A replayed trial runs the real `Trainer.fit` loop with the real
callbacks in their live order (early stopping, the best checkpoint, the pruning callback): only the
epoch itself is read from the table instead of trained (`ReplayTrainer`). So a strategy sees, epoch
by epoch, exactly what it would see live, apart from the seed noise of training (the table trains
each configuration once).

A run stops starting trials once its epochs reach the budget. After every finished trial its curve
gets a point: (epochs so far, the dense front's test HV, its val HV), the front chosen on val from
the kept epochs of the completed trials (what `ee-search pareto` does live).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

from _table import Curve, EpochRow, Table, config_key, dense_front, stop_epoch
from ee_search.config import load_study_file
from ee_search.config.objectives import DIRECTIONS
from ee_search.exits import ExitPolicy
from ee_search.metrics import monitor_mode
from ee_search.search import space
from ee_search.search.duplicates import skip_if_duplicate
from ee_search.search.pruners import build_optuna_pruner
from ee_search.search.pruning import EarlyStoppingPruner, PruneDecision, PruningCallback, best_so_far
from ee_search.search.samplers import build_sampler
from ee_search.train import NON_FINITE_LOSS, BestCheckpoint, EarlyStopping, Trainer, standard_order

_RANDOM = ("search.sampler.type=random", "search.sampler.options={}")
_ES_OFF = "train.early_stopping.patience={never}"  # patience past max_epochs: early stopping never fires
_ONE_CURVE_OBJECTIVE = ("search.objectives=[curve_hypervolume]", "train.early_stopping.monitor=val_curve_hypervolume")

# Each strategy: the `--set` values it applies to the table's study file ({never} = max_epochs + 1).
STRATEGIES: dict[str, tuple[str, ...]] = {
    "ee-search": (),  # the study file as it is: the shipped default when the table is the quick start's
    "random_full": (*_RANDOM, "search.pruner.type=none", _ES_OFF),
    "random_es": (*_RANDOM, "search.pruner.type=none"),
    "tpe_hyperband": ("search.sampler.type=tpe", "search.sampler.options={}", "search.pruner.type=hyperband",
                      "search.pruner.options={}", *_ONE_CURVE_OBJECTIVE, _ES_OFF),
    "asha": (*_RANDOM, "search.pruner.type=successive_halving", "search.pruner.options={}",
             *_ONE_CURVE_OBJECTIVE, _ES_OFF),
}


class ReplayTrainer(Trainer):
    """The real fit loop and callbacks, with each epoch's training and validation read from a curve."""

    def __init__(self, curve: Curve, max_epochs: int, callbacks: list) -> None:
        stand_in = torch.nn.Linear(1, 1)  # what BestCheckpoint copies when the best improves: no real weights
        super().__init__(stand_in, torch.optim.SGD(stand_in.parameters(), lr=0.0), [], [],
                         max_epochs=max_epochs, policy=ExitPolicy((), "max_softmax"), callbacks=callbacks)
        self.curve = curve

    def _recorded(self) -> dict[str, float]:
        if self.epoch <= len(self.curve.epochs):
            return self.curve.epochs[self.epoch - 1].metrics
        # Past a recording that stopped early (training diverged): non-finite, as live.
        return {k: math.nan for k in self.curve.epochs[-1].metrics}

    def train_epoch(self) -> dict[str, float]:
        return {k: v for k, v in self._recorded().items() if k.startswith("train_")}

    def _validate(self) -> dict[str, float]:
        return {k: v for k, v in self._recorded().items() if k.startswith("val_")}


class ForesightPruner:
    """An oracle's pruner (`--foresight`): the study's pruner judging what the trial will have reached
    instead of its best so far. Together with ForesightPruningCallback, which publishes that value as
    every epoch's, the rung rule ranks trials by where they end (or stand `look_ahead` epochs later),
    not where they stand: the bound of any pruner that judges this monitor, with this sampler and
    these rungs."""

    def __init__(self, pruner: EarlyStoppingPruner) -> None:
        self.pruner = pruner
        self.seen: float | None = None  # what the oracle sees at the epoch being judged

    def judge(self, study: optuna.Study, epoch: int, own_best: float | None, stale_epochs: int, monitor: str,
              own_number: int | None = None) -> PruneDecision:
        return self.pruner.judge(study, epoch, self.seen, stale_epochs, monitor, own_number)


class ForesightPruningCallback(PruningCallback):
    """Publishes (and reports to Optuna's own pruners) what the oracle sees at each epoch."""

    def __init__(self, trial: optuna.Trial, pruner: EarlyStoppingPruner | None, seen: list[float | None]) -> None:
        super().__init__(trial, None if pruner is None else ForesightPruner(pruner))
        self.seen = seen

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.history.append(self.seen[epoch - 1])
        if isinstance(self.pruner, ForesightPruner):
            self.pruner.seen = self.seen[epoch - 1]


def foresight_values(curve: Curve, config, look_ahead: int | None = None) -> list[float | None]:
    """What the oracle sees at each epoch e: the best monitored value up to e + look_ahead, or with
    look_ahead None up to where early stopping ends the configuration (its final best), never past
    that stop."""
    es = config.train.early_stopping
    mode = monitor_mode(es.monitor)
    stop = min(stop_epoch(curve, es.monitor, mode, es.patience, es.tol), config.train.max_epochs)
    values = curve.monitor(es.monitor)
    return [best_so_far(values, stop if look_ahead is None else min(epoch + look_ahead, stop), mode)
            for epoch in range(1, config.train.max_epochs + 1)]


@dataclass
class Run:
    """One strategy at one seed: its spend and the completed trials' kept epochs."""

    budget_epochs: int
    epochs: int = 0
    kept: list[EpochRow] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)
    trials: list[list[int]] = field(default_factory=list)  # [configuration index, epochs, kept epoch or 0]

    duplicates_in_a_row: int = 0

    def finish_duplicate(self, study: optuna.Study, curve: Curve, grid_size: int) -> None:
        """A duplicate costs no epoch, so the budget alone would never end a search whose sampler
        proposes only what it has trained: after as many in a row as the grid has configurations,
        the search has converged, and the rest of the budget would buy nothing."""
        self.finish_trial(curve, 0, None)
        self.duplicates_in_a_row += 1
        if self.duplicates_in_a_row >= grid_size:
            study.stop()

    def finish_trial(self, curve: Curve, epochs: int, kept_epoch: int | None) -> None:
        self.epochs += epochs
        self.trials.append([curve.index, epochs, kept_epoch or 0])
        if kept_epoch is not None:
            self.kept.append(curve.epochs[kept_epoch - 1])
        front = dense_front(self.kept)
        self.curve.append([self.epochs, round(front.test_hypervolume, 6), round(front.val_hypervolume, 6)])


class ReplayObjective:
    def __init__(self, table: Table, loaded, run: Run, never_prune: frozenset[int] = frozenset(),
                 foresight: bool = False, look_ahead: int | None = None) -> None:
        self.curves = table.by_values()
        self.never_prune = never_prune  # an oracle's configurations (search_table.py paired --never-prune)
        self.foresight = foresight  # an oracle: the pruner sees each trial's final best (ForesightPruner) ...
        self.look_ahead = look_ahead  # ... or its best look_ahead epochs later
        self.grid_size = len(self.curves)
        self.loaded = loaded
        self.config = loaded.config
        self.run = run
        pruner_cfg = self.config.search.pruner
        self.es_pruner = EarlyStoppingPruner.from_config(pruner_cfg) if pruner_cfg.type == "early_stopping" else None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        curve = self.curves[config_key(space.sample(trial, self.config))]
        if self.config.search.skip_duplicates:
            try:
                skip_if_duplicate(trial)  # as live (search/objective.py): PRUNED untrained, 0 epochs
            except optuna.TrialPruned:
                self.run.finish_duplicate(trial.study, curve, self.grid_size)
                raise
        self.run.duplicates_in_a_row = 0
        es = self.config.train.early_stopping
        stopper = EarlyStopping(es.monitor, es.patience, es.tol)
        best = BestCheckpoint(None)
        pruner = None if curve.index in self.never_prune else self.es_pruner
        pruning = (ForesightPruningCallback(trial, pruner, foresight_values(curve, self.config, self.look_ahead))
                   if self.foresight else PruningCallback(trial, pruner))
        trainer = ReplayTrainer(curve, self.config.train.max_epochs, standard_order(None, stopper, best, (), pruning))
        try:
            trainer.fit()
        except optuna.TrialPruned:
            self.run.finish_trial(curve, trainer.epoch, None)
            raise
        if best.best_epoch is None or trainer.stop_reason == NON_FINITE_LOSS:
            self.run.finish_trial(curve, trainer.epoch, None)  # diverged: live, such a trial is pruned
            raise optuna.TrialPruned("training diverged (non-finite loss)")
        self.run.finish_trial(curve, trainer.epoch, best.best_epoch)
        metrics = curve.epochs[best.best_epoch - 1].objectives | {"best_epoch": float(best.best_epoch), "epochs_trained": float(trainer.epoch)}
        return [metrics[name] for name in self.config.search.objectives]


def strategy_overrides(table: Table, strategy: str, seed: int, extra: tuple[str, ...] = ()) -> list[str]:
    never = str(table.max_epochs + 1)
    chosen = [s.replace("{never}", never) for s in STRATEGIES[strategy]]
    return [*table.meta.get("overrides", []), *chosen, *extra, f"search.sampler.seed={seed}"]


def run_optuna(table: Table, strategy: str, seed: int, budget_epochs: int, extra: tuple[str, ...] = (),
               n_trials: int | None = None, never_prune: frozenset[int] = frozenset(), foresight: bool = False,
               look_ahead: int | None = None) -> Run:
    """One replayed search: its curve (one point per finished trial) and its trials; it ends at the
    budget, or after `n_trials` trials (the live study's shape) if that comes first. Two oracles
    bound what a better pruner could gain: the configurations in `never_prune` are never pruned, and
    with `foresight` the pruner judges every trial by its final best (ForesightPruner), or by its
    best `look_ahead` epochs later."""
    loaded = load_study_file(table.folder / "study.yaml", strategy_overrides(table, strategy, seed, extra))
    config = loaded.config
    run = Run(budget_epochs)

    def stop_at_budget(study: optuna.Study, _trial) -> None:
        if run.epochs >= budget_epochs:
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for multivariate, grouped TPE
        # A fixed name: HyperbandPruner assigns brackets from a hash of the study name and trial number,
        # so an auto-generated (random) name would make the same seed replay differently.
        study = optuna.create_study(
            study_name=f"replay-{strategy}-seed{seed}",
            directions=[DIRECTIONS[name] for name in config.search.objectives],
            sampler=build_sampler(config.search.sampler),
            pruner=build_optuna_pruner(config.search.pruner, config.train.max_epochs),
        )
        objective = ReplayObjective(table, loaded, run, never_prune, foresight, look_ahead)
        study.optimize(objective, n_trials=n_trials, callbacks=[stop_at_budget],
                       catch=(), gc_after_trial=False)
    return run


def value_at(curve: list[list[float]], epochs: float, column: int = 1) -> float:
    """The run's dense HV once it had spent `epochs`: its last point at or before them (0 before any)."""
    reached = [p[column] for p in curve if p[0] <= epochs]
    return reached[-1] if reached else 0.0


def epochs_to_reach(curve: list[list[float]], target: float) -> float:
    """Epochs at the first point whose dense test HV reaches `target` (inf if it never does)."""
    return next((p[0] for p in curve if p[1] >= target - 1e-12), math.inf)


def describe_overrides(table: Table) -> dict[str, Any]:
    never = str(table.max_epochs + 1)
    return {name: [s.replace("{never}", never) for s in sets] for name, sets in STRATEGIES.items()}
