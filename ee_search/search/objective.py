"""One Optuna trial: sample -> config -> tracked run -> experiment -> exits -> values.

Cross-links both ways: the MLflow run id is a user attribute of the trial, and the trial number a tag
of the run. However the trial ends, its ending is decided once (an `Ending`: COMPLETE with values,
PRUNED with a reason, or FAIL with the error) and the run is closed from it in one place, `_close`,
so the run's status always matches the state Optuna records (FINISHED, KILLED for pruned, FAILED),
and what was logged before the end stays: per-epoch metrics, and the best checkpoint.

A trial may also be a retry of one whose worker died or was stopped (search/resume.py): it then
reopens that trial's run, restores its `last.pt` and trains on with the original trial's seed. Stopped
by SIGTERM / Ctrl-C, it ends INTERRUPTED: the run is KILLED with `ee_search.state=INTERRUPTED` and a
WAITING retry is queued, while Optuna records FAIL.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
import yaml

from ee_search.config import LoadedStudy, StudyConfig, redact
from ee_search.data import prepare_data
from ee_search.exits.report import csv_text, tradeoff_figure, tradeoff_rows
from ee_search.figures import figure_files
from ee_search.fit import TrainedNetwork, train_network
from ee_search.pareto import POINTS_ATTR
from ee_search.search import space
from ee_search.search.describe import describe_ending
from ee_search.search.events import StudyEvents
from ee_search.search.pruning import EarlyStoppingPruner, PruningCallback
from ee_search.search.resume import (
    RESUMED_BY_ATTR,
    Continuation,
    StopRequest,
    enqueue_retry,
    start_or_continue,
)
from ee_search.tracking import EpochLogger, StudyTracker, SystemMetrics, TrialRun, config_params
from ee_search.train import NON_FINITE_LOSS, Callback, InterruptWhen, ResumeSpec, TrainingInterrupted

logger = logging.getLogger(__name__)

PRUNED = "pruned"
INTERRUPTED = "INTERRUPTED"  # an Ending state of our own: Optuna records FAIL, and a retry resumes it
FINAL_METRICS = ("accuracy", "avg_exit_depth", "relative_flops", "curve_hypervolume")
_TEXT_LIMIT = 500  # user attributes and tags hold a message, not a traceback


@dataclass
class Ending:
    """How a trial ended, decided once; `_close` turns it into trial attributes and the run's status."""

    state: str  # COMPLETE | PRUNED | FAIL (Optuna's names; tracking.RUN_STATUS maps them) | INTERRUPTED
    epochs: int
    stop_reason: str | None = None
    values: list[float] | None = None  # COMPLETE only
    detail: str | None = None  # why it was pruned, or the error
    error: BaseException | None = None  # FAIL: re-raised after the run is closed
    config: StudyConfig | None = None  # the trial's own (sampled) config, for the run's description


class TrialInterrupted(Exception):
    """The trial stopped on SIGTERM / Ctrl-C, saved, and has a WAITING retry; Optuna marks it FAIL."""


