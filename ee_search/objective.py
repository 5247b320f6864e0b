"""One Optuna trial: sample -> config -> tracked run -> experiment -> exits -> values.

Cross-links both ways: the MLflow run id is a user attribute of the trial, and the trial number a tag
of the run. Whatever way the trial ends, its run gets the matching status (FINISHED, KILLED for pruned,
FAILED) and keeps what was logged before the end: per-epoch metrics, and the best checkpoint.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from ee_search import space
from ee_search.config import LoadedStudy, StudyConfig
from ee_search.exits.report import tradeoff_figure, write_csv, write_html
from ee_search.experiment import ExperimentResult, run_experiment
from ee_search.pruning import EarlyStoppingPruner, PruningCallback
from ee_search.tracking import EpochLogger, StudyTracker, TrialRun, flatten, redact
from ee_search.train.early_stopping import NON_FINITE_LOSS, EarlyStopping

logger = logging.getLogger(__name__)

PRUNED = "pruned"
FINAL_METRICS = ("accuracy", "avg_exit_depth", "relative_flops")


def trial_params(config: StudyConfig, seed: int) -> dict[str, Any]:
    """Every resolved config value by dotted name; the search space itself is in config/trial.yaml."""
    dumped = config.model_dump(mode="json")
    dumped["search"].pop("space")
    params = flatten(dumped)
    params["model.exit_loss_weights"] = config.loss_weights  # resolved, also when left to the default
    params["trial.seed"] = seed
    return params


class Objective:
    def __init__(
        self,
        study_file: LoadedStudy,
        tracker: StudyTracker,
        parent_run_id: str,
        device: torch.device,
    ) -> None:
        self.study_file = study_file
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.device = device
        pruner_cfg = study_file.config.search.pruner
        self.es_pruner = EarlyStoppingPruner.from_config(pruner_cfg) if pruner_cfg.type == "early_stopping" else None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        values = space.sample(trial, self.study_file.config)
        config = self.study_file.with_values(values)
        seed = config.seed + trial.number
        es = config.train.early_stopping
        stopper = EarlyStopping(es.monitor, es.patience, es.tol)
        pruning = PruningCallback(trial, stopper, self.es_pruner)
        run = self.tracker.start_trial(self.parent_run_id, trial.number, trial_params(config, seed))
        # From here on every way out closes the run with the status Optuna will record.
        with tempfile.TemporaryDirectory(prefix=f"ee-search-trial-{trial.number}-") as tmp:
            checkpoint = Path(tmp) / "best.pt"
            try:
                trial.set_user_attr("mlflow_run_id", run.run_id)
                trial_yaml = redact(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
                run.log_text(trial_yaml, "config/trial.yaml")
                result = run_experiment(
                    config,
                    device=self.device,
                    seed=seed,
                    stopper=stopper,
                    recorders=[EpochLogger(run)],
                    pruning=pruning,
                    checkpoint_path=checkpoint,
                )
                return self._end_complete(trial, run, config, result)
            except optuna.TrialPruned as pruned:
                trial.set_user_attr("prune_detail", str(pruned)[:500])
                self._end_pruned(trial, run, len(pruning.history), PRUNED, checkpoint)
                raise
            except BaseException as error:
                self._end_failed(trial, run, len(pruning.history), error, checkpoint)
                raise

    # ------------------------------------------------------------------------------ endings
    def _end_complete(self, trial: optuna.Trial, run: TrialRun, config: StudyConfig,
                      result: ExperimentResult) -> list[float]:
        fit = result.fit
        trial.set_user_attr("stop_reason", fit.stop_reason)
        trial.set_user_attr("epochs_trained", fit.epochs_trained)
        trial.set_user_attr("best_epoch", result.best_epoch)
        if result.checkpoint is not None:
            run.log_artifact(result.checkpoint, "checkpoints")
        if fit.stop_reason == NON_FINITE_LOSS or result.outcome is None:
            # Divergence is a property of the sampled configuration, not a bug: prune, don't fail.
            run.finish("PRUNED", NON_FINITE_LOSS)
            raise optuna.TrialPruned(f"training diverged (non-finite loss) at epoch {fit.epochs_trained}")
        metrics = result.metrics
        metrics["best_epoch"] = float(result.best_epoch or 0)
        metrics["epochs_trained"] = float(fit.epochs_trained)
        run.log_metrics(metrics)
        for name in FINAL_METRICS:
            trial.set_user_attr(name, metrics[name])
        trial.set_user_attr("thresholds", list(config.exits.thresholds))
        self._log_curve(trial.number, run, config, result)
        run.finish("COMPLETE", fit.stop_reason)
        out = [metrics[name] for name in config.search.objectives]
        if not all(math.isfinite(v) for v in out):
            raise RuntimeError(f"objective values are not finite: {out}")
        return out

    def _end_pruned(self, trial: optuna.Trial, run: TrialRun, epochs: int, reason: str, checkpoint: Path) -> None:
        if not run.finished:  # divergence already finished the run with its own reason
            trial.set_user_attr("stop_reason", reason)
            trial.set_user_attr("epochs_trained", epochs)
            if checkpoint.is_file():
                run.log_artifact(checkpoint, "checkpoints")
            run.finish("PRUNED", reason)
        else:
            trial.set_user_attr("stop_reason", NON_FINITE_LOSS)

    def _end_failed(self, trial: optuna.Trial, run: TrialRun, epochs: int, error: BaseException,
                    checkpoint: Path) -> None:
        if run.finished:
            return  # failed after the run was closed with its true status: leave that status
        trial.set_user_attr("epochs_trained", epochs)
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
        try:
            if checkpoint.is_file():
                run.log_artifact(checkpoint, "checkpoints")
            run.set_tags({"ee_search.error": f"{type(error).__name__}: {error}"[:500]})
        finally:
            run.finish("FAIL")

    def _log_curve(self, number: int, run: TrialRun, config: StudyConfig, result: ExperimentResult) -> None:
        with tempfile.TemporaryDirectory(prefix="ee-search-exits-") as tmp:
            csv_path, html_path = Path(tmp) / "tradeoff.csv", Path(tmp) / "tradeoff.html"
            write_csv(result.curve, csv_path)
            fig = tradeoff_figure(
                result.curve,
                chosen=result.metrics,
                title=f"{config.name} trial {number}: accuracy vs compute "
                f"({config.model.name}, thresholds {[round(t, 4) for t in config.exits.thresholds]})",
                criterion=config.exits.criterion,
            )
            write_html(fig, html_path)
            run.log_artifact(csv_path, "exits")
            run.log_artifact(html_path, "exits")
