"""The Optuna study: storage, sampler, pruner, create-or-resume, and the run loop.

`search.n_trials` is the number of trials the study should end up with, counted over every
invocation and worker (as Optuna's MaxTrialsCallback does, except that a FAIL with a retry does not
count: budget.counted_trials), so a resumed study runs only what is missing and several workers can
share one target. RDB storages (SQLite, PostgreSQL) get heartbeats, so a worker that dies mid-trial
leaves its trial to be retried (`search.retries` times) from its last.pt, or FAILED, never RUNNING
forever. SIGTERM / Ctrl-C, and a full disk (disk_full.py), stop every running trial at a batch
boundary and leave them to be resumed.
The parent MLflow run is terminal only once the study has its `n_trials` (shared by workers).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from ee_search.config import HeartbeatConfig, LoadedStudy, StudyConfig
from ee_search.errors import UserInputError
from ee_search.search.events import StudyEvents
from ee_search.search.pruners import build_optuna_pruner
from ee_search.search.samplers import build_sampler
from ee_search.search.study_figures import refresh_study_figures
from ee_search.config import redact
from ee_search.config.params import config_params
from ee_search.records import StudyRecord
from ee_search.search.disk_full import DiskFull, DiskWatch, Reserve, study_locations
from ee_search.search.budget import StopAtTarget, counted_trials, trials_to_start
from ee_search.search.gate import TrialGate, gate_lock
from ee_search.search.ownership import TrialTakenOver
from ee_search.search.resilient_storage import ResilientRDBStorage, outage_stops_resumably
from ee_search.search.retry import stale_trial_callback
from ee_search.search.signals import StopRequest, StudyInterrupted
from ee_search.tracking import StudyTracker

logger = logging.getLogger(__name__)
SIGNAL_DRAIN_S = 10.0  # stopped by a signal: this long to send the spool (a scheduler's grace is short)


def check_search_components(config: StudyConfig, source: str) -> None:
    """Build sampler and pruner once at load time, so bad `options` fail at `validate`."""
    for field_name, build in (
        ("search.sampler.options", lambda: build_sampler(config.search.sampler)),
        ("search.pruner.options", lambda: build_optuna_pruner(config.search.pruner, config.train.max_epochs)),
    ):
        try:
            build()
        except (TypeError, ValueError) as exc:
            raise UserInputError(source, field_name, str(exc)) from None


def open_storage(url: str, on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
                 heartbeat: HeartbeatConfig | None = None, outage_s: float = 600.0):
    """An RDB storage with heartbeats that rides out `outage_s` of lost connections (resilient_storage.py),
    or a journal file for `journal:PATH` (no server, multi-process)."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    heartbeat = heartbeat or HeartbeatConfig()
    kwargs: dict = {"heartbeat_interval": heartbeat.interval_s, "grace_period": heartbeat.grace_period_s}
    if url.startswith("sqlite"):
        # Local workers (search.workers) write one file: wait up to a minute for its write lock, where
        # sqlite3's default 5 s can lapse with 8 workers' heartbeats and trials ("database is locked").
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql", "mysql")):
        # Optuna sets pool_pre_ping for MySQL only (optuna#5600): after a server restart every pooled
        # connection is dead, and each would fail one call. Pinged at checkout, they are replaced.
        kwargs["engine_kwargs"] = {"pool_pre_ping": True, "pool_recycle": 300}
    if on_stale_trial is not None:
        params = inspect.signature(RDBStorage).parameters
        name = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        kwargs[name] = on_stale_trial
    return ResilientRDBStorage(url, storage_outage_s=outage_s, **kwargs)


def load_or_create(config: StudyConfig, source: str, storage) -> optuna.Study:
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        sampler=build_sampler(config.search.sampler),
        pruner=build_optuna_pruner(config.search.pruner, config.train.max_epochs),
        directions=config.directions,
        load_if_exists=True,
    )
    have = [d.name.lower() for d in study.directions]
    if have != config.directions:
        names = study.metric_names or have
        raise UserInputError(
            source, "search.objectives",
            f"study '{config.name}' already exists in this storage with objectives {names}, not "
            f"{config.search.objectives}: keep its objectives or choose a new name",
        )
    if study.metric_names is None:
        study.set_metric_names(list(config.search.objectives))
    return study


def load_existing(config: StudyConfig, source: str, storage_url: str) -> optuna.Study:
    """For read-only commands: the study must exist, and nothing is created if it does not."""
    missing = UserInputError(
        source, "name", f"no study named '{config.name}' in {redact(storage_url)}: run it first "
        "(ee-search run) or pass the right --storage",
    )
    if _sqlite_file_missing(storage_url) or (
        storage_url.startswith("journal:") and not Path(storage_url.removeprefix("journal:")).is_file()
    ):
        raise missing  # opening it would create an empty database
    try:
        storage = open_storage(storage_url)
        return optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        raise missing from None


def _sqlite_file_missing(url: str) -> bool:
    from sqlalchemy.engine import make_url

    if not url.startswith("sqlite"):
        return False
    database = make_url(url).database
    return database not in (None, "", ":memory:") and not Path(database).is_file()


def finished_count(study: optuna.Study) -> int:
    return len(counted_trials(study))


@dataclass
class RunSummary:
    study: optuna.Study
    parent_run_id: str
    experiment_id: str
    trial_numbers: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def trials(self) -> list[FrozenTrial]:
        wanted = set(self.trial_numbers)
        return [t for t in self.study.get_trials(deepcopy=False) if t.number in wanted]