class Objective:
    def __init__(
        self,
        study_file: LoadedStudy,
        tracker: StudyTracker,
        parent_run_id: str,
        device: torch.device,
        stop: StopRequest | None = None,
        events: StudyEvents | None = None,
    ) -> None:
        self.study_file = study_file
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.device = device
        self.stop = stop or StopRequest()
        self.events = events or StudyEvents()
        self.interrupted: list[int] = []  # trials left to be resumed by this process
        pruner_cfg = study_file.config.search.pruner
        self.es_pruner = EarlyStoppingPruner.from_config(pruner_cfg) if pruner_cfg.type == "early_stopping" else None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        values = space.sample(trial, self.study_file.config)  # a retry gets its predecessor's params back
        config = self.study_file.with_values(values)
        pruning = PruningCallback(trial, self.es_pruner)
        with tempfile.TemporaryDirectory(prefix=f"ee-search-trial-{trial.number}-") as tmp:
            cont = start_or_continue(trial, self.tracker, self.parent_run_id,
                                     lambda n: config_params(config, **{"trial.seed": config.seed + n}), Path(tmp))
            run = cont.run
            # The original trial's seed: a resumed trial ends exactly where it would have.
            seed = config.seed + cont.origin
            checkpoint = Path(tmp) / "best.pt"
            # Sampled while the trial trains, flushed before the run is closed.
            with SystemMetrics(self.tracker.uri, run.run_id, resumed=not cont.new_run):
                try:
                    ending = self._train(trial, run, config, seed, pruning, checkpoint, cont, Path(tmp))
                except optuna.TrialPruned as pruned:
                    ending = Ending("PRUNED", len(pruning.history), PRUNED, detail=str(pruned))
                except (TrainingInterrupted, KeyboardInterrupt) as error:  # left to be resumed, not failed
                    ending = Ending(INTERRUPTED, len(pruning.history),
                                    detail=f"{type(error).__name__}: {error}", error=error)
                except BaseException as error:  # the run must not stay RUNNING
                    ending = Ending("FAIL", len(pruning.history), detail=f"{type(error).__name__}: {error}",
                                    error=error)
            ending.config = config
            self._close(trial, run, ending, checkpoint)
        if ending.state == "COMPLETE":
            return ending.values
        if ending.state == "PRUNED":
            raise optuna.TrialPruned(ending.detail)
        if isinstance(ending.error, TrainingInterrupted):
            trial.study.stop()  # start no new trial; Optuna records this one as FAIL (it has a retry)
            raise TrialInterrupted(ending.detail)
        raise ending.error

    def _train(self, trial: optuna.Trial, run: TrialRun, config: StudyConfig, seed: int,
               pruning: PruningCallback, checkpoint: Path, cont: Continuation, tmp: Path) -> Ending:
        """Train, then decide how the trial ended; exceptions (pruning, errors) are the caller's."""
        trial.set_user_attr("mlflow_run_id", run.run_id)
        trial.set_user_attr("mlflow_run_url", self.tracker.run_url(run.run_id))
        run.describe(f"Optuna trial {trial.number} of study `{config.name}`: training"
                     + (f", resumed from trial {cont.origin} at epoch {cont.resumed_epoch}" if not cont.new_run else "")
                     + f" (up to {config.train.max_epochs} epochs).")
        prepared = prepare_data(config.data, config.seed)  # once per trial, passed to the fit
        if cont.new_run:  # a retry's reopened run has these already
            run.log_text(redact(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)), "config/trial.yaml")
            run.log_dataset(config.data.dataset, prepared.fingerprint, config.data.root, prepared.split_sizes)
        publish = lambda path: run.log_artifact(path, "checkpoints")  # noqa: E731
        resume = ResumeSpec(tmp / "last.pt", config.train.resume.every_epochs, cont.state, on_written=publish,
                            extra=lambda: {"trial_number": trial.number, "origin_trial": cont.origin,
                                           "mlflow_run_id": run.run_id})
        recorders = [EpochLogger(run, skip=cont.logged_steps), EpochEvents(self.events, trial.number),
                     InterruptWhen(self.stop.reason)]
        self.events.trial_started(trial.number, config.train.max_epochs, cont.resumed_epoch)
        result = train_network(config, device=self.device, seed=seed, prepared=prepared, recorders=recorders,
                               pruning=pruning, checkpoint_path=checkpoint, on_best_saved=publish, resume=resume)
        if resume.write_seconds:
            trial.set_user_attr("last_pt_write_seconds", max(resume.write_seconds))
        fit = result.fit
        trial.set_user_attr("best_epoch", result.best_epoch)
        if fit.stop_reason == NON_FINITE_LOSS or result.outcome is None:
            # Divergence is a property of the sampled configuration, not a bug: prune, don't fail.
            return Ending("PRUNED", fit.epochs_trained, NON_FINITE_LOSS,
                          detail=f"training diverged (non-finite loss) at epoch {fit.epochs_trained}")
        metrics = result.metrics | {"best_epoch": float(result.best_epoch or 0),
                                    "epochs_trained": float(fit.epochs_trained)}
        out = [metrics[name] for name in config.search.objectives]
        if not all(math.isfinite(v) for v in out):
            error = RuntimeError(f"objective values are not finite: {out}")
            return Ending("FAIL", fit.epochs_trained, fit.stop_reason, detail=str(error), error=error)
        if not cont.new_run:
            # A retry of a trial killed after its final metrics were logged but before it ended:
            # those metrics are already in the run (step 0), and a step is never logged twice.
            metrics_to_log = {k: v for k, v in metrics.items() if 0 not in run.logged_steps(k)}
        else:
            metrics_to_log = metrics
        run.log_metrics(metrics_to_log)
        for name in FINAL_METRICS:
            trial.set_user_attr(name, metrics[name])
        trial.set_user_attr("thresholds", list(config.exits.thresholds))
        # The network's own front travels with the trial, so the dense front is read from the
        # storage in milliseconds; val_logits.pt lets any later command recompute it.
        trial.set_user_attr(POINTS_ATTR, [[list(p.thresholds), p.accuracy, p.avg_exit_depth, p.relative_flops]
                                          for p in result.points])
        self._log_curve(trial.number, run, config, result)
        return Ending("COMPLETE", fit.epochs_trained, fit.stop_reason, values=out)

    def _close(self, trial: optuna.Trial, run: TrialRun, ending: Ending, checkpoint: Path) -> None:
        """The one way out: trial attributes, the best checkpoint, and the run's final status."""
        trial.set_user_attr("epochs_trained", ending.epochs)
        if ending.stop_reason is not None:
            trial.set_user_attr("stop_reason", ending.stop_reason)
        if ending.state == "PRUNED":
            trial.set_user_attr("prune_detail", (ending.detail or "")[:_TEXT_LIMIT])
        config = ending.config or self.study_file.config
        run.describe(describe_ending(trial.number, config, ending.state, ending.epochs, ending.stop_reason,
                                     ending.values, ending.detail))
        if ending.state == INTERRUPTED:
            self._leave_to_resume(trial, run, ending, checkpoint)
            return
        try:
            if ending.state == "FAIL":
                trial.set_user_attr("error", (ending.detail or "")[:_TEXT_LIMIT])
                run.set_tags({"ee_search.error": (ending.detail or "")[:_TEXT_LIMIT]})
            if checkpoint.is_file():
                run.log_artifact(checkpoint, "checkpoints")
            run.delete_last_checkpoint()  # this ending is final: nothing will resume it
        finally:
            run.finish(ending.state, ending.stop_reason)

    def _leave_to_resume(self, trial: optuna.Trial, run: TrialRun, ending: Ending, checkpoint: Path) -> None:
        """Interrupted: the run is closed as KILLED + INTERRUPTED first, then a WAITING retry is
        enqueued (so no other worker reopens the run before it is closed), and this trial points to it."""
        try:
            if checkpoint.is_file():
                run.log_artifact(checkpoint, "checkpoints")
        finally:
            run.interrupted(ending.detail or "interrupted")
        successor = enqueue_retry(trial)
        if successor is not None:
            trial.set_user_attr(RESUMED_BY_ATTR, successor)
            run.set_tags({"ee_search.resumed_by_trial": successor})
        self.interrupted.append(trial.number)

    def _log_curve(self, number: int, run: TrialRun, config: StudyConfig, result: TrainedNetwork) -> None:
        cached = result.val_logits
        with tempfile.TemporaryDirectory(prefix="ee-search-logits-") as tmp:
            path = Path(tmp) / "val_logits.pt"
            torch.save({"logits": cached.logits.detach().float().cpu(), "labels": cached.labels.cpu().long(),
                        "relative_flops": list(result.costs.relative), "criterion": config.exits.criterion}, path)
            run.log_artifact(path, "exits")
        run.log_text(csv_text(tradeoff_rows(result.curve, result.points)), "exits/tradeoff.csv")
        fig = tradeoff_figure(
            result.curve,
            result.points,
            chosen=result.metrics,
            title=f"{config.name} trial {number}: accuracy vs compute "
            f"({config.model.name}, thresholds {[round(t, 4) for t in config.exits.thresholds]})",
            criterion=config.exits.criterion,
        )
        run.log_files(figure_files(fig, "tradeoff"), "exits")  # tradeoff.html (interactive) + .png


class EpochEvents(Callback):
    """Forwards each epoch's validation metrics to the study's events (the live progress lines)."""

    def __init__(self, events: StudyEvents, trial_number: int) -> None:
        self.events = events
        self.trial_number = trial_number

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.events.epoch_ended(self.trial_number, epoch, metrics)
