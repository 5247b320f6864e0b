"""The one writer of a trial to Optuna and MLflow (docs/design.md §7).

A trial's story, in the order it happens: its run is opened (a new one, or a retry's predecessor's run
reopened with its last.pt), training starts, each epoch is logged, the result is recorded, and the
trial is closed as it ended, or left to be resumed. Every Optuna user attribute goes through
`records.TrialRecord` and every MLflow write through `tracking.TrialRun`, so the two stores are
written from one place and always agree: the run's status is the one the trial's `Ending` maps to.

Cross-links both ways: the MLflow run id is a user attribute of the trial, the trial number a tag of
the run. What was logged before the end stays, however the trial ends: per-epoch metrics, and the best
checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from ee_search.config import StudyConfig, redact
from ee_search.exits.report import csv_text, tradeoff_figure, tradeoff_rows
from ee_search.figures import figure_files
from ee_search.records import (
    CHECKPOINTS,
    EXITS,
    FINAL_METRICS,
    LAST_CHECKPOINTS,
    TRADEOFF_CSV,
    TRADEOFF_FIGURE,
    TRIAL_CONFIG,
    VAL_LOGITS,
    Ending,
    TrialRecord,
    file_name,
    save_val_logits,
)
from ee_search.search.events import StudyEvents
from ee_search.search.retry import enqueue_retry, retry_history
from ee_search.tracking import (
    ERROR_TAG,
    RESUMED_AT_TAG,
    RESUMED_BY_TAG,
    RESUMED_FROM_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    StudyTracker,
    TrialRun,
)
from ee_search.tracking_models import TrialModel, link_logged_metrics, log_trial_model
from ee_search.train import Callback, completed_epochs, newest_readable, saved_history

logger = logging.getLogger(__name__)

_TEXT_LIMIT = 500  # user attributes and tags hold a message, not a traceback


@dataclass
class Continuation:
    """Where a trial starts: its run, its seed's trial number, and (a retry) a loaded last.pt if any."""

    run: TrialRun
    origin: int  # the original trial's number: the seed is config.seed + origin
    new_run: bool = True
    state: dict[str, Any] | None = None  # set by `TrialRecorder.load_last`
    logged_steps: frozenset[int] = frozenset()  # epochs the run already has metrics for
    previous: int | None = None  # a retry: the trial it continues
    state_from: str | None = None  # the last.pt slot the state came from (artifact path)

    @property
    def resumed_epoch(self) -> int:
        return 0 if self.state is None else completed_epochs(self.state)

    def last_pt_files(self, directory: Path) -> tuple[Path, Path]:
        """Where this fit writes last.pt locally, the first write first: the slot the state did NOT
        come from, so the state continued from stays in the store until the fit has a newer one."""
        first, second = LAST_CHECKPOINTS if self.state_from != LAST_CHECKPOINTS[0] else LAST_CHECKPOINTS[::-1]
        return directory / file_name(first), directory / file_name(second)


@dataclass
class TrialEnd:
    """How a trial ended, decided once; `TrialRecorder.close` writes it to both stores."""

    ending: Ending
    epochs: int
    stop_reason: str | None = None
    values: list[float] | None = None  # COMPLETE only
    detail: str | None = None  # why it was pruned, or the error
    error: BaseException | None = None  # FAILED / INTERRUPTED: re-raised after the run is closed


