"""One Optuna trial, as a recipe: sample -> config -> open its run -> train -> judge -> close.

Everything the trial writes to Optuna and MLflow goes through its `TrialRecorder`; this module only
decides. However the trial ends, its ending is decided once (a `TrialEnd`: COMPLETE with values,
PRUNED with a reason, FAILED with the error, or INTERRUPTED) and the recorder closes the run from it.

A trial may be a retry of one whose worker died or was stopped (search/retry.py): the recorder then
reopens that trial's run and its `last.pt`, and training goes on with the original trial's seed.
Stopped by SIGTERM / Ctrl-C, or by a full disk anywhere (search/disk_full.py), it ends INTERRUPTED:
Optuna records FAIL, the run waits KILLED, and a WAITING retry is queued (docs/design.md §9). So does a trial whose tracking server stayed away past
`tracking.max_outage_s` (docs/design.md §5, "Tracking outages"): an infrastructure failure never
costs the trial or its last.pt.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import optuna
import torch

from ee_search.config import LoadedStudy, StudyConfig
from ee_search.config.params import config_params
from ee_search.data import prepare_data
from ee_search.fit import train_network
from ee_search.records import BEST_CHECKPOINT, PRUNED_BY_PRUNER, Ending, file_name
from ee_search.search import space
from ee_search.search.duplicates import skip_if_duplicate
from ee_search.search.disk_full import DiskWatch, disk_full_detail, disk_full_path
from ee_search.search.events import StudyEvents
from ee_search.search.ownership import FenceCallback, FencedRun, TrialOwnership, TrialTakenOver
from ee_search.search.pruning import EarlyStoppingPruner, PruningCallback
from ee_search.search.recorder import Continuation, TrialEnd, TrialRecorder
from ee_search.search.resilient_storage import StorageOutage
from ee_search.search.retry import enqueue_retry, successor
from ee_search.search.signals import StopRequest
from ee_search.spool import TrackingUnavailable, is_transient
from ee_search.tracking import StudyTracker, SystemMetrics
from ee_search.train import NON_FINITE_LOSS, InterruptWhen, ResumeSpec, TrainingInterrupted


class TrialInterrupted(Exception):
    """The trial stopped on SIGTERM / Ctrl-C, saved, and has a WAITING retry; Optuna marks it FAIL."""


def _interrupted_by(error: BaseException, detail: str) -> TrainingInterrupted:
    """A full disk, as the interruption it is treated as; the disk's error stays its cause."""
    interrupted = TrainingInterrupted(detail)
    interrupted.__cause__ = error
    return interrupted


