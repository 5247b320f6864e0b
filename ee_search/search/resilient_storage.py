"""An RDB storage that rides out database outages (docs/design.md §9, "Storage outages").

Optuna's RDBStorage raises on the first lost connection: a PostgreSQL restart between two epochs then
crashes the worker at the epoch's end (OperationalError -> StorageInternalError -> Optuna's own
UnboundLocalError in its trial loop), and a blip kills Optuna's heartbeat thread without a word, so
another worker later fails the live trial as stale and resumes it in parallel. This subclass
- retries every storage call that failed on a lost connection, with backoff, until the storage has
  been unreachable for `search.storage_outage_s`; then it raises `StorageOutage`, which the run turns
  into one resumable line (its trial stays RUNNING, is failed as stale and resumed from its last.pt);
- creates a trial idempotently: a trial is created with a token, and a retry after a commit whose
  answer was lost finds it instead of creating a second one;
- keeps the heartbeat thread alive: `record_heartbeat` never raises;
- judges no trial stale for a grace period after an outage this process saw: every worker's
  heartbeats stopped during it, not only a dead worker's.
A subclass (not a proxy) because `optuna.create_study` wraps an RDBStorage in its `_CachedStorage`,
which calls the private `_create_new_trial`, `_get_trials`... of its backend: those are retried too.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from ee_search.config import redact
from ee_search.records import CREATE_TOKEN
from ee_search.search.signals import StudyInterrupted

logger = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0  # short: a trial's heartbeat must be back before its grace period is over


class StorageOutage(BaseException):
    """The storage stayed unreachable for `search.storage_outage_s`: this process stops, resumably.

    A BaseException, as KeyboardInterrupt is: no `except Exception` on its way out (Optuna's trial
    loop, which would tell a FAIL to the unreachable storage, or the objective's error handling,
    which would close the MLflow run) takes it for a trial's error."""

    def __init__(self, url: str, seconds: float, cause: str) -> None:
        self.seconds = seconds
        super().__init__(f"the Optuna storage {redact(url)} was unreachable for {seconds:.0f} s ({cause})")


class StorageLost(StudyInterrupted):
    """`StorageOutage`, as the run reports it: one line, resumable (exit code 75, EX_TEMPFAIL). The
    running trials stay RUNNING in the storage, which could not be written; once their heartbeat is
    stale the next run (or another worker) fails them and resumes each from its last.pt."""

    exit_code = 75

    def __init__(self, outage: StorageOutage, grace_period_s: float) -> None:
        Exception.__init__(self, str(outage))
        self.signum, self.trials, self.grace_period_s = 0, [], grace_period_s

    def resume_note(self) -> str:
        return (f"its running trials resume from their last saved epoch once their heartbeat is stale "
                f"({self.grace_period_s:.0f} s after the last one)")


@contextmanager
def outage_stops_resumably(grace_period_s: float) -> Iterator[None]:
    try:
        yield
    except StorageOutage as outage:
        raise StorageLost(outage, grace_period_s) from None


