"""Pruning driven by the early-stopping signal, for single- and multi-objective studies alike.

Optuna's `trial.report` / `should_prune` raise NotImplementedError once a study has two objectives,
and its pruners compare one reported value against one direction. The monitored value (val_loss or
val_accuracy) has a direction of its own whatever the objectives are, so this pruner keeps its own
record: after each validation the trial's monitored value goes into the trial's user attributes (in
the Optuna storage, so workers on other machines see it), and the decision reads the other trials'
records back from the storage.

A trial is pruned only when both hold:
- its early stopper has gone at least `min_stale_epochs` epochs without improvement (a trial that is
  still improving is never pruned), and
- its best-so-far monitored value is worse than the `percentile` of the completed trials' best-so-far
  values at the same epoch (a trial that stopped earlier carries its final best forward),
and only after `n_startup_trials` completed trials and past the first `n_warmup_epochs` epochs.

In single-objective studies the value is also fed to `trial.report`, so Optuna's own pruners work by
name (median, hyperband, ...) and Optuna's dashboards show the intermediate values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ee_search.config import PrunerConfig
from ee_search.metrics import monitor_mode
from ee_search.records import TrialRecord
from ee_search.train import Callback, EarlyStopping, TrainerView



def best_so_far(history: Sequence[float | None], epoch: int, mode: str) -> float | None:
    """Best finite value among the first `epoch` entries (all of them if the trial stopped sooner)."""
    seen = [v for v in history[:epoch] if v is not None and math.isfinite(v)]
    if not seen:
        return None
    return min(seen) if mode == "min" else max(seen)


@dataclass(frozen=True)
class PruneDecision:
    prune: bool
    reason: str


def is_rung(epoch: int, first_rung: int, rung_factor: float | None) -> bool:
    """Whether `epoch` is judged: every epoch from `first_rung` on, or with a rung factor η only the
    rungs first_rung·η^k (rounded), as in successive halving (Li et al., 2018)."""
    if epoch < first_rung:
        return False
    if rung_factor is None:
        return True
    rung = float(first_rung)
    while round(rung) < epoch:
        rung *= rung_factor
    return round(rung) == epoch


def decide_prune(
    *,
    epoch: int,
    own_best: float | None,
    stale_epochs: int,
    others_best: Sequence[float],
    n_completed: int,
    mode: str,
    n_startup_trials: int = 4,
    n_warmup_epochs: int = 1,
    min_stale_epochs: int = 1,
    percentile: float = 50.0,
    rung_factor: float | None = None,
) -> PruneDecision:
    """The pure rule; see the module docstring. `n_completed`: the trials counted towards startup."""
    if n_completed < n_startup_trials:
        return PruneDecision(False, f"{n_completed} of {n_startup_trials} startup trials")
    if epoch <= n_warmup_epochs:
        return PruneDecision(False, f"epoch {epoch} is within the {n_warmup_epochs} warm-up epochs")
    if not is_rung(epoch, n_warmup_epochs + 1, rung_factor):
        return PruneDecision(False, f"epoch {epoch} is not a rung")
    if stale_epochs < min_stale_epochs:
        return PruneDecision(False, "still improving")
    if not others_best:
        return PruneDecision(False, "no other trial to compare with")
    if own_best is None:
        return PruneDecision(True, f"epoch {epoch}: no finite monitored value yet")
    q = percentile if mode == "min" else 100.0 - percentile
    bar = float(np.percentile(np.asarray(others_best, dtype=np.float64), q))
    worse = own_best > bar if mode == "min" else own_best < bar
    if not worse:
        return PruneDecision(False, f"best {own_best:.6g} is not worse than {bar:.6g}")
    stale = f"no improvement for {stale_epochs} epoch(s) and " if min_stale_epochs else ""
    return PruneDecision(
        True,
        f"epoch {epoch}: {stale}best {own_best:.6g} is worse than the {percentile:g}th percentile {bar:.6g} "
        f"of {len(others_best)} other trials",
    )


class EarlyStoppingPruner:
    """Judges a trial's early-stopping monitor against the other trials' records in the storage.

    `compare_with`: "completed" compares with the completed trials only (a trial that stopped
    earlier carries its final best forward); "reached" with every trial that reached this epoch,
    pruned and running ones included, as successive halving ranks everything that reached a rung. In
    the latter, startup counts the trials that reached the epoch."""

    def __init__(self, n_startup_trials: int = 4, n_warmup_epochs: int = 1, min_stale_epochs: int = 1,
                 percentile: float = 50.0, compare_with: str = "completed", rung_factor: float | None = None) -> None:
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials cannot be negative but got {n_startup_trials}")
        if n_warmup_epochs < 0:
            raise ValueError(f"n_warmup_epochs cannot be negative but got {n_warmup_epochs}")
        if min_stale_epochs < 0:
            raise ValueError(f"min_stale_epochs cannot be negative but got {min_stale_epochs}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100] but got {percentile}")
        if compare_with not in ("completed", "reached"):
            raise ValueError(f"compare_with must be 'completed' or 'reached' but got {compare_with!r}")
        if rung_factor is not None and rung_factor <= 1.0:
            raise ValueError(f"rung_factor must be greater than 1 but got {rung_factor}")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_epochs = n_warmup_epochs
        self.min_stale_epochs = min_stale_epochs
        self.percentile = percentile
        self.compare_with = compare_with
        self.rung_factor = rung_factor

    @classmethod
    def from_config(cls, cfg: PrunerConfig) -> EarlyStoppingPruner:
        return cls(cfg.n_startup_trials, cfg.n_warmup_epochs, cfg.min_stale_epochs, cfg.percentile,
                   cfg.compare_with, cfg.rung_factor)

    def judge(self, study: optuna.Study, epoch: int, own_best: float | None, stale_epochs: int,
              monitor: str, own_number: int | None = None) -> PruneDecision:
        """This trial at `epoch` against the other trials' records in the storage (decide_prune)."""
        mode = monitor_mode(monitor)
        states = (TrialState.COMPLETE,) if self.compare_with == "completed" else (
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        others, counted = [], 0
        for t in study.get_trials(deepcopy=False, states=states):
            record = TrialRecord.read(t)
            history = record.monitor_history or []
            if t.number == own_number or (record.monitor or monitor) != monitor:
                continue  # itself, or a trial that monitored something else (the monitor was searched)
            if self.compare_with == "reached" and len(history) < epoch:
                continue
            counted += 1
            best = best_so_far(history, epoch, mode)
            if best is not None:
                others.append(best)
        return decide_prune(
            epoch=epoch, own_best=own_best, stale_epochs=stale_epochs, others_best=others,
            n_completed=counted, mode=mode, n_startup_trials=self.n_startup_trials,
            n_warmup_epochs=self.n_warmup_epochs, min_stale_epochs=self.min_stale_epochs,
            percentile=self.percentile, rung_factor=self.rung_factor,
        )


class PruningCallback(Callback):
    """Records the monitored value each epoch and raises `optuna.TrialPruned` when told to.

    It takes the value at validation end, before last.pt is written (its history is its state in
    last.pt, so a resumed trial's pruner judges the whole history). At epoch end, after every callback
    has seen the epoch (last.pt written, metrics logged, best weights kept), it publishes the history
    to the trial's record, where other trials' pruners read it, reports it to Optuna, and decides: so
    the storage never holds an epoch that no last.pt covers. It judges by the trainer's own early
    stopper, found at fit start.
    """

    def __init__(self, trial: optuna.Trial, pruner: EarlyStoppingPruner | None) -> None:
        self.trial = trial
        self.pruner = pruner  # None: Optuna's own pruner (study.pruner), or no pruning at all
        self.stopper: EarlyStopping | None = None
        self.history: list[float | None] = []
        self.single_objective = len(trial.study.directions) == 1
        self.last_decision: PruneDecision | None = None

    def on_fit_start(self, trainer: TrainerView) -> None:
        self.stopper = trainer.find_callback(EarlyStopping)
        TrialRecord(monitor=self.stopper.monitor).write(self.trial)

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.stopper.monitor, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed trial: the saved epochs' monitored values, recorded and re-reported to this (new)
        Optuna trial, so pruners judge its whole history, not just the epochs it trains itself."""
        self.history = list(state["history"])
        TrialRecord(monitor_history=self.history).write(self.trial)
        if self.single_objective:
            mode = monitor_mode(state["monitor"])  # restored before this callback's on_fit_start
            for epoch, value in enumerate(self.history, start=1):
                if value is not None:
                    self.trial.report(self._aligned(value, mode), step=epoch)

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        value = float(metrics[self.stopper.monitor])
        self.history.append(value if math.isfinite(value) else None)

    def on_epoch_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        TrialRecord(monitor_history=self.history).write(self.trial)
        value = self.history[-1]
        if self.single_objective and value is not None:
            self.trial.report(self._aligned(value, self.stopper.mode), step=epoch)
        if trainer.should_stop or epoch >= trainer.max_epochs:
            # Stopping anyway (patience, divergence, or the last epoch): that is the truer reason, and
            # pruning now would save nothing but throw away a finished trial's result.
            return
        if self.pruner is not None:
            self.last_decision = self.pruner.judge(
                self.trial.study, epoch, self.stopper.state.best, self.stopper.state.stale, self.stopper.monitor,
                own_number=self.trial.number,
            )
            if self.last_decision.prune:
                raise optuna.TrialPruned(self.last_decision.reason)
        elif self.single_objective and self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {type(self.trial.study.pruner).__name__} pruned it")

    def _aligned(self, value: float, mode: str) -> float:
        # Optuna's pruners read "better" from the study's direction. When the monitor points the
        # other way (val_loss in a maximize-accuracy study) the reported value is negated, so that
        # "better" means the same thing to both.
        maximize = self.trial.study.direction == optuna.study.StudyDirection.MAXIMIZE
        higher_is_better = mode == "max"
        return value if maximize == higher_is_better else -value