class TrialObjective:
    """The callable `study.optimize` runs: one trial from sampled values to its objective values."""

    def __init__(self, study_file: LoadedStudy, tracker: StudyTracker, parent_run_id: str, device: torch.device,
                 stop: StopRequest | None = None, events: StudyEvents | None = None,
                 disk: DiskWatch | None = None) -> None:
        self.study_file = study_file
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.device = device
        self.stop = stop or StopRequest()
        self.events = events or StudyEvents()
        self.disk = disk or DiskWatch(self.stop)  # a full disk stops the study (search/disk_full.py)
        self.interrupted: list[int] = []  # trials left to be resumed by this process
        pruner_cfg = study_file.config.search.pruner
        self.es_pruner = EarlyStoppingPruner.from_config(pruner_cfg) if pruner_cfg.type == "early_stopping" else None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        ownership = TrialOwnership(trial).take()  # the fence: one worker per trial (search/ownership.py)
        config = self.study_file.with_values(space.sample(trial, self.study_file.config))  # a retry: same params
        if config.search.skip_duplicates:
            skip_if_duplicate(trial)  # no run, no epoch: PRUNED with duplicate_of (search/duplicates.py)
        recorder = TrialRecorder(trial, self.tracker, self.events)
        try:
            end = self._run(trial, recorder, config, ownership)
        except Exception as error:
            if self.disk.hit(error) is None:
                raise
            end = self._left_by_full_disk(trial, recorder, error)
        if end.ending is Ending.COMPLETE:
            return end.values
        if end.ending is Ending.PRUNED:
            raise optuna.TrialPruned(end.detail)
        if end.ending is Ending.INTERRUPTED:
            self.interrupted.append(trial.number)
        if isinstance(end.error, TrainingInterrupted):
            trial.study.stop()  # start no new trial; Optuna records this one as FAIL (it has a retry)
            raise TrialInterrupted(end.detail) from end.error
        raise end.error

    def _run(self, trial: optuna.Trial, recorder: TrialRecorder, config: StudyConfig,
             ownership: TrialOwnership) -> TrialEnd:
        with tempfile.TemporaryDirectory(prefix=f"ee-search-trial-{trial.number}-") as tmp:
            try:
                cont = recorder.open(self.parent_run_id, lambda n: config_params(config, **{"trial.seed": config.seed + n}))
            except TrackingUnavailable:  # no run to close: a WAITING copy starts it again later
                enqueue_retry(trial)
                self.interrupted.append(trial.number)
                trial.study.stop()
                raise
            cont.run = FencedRun(cont.run, ownership)  # every write to the run checks the fence first
            checkpoint = Path(tmp) / file_name(BEST_CHECKPOINT)  # where the fit writes it, uploaded on close
            # Sampled while the trial trains, flushed before the run is closed.
            with SystemMetrics(self.tracker.uri, cont.run.run_id, resumed=not cont.new_run, spool=self.tracker.spool):
                end = self._train_and_judge(trial, recorder, config, cont, Path(tmp), ownership)
            ownership.check()  # a trial taken over is left to its new owner: no ending written
            if end.ending is Ending.INTERRUPTED and self.disk.path is not None:
                # Room for the closing writes where this folder shares the full disk. Nothing is lost:
                # best.pt and last.pt went to the store as they were written (or their previous
                # versions did), and the retry's last.pt holds the best epoch's weights.
                for item in Path(tmp).iterdir():
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
            recorder.close(end, config, checkpoint)
        return end

    def _left_by_full_disk(self, trial: optuna.Trial, recorder: TrialRecorder, error: Exception) -> TrialEnd:
        """A full disk outside training (opening or closing the trial's run): the trial is left to be
        resumed as far as the stores still take writes; what they refuse, the stale-trial retry makes
        up for (docs/design.md §9)."""
        detail = disk_full_detail(self.disk.path)
        try:
            if recorder.cont is not None:
                recorder.run.finish(Ending.INTERRUPTED, detail=detail)
            if successor(trial.study, trial.number) is None:
                enqueue_retry(trial)
        except Exception as again:  # noqa: BLE001 - the disk is still full: left to the heartbeat
            if disk_full_path(again) is None:
                raise
        return TrialEnd(Ending.INTERRUPTED, 0, detail=detail, error=_interrupted_by(error, detail))

    def _outage(self) -> str | None:
        """Why the trial stops now, if the tracking server has been away past tracking.max_outage_s."""
        if not self.tracker.outage_expired():
            return None
        return f"the tracking server has been unreachable for {self.tracker.spool.outage_seconds():.0f} s"

    def _train_and_judge(self, trial: optuna.Trial, recorder: TrialRecorder, config: StudyConfig,
                         cont: Continuation, tmp: Path, ownership: TrialOwnership) -> TrialEnd:
        pruning = PruningCallback(trial, self.es_pruner)
        epochs = lambda: len(pruning.history)  # noqa: E731 - epochs judged so far, resumed ones included
        try:
            return self._train(trial, recorder, config, cont, tmp, pruning, FenceCallback(ownership))
        except (TrialTakenOver, StorageOutage):  # nothing of this trial is written any more
            raise
        except optuna.TrialPruned as pruned:
            return TrialEnd(Ending.PRUNED, epochs(), PRUNED_BY_PRUNER, detail=str(pruned))
        except (TrainingInterrupted, KeyboardInterrupt) as error:  # left to be resumed, not failed
            return TrialEnd(Ending.INTERRUPTED, epochs(), detail=f"{type(error).__name__}: {error}", error=error)
        except BaseException as error:  # the run must not stay RUNNING
            if (path := self.disk.hit(error)) is not None:  # not the trial's fault: resumed once there is room
                detail = disk_full_detail(path)
                return TrialEnd(Ending.INTERRUPTED, epochs(), detail=detail, error=_interrupted_by(error, detail))
            if isinstance(error, TrackingUnavailable) or (self.tracker.spool is not None and is_transient(error)):
                # The tracking server, not the trial: resumable, its last.pt kept (a read at its start).
                stopped = TrainingInterrupted(f"the tracking server is unreachable: {error}")
                return TrialEnd(Ending.INTERRUPTED, epochs(), detail=str(stopped), error=stopped)
            return TrialEnd(Ending.FAILED, epochs(), detail=f"{type(error).__name__}: {error}", error=error)

    def _train(self, trial: optuna.Trial, recorder: TrialRecorder, config: StudyConfig, cont: Continuation,
               tmp: Path, pruning: PruningCallback, fence: FenceCallback) -> TrialEnd:
        """Train, then judge the result; exceptions (pruning, errors) are the caller's."""
        recorder.load_last(tmp)  # a retry's last.pt: here, so whatever goes wrong still closes the run
        prepared = prepare_data(config.data, config.seed)  # once per trial, passed to the fit
        recorder.started(config, prepared.fingerprint, prepared.split_sizes)
        first, second = cont.last_pt_files(tmp)  # two slots written in turn (docs/design.md §9)
        resume = ResumeSpec(first, config.train.resume.every_epochs, cont.state, on_written=recorder.publish_checkpoint,
                            extra=lambda: {"trial_number": trial.number, "origin_trial": cont.origin,
                                           "mlflow_run_id": cont.run.run_id}, alternate=second)
        # The original trial's seed: a resumed trial ends exactly where it would have.
        result = train_network(config, device=self.device, seed=config.seed + cont.origin, prepared=prepared,
                               recorders=[fence, *recorder.epoch_callbacks(), InterruptWhen(self.stop.reason),
                                          InterruptWhen(self._outage)],
                               pruning=pruning, checkpoint_path=tmp / file_name(BEST_CHECKPOINT),
                               on_best_saved=recorder.publish_checkpoint, resume=resume)
        recorder.trained(result.best_epoch, resume.write_seconds)
        fit = result.fit
        if fit.stop_reason == NON_FINITE_LOSS or result.outcome is None:
            # Divergence is a property of the sampled configuration, not a bug: prune, don't fail.
            return TrialEnd(Ending.PRUNED, fit.epochs_trained, NON_FINITE_LOSS,
                            detail=f"training diverged (non-finite loss) at epoch {fit.epochs_trained}")
        metrics = result.metrics | {"best_epoch": float(result.best_epoch or 0),
                                    "epochs_trained": float(fit.epochs_trained)}
        values = [metrics[name] for name in config.search.objectives]
        if not all(math.isfinite(v) for v in values):
            error = RuntimeError(f"objective values are not finite: {values}")
            return TrialEnd(Ending.FAILED, fit.epochs_trained, fit.stop_reason, detail=str(error), error=error)
        recorder.finished(config, metrics, result)
        return TrialEnd(Ending.COMPLETE, fit.epochs_trained, fit.stop_reason, values=values)