def is_connection_loss(error: BaseException) -> bool:
    """A lost or refused database connection, however Optuna wrapped it (StorageInternalError from
    sqlalchemy's OperationalError / InterfaceError, or a connection SQLAlchemy invalidated)."""
    from sqlalchemy import exc as sa

    from ee_search.search.disk_full import disk_full_path

    if disk_full_path(error) is not None:
        return False  # SQLite's "database or disk is full": waiting will not help; it stops the study at once
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sa.DBAPIError) and (
            error.connection_invalidated or isinstance(error, (sa.OperationalError, sa.InterfaceError))
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    from sqlalchemy import exc as sa

    while error.__cause__ is not None and not isinstance(error, sa.DBAPIError):
        error = error.__cause__
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class _Outage:
    """One process's view of its storage's reachability, shared by every thread (trials, heartbeats):
    an outage starts at the first failed call, ends at the first call that succeeds, and once any
    thread has waited past the limit every call gives up at once (`lost`)."""

    def __init__(self, url: str, limit_s: float) -> None:
        self.url, self.limit_s = url, limit_s
        self.lock = threading.Lock()
        self.since: float | None = None
        self.recovered_at: float | None = None
        self.lost = threading.Event()
        self.cause = ""

    def failed(self, error: BaseException) -> float:
        with self.lock:
            now = time.monotonic()
            if self.since is None:
                self.since, self.cause = now, _first_line(error)
                logger.warning("the Optuna storage %s is unreachable (%s): retrying for up to %.0f s",
                               redact(self.url), self.cause, self.limit_s)
            return now - self.since

    def succeeded(self) -> None:
        if self.since is None:  # the usual case, without the lock
            return
        with self.lock:
            if self.since is not None:
                logger.warning("the Optuna storage is reachable again after %.1f s", time.monotonic() - self.since)
                self.since, self.recovered_at = None, time.monotonic()

    def give_up(self) -> StorageOutage:
        self.lost.set()
        return StorageOutage(self.url, self.limit_s, self.cause)


class ResilientRDBStorage(RDBStorage):
    def __init__(self, url: str, *, storage_outage_s: float = 600.0, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)  # not retried: an unreachable or wrong URL fails at once
        self.outage = _Outage(url, storage_outage_s)
        self.owned: set[int] = set()  # trial ids this process trains (search/ownership.py)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("outage", None)  # a lock and an event do not pickle; a copy gets its own
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self.outage = _Outage(self.url, 600.0)

    def retrying(self, call: Callable[[], T]) -> T:
        """`call()`, again after each lost connection, until the outage lasts `storage_outage_s`."""
        delay = FIRST_DELAY_S
        while True:
            if self.outage.lost.is_set():
                raise StorageOutage(self.url, self.outage.limit_s, self.outage.cause)
            try:
                result = call()
            except Exception as error:  # noqa: BLE001 - only a lost connection is retried
                if not is_connection_loss(error):
                    raise
                waited = self.outage.failed(error)
                if waited >= self.outage.limit_s:
                    raise self.outage.give_up() from None
                # Jittered, so that workers do not all come back in the same instant.
                self.outage.lost.wait(min(delay, self.outage.limit_s - waited) * random.uniform(0.5, 1.0))
                delay = min(2 * delay, MAX_DELAY_S)
                continue
            self.outage.succeeded()
            return result

    # ------------------------------------------------------------------ writes that must not repeat
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        token = uuid.uuid4().hex
        template = _with_token(template_trial, token)
        tried = False

        def once() -> FrozenTrial:
            nonlocal tried
            if tried:  # the last try's commit may have gone through before its connection was lost
                found = next((t for t in RDBStorage.get_all_trials(self, study_id, deepcopy=False)
                              if t.system_attrs.get(CREATE_TOKEN) == token), None)
                if found is not None:
                    return found
            tried = True
            return self._insert_trial(study_id, template)

        return self.retrying(once)

    def _insert_trial(self, study_id: int, template: FrozenTrial) -> FrozenTrial:
        """One try of Optuna's `_create_new_trial` (whose own loop retries any StorageInternalError,
        which would create a second trial when a commit's answer is lost)."""
        with _create_scoped_session(self.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            trial = self._get_prepared_new_trial(study_id, template, session)
            frozen = copy.deepcopy(template)
            frozen.number, frozen.datetime_start, frozen._trial_id = trial.number, trial.datetime_start, trial.trial_id
            return frozen

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        tried = False

        def once() -> bool:
            nonlocal tried
            again, tried = tried, True
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                # This process's own trial, told again after a lost answer: if the first commit went
                # through, the trial is what it was told. Another worker's trial is not claimed so:
                # had both failed it as stale, both would queue a retry and it would train twice.
                if again and trial_id in self.owned:
                    now = RDBStorage.get_trial(self, trial_id)
                    if now.state == state and (values is None or list(now.values or []) == list(values)):
                        return True
                raise

        return self.retrying(once)

    # ------------------------------------------------------------------ heartbeats
    def record_heartbeat(self, trial_id: int) -> None:
        """Never raises: Optuna's heartbeat thread ends on any exception, and its live trial would be
        failed as stale. Past the outage limit the trial's own thread stops the run."""
        try:
            self.retrying(lambda: RDBStorage.record_heartbeat(self, trial_id))
        except StorageOutage:
            return
        except Exception as error:  # noqa: BLE001 - see above; the next beat tries again
            logger.warning("trial heartbeat not recorded (%s); trying again at the next beat", _first_line(error))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        recovered = self.outage.recovered_at
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        if self.outage.since is not None or (recovered is not None and time.monotonic() - recovered < grace):
            return []  # the outage stopped every worker's heartbeats, not only a dead worker's
        return self.retrying(lambda: RDBStorage._get_stale_trial_ids(self, study_id))


def _with_token(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """The trial to create, marked with `token`; no template is Optuna's plain new RUNNING trial."""
    if template is None:
        return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                           datetime_complete=None, params={}, distributions={}, user_attrs={},
                           system_attrs={CREATE_TOKEN: token}, intermediate_values={}, trial_id=-1)
    marked = copy.deepcopy(template)
    marked.system_attrs = {**marked.system_attrs, CREATE_TOKEN: token}
    return marked


def _retried(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> T:
        return self.retrying(lambda: method(self, *args, **kwargs))

    return call


# Every other call Optuna or ee-search makes (reads, and writes that are upserts: attributes,
# intermediate values, params), retried as it is.
for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
              "set_trial_param", "_set_trial_param", "get_trial_param", "set_trial_intermediate_value",
              "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
              "get_trial", "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id"):
    setattr(ResilientRDBStorage, _name, _retried(getattr(RDBStorage, _name)))