def open_study(study_file: LoadedStudy) -> tuple[StudyTracker, optuna.Study, str]:
    """Create (or open) both stores, the study, the MLflow experiment and the study's parent run."""
    config = study_file.config
    tracker = StudyTracker(config.tracking.uri, config.name, config.tracking.artifact_location,
                           source=str(Path(study_file.path).resolve()), spool_dir=config.tracking.spool_dir,
                           max_outage_s=config.tracking.max_outage_s)
    storage = open_storage(config.search.storage, on_stale_trial=stale_trial_callback(tracker, config.search.retries),
                           heartbeat=config.search.heartbeat, outage_s=config.search.storage_outage_s)
    study = load_or_create(config, study_file.path, storage)
    parent = tracker.parent_run(config.name, config_params(config), study_file.raw_text)
    StudyRecord(mlflow_parent_run_id=parent, mlflow_experiment_id=tracker.experiment_id).write(study)
    return tracker, study, parent


def run_study(study_file: LoadedStudy, device, n_trials: int | None, timeout_s: float | None,
              events: StudyEvents | None = None) -> RunSummary:
    """Create or resume the study and run trials until the study has `n_trials` (or time is up)."""
    with outage_stops_resumably(study_file.config.search.heartbeat.grace_period_s):
        return _run_study(study_file, device, n_trials, timeout_s, events or StudyEvents())


def _run_study(study_file: LoadedStudy, device, n_trials: int | None, timeout_s: float | None,
               events: StudyEvents) -> RunSummary:
    from ee_search.search.objective import TrialObjective

    config = study_file.config
    tracker, study, parent = open_study(study_file)
    summary = RunSummary(study, parent, tracker.experiment_id)

    stop = StopRequest()
    disk = DiskWatch(stop, study_locations(config), Reserve.for_study(config, tracker).make())
    objective = TrialObjective(study_file, tracker, parent, device, stop, events, disk)
    # With a target and one trial at a time, the gate makes the target exact across processes (on every
    # machine, with a database server's lock; search/gate.py); threads check it after each trial (StopAtTarget).
    gate = None
    if n_trials is not None and config.search.n_jobs == 1:
        gate = TrialGate(gate_lock(config.search.storage, config.name), n_trials, timeout_s=timeout_s)
    remaining = None if n_trials is None else gate.first(study) if gate else trials_to_start(study, n_trials)
    if gate is not None:
        gate.limit = remaining
    callbacks = [StopAtTarget(n_trials)] if n_trials is not None and gate is None else []

    def record(study_: optuna.Study, trial: FrozenTrial) -> None:
        if stop.reason() is not None:
            study_.stop()  # a signal (or a full disk) came between two trials' batches: start nothing new
        summary.trial_numbers.append(trial.number)
        if stop.disk_full is None:
            refresh_study_figures(tracker, parent, study_, trial, n_trials)
        events.trial_ended(trial)

    started = time.perf_counter()
    try:
        events.study_started(study, n_trials, remaining)
        with stop.installed(), disk.watching_threads():
            _optimize(study, gate.gated(objective) if gate else objective, gate, n_trials, remaining,
                      timeout_s, config.search.n_jobs, [*callbacks, record, *([gate] if gate else [])], stop)
    except Exception as error:
        if disk.hit(error) is None:
            raise
    finally:
        if gate is not None:
            gate.close()
        summary.seconds = time.perf_counter() - started
    if stop.disk_full is not None:
        with contextlib.suppress(Exception):  # the disk may refuse this too: the next run sends it
            tracker.close(wait_s=SIGNAL_DRAIN_S)
        raise DiskFull(stop.disk_full, objective.interrupted)
    if stop.signum is not None:
        tracker.close(wait_s=SIGNAL_DRAIN_S)  # what is left is sent by the next run
        raise StudyInterrupted(stop.signum, objective.interrupted)
    # Workers share the parent run: only the one that sees the study complete closes it.
    if not tracker.outage_expired() and (n_trials is None or finished_count(study) >= n_trials):
        tracker.finish_parent(parent, "FINISHED")
    close_tracker(tracker, objective.interrupted)
    return summary


def _optimize(study: optuna.Study, objective, gate: TrialGate | None, n_trials: int | None, remaining: int | None,
              timeout_s: float | None, n_jobs: int, callbacks: list, stop: StopRequest) -> None:
    """study.optimize, going on with the next trial after one that another worker took over
    (search/ownership.py): that trial is left to its new owner, and this worker stays useful."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while remaining != 0:
        try:
            study.optimize(objective, n_trials=remaining, n_jobs=n_jobs,
                           timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
                           catch=(Exception,),  # a failing trial is marked FAIL and the study goes on
                           callbacks=callbacks)  # the gate last: held briefly
            return
        except TrialTakenOver as taken:
            logger.warning("%s", taken)
        if stop.reason() is not None or (deadline is not None and time.monotonic() >= deadline):
            return
        remaining = None if n_trials is None else gate.first(study) if gate else trials_to_start(study, n_trials)
        if gate is not None:
            gate.limit, gate.started = remaining, 0


def close_tracker(tracker: StudyTracker, interrupted: list[int]) -> None:
    """Send what the spool holds, waiting out an outage within `tracking.max_outage_s`; past it, the
    run ends with `TrackingUnavailable` (the spool kept for the next run, `interrupted` to resume)."""
    tracker.close()
    if tracker.outage_expired():
        raise tracker.spool.unavailable(interrupted)