class TrialRecorder:
    def __init__(self, trial: optuna.Trial, tracker: StudyTracker, events: StudyEvents) -> None:
        self.trial = trial
        self.tracker = tracker
        self.events = events
        self.cont: Continuation | None = None

    @property
    def run(self) -> TrialRun:
        assert self.cont is not None, "open() comes first"
        return self.cont.run

    # ------------------------------------------------------------------ opened
    def open(self, parent_run_id: str, params: Callable[[int], dict[str, Any]]) -> Continuation:
        """A new run for a new trial; for a retry, its predecessor's run reopened (`load_last` then
        loads its last.pt)."""
        history = retry_history(self.trial)
        run_id = TrialRecord.read(self.trial).mlflow_run_id
        origin = history[0] if history else self.trial.number
        if not history or not run_id:  # a new trial (or a retry of one that died before its run existed)
            self.cont = Continuation(self.tracker.start_trial(parent_run_id, self.trial.number, params(origin)), origin)
        else:
            self.cont = self._reopen(run_id, history[-1], origin)
        TrialRecord(mlflow_run_id=self.run.run_id, mlflow_run_url=self.tracker.run_url(self.run.run_id),
                    worker=f"{socket.gethostname()}:{os.getpid()}").write(self.trial)
        return self.cont

    def _reopen(self, run_id: str, previous: int, origin: int) -> Continuation:
        run = self.tracker.reopen_trial(run_id, self.trial.number)
        return Continuation(run, origin, False, logged_steps=frozenset(run.logged_steps("val_loss")),
                            previous=previous)

    def load_last(self, directory: Path) -> None:
        """A retry's state: the newest of its run's last.pt files that reads back whole (docs/design.md
        §9). A corrupt newest one costs the epochs since the other; none readable, the trial starts over
        with the same seed. Either says so in one warning line. Called inside the trial's error
        handling, so anything else going wrong here still closes the reopened run."""
        cont = self.cont
        if cont.new_run:
            return
        found = newest_readable(self.tracker.download_last_checkpoints(self.run.run_id, directory / "downloaded"))
        cont.state, cont.state_from = found.state, found.name
        if found.refused:
            logger.warning("trial %d (continuing trial %d): %s; %s", self.trial.number, cont.previous,
                           "; ".join(map(str, found.refused)),
                           f"continuing from {found.name} at epoch {cont.resumed_epoch}" if found.state is not None
                           else "starting it over from epoch 0 with the same seed")
        TrialRecord(resumed_from=cont.previous, resumed_at_epoch=cont.resumed_epoch).write(self.trial)
        self.run.set_tags({RESUMED_FROM_TAG: cont.previous, RESUMED_AT_TAG: cont.resumed_epoch})
        if found.state is not None:
            # Epochs saved in last.pt but not logged (killed between the two): log them now, so the
            # run's history has no gap; the ones it has are never logged twice.
            for epoch, metrics in enumerate(saved_history(found.state), start=1):
                if epoch not in cont.logged_steps:
                    self.run.log_metrics(metrics, step=epoch)
        logger.info("trial %d continues trial %d from epoch %d", self.trial.number, cont.previous,
                    cont.resumed_epoch)

    def started(self, config: StudyConfig, fingerprint: str, split_sizes: dict[str, int]) -> None:
        """Training starts: the run says what it is; a new run gets the trial's config and its data."""
        cont = self.cont
        self.run.describe(f"Optuna trial {self.trial.number} of study `{config.name}`: training"
                          + (f", resumed from trial {cont.origin} at epoch {cont.resumed_epoch}" if not cont.new_run else "")
                          + f" (up to {config.train.max_epochs} epochs).")
        if cont.new_run:  # a retry's reopened run has these already
            self.run.log_text(redact(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)), TRIAL_CONFIG)
            self.run.log_dataset(config.data.dataset, fingerprint, config.data.root, split_sizes)
        self.events.trial_started(self.trial.number, config.train.max_epochs, cont.resumed_epoch)

    # ------------------------------------------------------------------ each epoch
    def epoch_callbacks(self) -> list[Callback]:
        """Each epoch's metrics to the run (step = epoch) and to whoever shows progress."""
        return [EpochLogger(self.run, skip=self.cont.logged_steps), EpochEvents(self.events, self.trial.number)]

    def publish_checkpoint(self, path: Path) -> None:
        """best.pt or last.pt, into the run's checkpoints/ as soon as it is written."""
        self.run.log_artifact(path, CHECKPOINTS)

    # ------------------------------------------------------------------ finished
    def trained(self, best_epoch: int | None, write_seconds: Iterable[float]) -> None:
        seconds = list(write_seconds)
        TrialRecord(best_epoch=best_epoch, last_pt_write_seconds=max(seconds) if seconds else None).write(self.trial)

    def finished(self, config: StudyConfig, metrics: dict[str, float], result) -> None:
        """A completed trial's result: final metrics (never logged twice), the trial's own front, and
        its accuracy-vs-compute curve with the validation logits it was computed from."""
        to_log = metrics
        if not self.cont.new_run:
            # A retry of a trial killed after its final metrics were logged but before it ended:
            # those metrics are already in the run (step 0), and a step is never logged twice.
            to_log = {k: v for k, v in metrics.items() if 0 not in self.run.logged_steps(k)}
        started = time.perf_counter()
        model_id = self._log_model(config, result)
        self.run.log_metrics(to_log, model_id=model_id)  # the run's final metrics are the model's too
        if model_id and len(to_log) < len(metrics):  # a retry: link those its predecessor had logged
            link_logged_metrics(self.run.client, self.run.run_id, model_id, set(metrics) - set(to_log))
        seconds = time.perf_counter() - started if model_id else None  # what the model costs the trial
        # The network's own front travels with the trial, so the dense front is read from the
        # storage in milliseconds; val_logits.pt lets any later command recompute it.
        TrialRecord(**{name: metrics[name] for name in FINAL_METRICS}, thresholds=list(config.exits.thresholds),
                    operating_points=TrialRecord.rows(result.points), mlflow_model_id=model_id,
                    mlflow_model_seconds=seconds).write(self.trial)
        self._log_curve(config, result)

    def _log_model(self, config: StudyConfig, result) -> str | None:
        """The kept network as an MLflow LoggedModel (the experiment's Models tab, docs/design.md §5),
        linked to the run at the best epoch: its id, or None (MLflow < 3, or logging it failed)."""
        if result.checkpoint is None or result.best_epoch is None:
            return None
        model = TrialModel(self.tracker.experiment_id, self.run.run_id, self.trial.number, result.best_epoch,
                           Path(result.checkpoint), dict(self.trial.params),
                           {TRIAL_TAG: str(self.trial.number), STUDY_TAG: config.name})
        return log_trial_model(self.run.client, model, replace=not self.cont.new_run)

    def _log_curve(self, config: StudyConfig, result) -> None:
        with tempfile.TemporaryDirectory(prefix="ee-search-logits-") as tmp:
            path = Path(tmp) / file_name(VAL_LOGITS)
            save_val_logits(path, result.val_logits.logits, result.val_logits.labels, list(result.costs.relative),
                            config.exits.criterion)
            self.run.log_artifact(path, EXITS)
        self.run.log_text(csv_text(tradeoff_rows(result.curve, result.points)), TRADEOFF_CSV)
        fig = tradeoff_figure(
            result.curve,
            result.points,
            chosen=result.metrics,
            title=f"{config.name} trial {self.trial.number}: accuracy vs compute "
            f"({config.model.name}, thresholds {[round(t, 4) for t in config.exits.thresholds]})",
            criterion=config.exits.criterion,
        )
        self.run.log_files(figure_files(fig, TRADEOFF_FIGURE), EXITS)  # tradeoff.html (interactive) + .png

    # ------------------------------------------------------------------ closed
    def close(self, end: TrialEnd, config: StudyConfig, checkpoint: Path) -> int | None:
        """The one way out: trial attributes, the best checkpoint, the run's description and status.
        An interrupted trial is left to be resumed; returns the number of the retry that will."""
        detail = (end.detail or "")[:_TEXT_LIMIT]
        TrialRecord(epochs_trained=end.epochs, stop_reason=end.stop_reason,
                    prune_detail=detail if end.ending is Ending.PRUNED else None,
                    error=detail if end.ending is Ending.FAILED else None).write(self.trial)
        self.run.describe(end.ending.describe(self.trial.number, config, end.epochs, end.stop_reason, end.values,
                                              end.detail))
        try:
            if end.ending is Ending.FAILED:
                self.run.set_tags({ERROR_TAG: detail})
            if checkpoint.is_file():
                self.publish_checkpoint(checkpoint)
            if end.ending.final:
                self.run.delete_last_checkpoints()  # nothing will resume this trial
        finally:
            self.run.finish(end.ending, end.stop_reason, end.detail)
        return None if end.ending.final else self._leave_to_resume()

    def _leave_to_resume(self) -> int | None:
        """The run is closed (KILLED, INTERRUPTED) before the WAITING retry is enqueued, so no other
        worker reopens it before then; this trial then points to its successor."""
        successor = enqueue_retry(self.trial)
        if successor is not None:
            TrialRecord(resumed_by=successor).write(self.trial)
            self.run.set_tags({RESUMED_BY_TAG: successor})
        return successor


class EpochLogger(Callback):
    """Per-epoch metrics to the trial's run, `step` = epoch, as soon as validation ends.

    `skip` holds epochs the run already has (a resumed trial redoing epochs that were logged after
    its last.pt): a step is never logged twice."""

    def __init__(self, run: TrialRun, skip: Iterable[int] = frozenset()) -> None:
        self.run = run
        self.skip = set(skip)

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch not in self.skip:
            self.run.log_metrics(metrics, step=epoch)


class EpochEvents(Callback):
    """Forwards each epoch's validation metrics to the study's events (the live progress lines)."""

    def __init__(self, events: StudyEvents, trial_number: int) -> None:
        self.events = events
        self.trial_number = trial_number

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.events.epoch_ended(self.trial_number, epoch, metrics)
