"""Storage outages (search/resilient_storage.py) on a real SQLite storage, its connection failing the way
a lost server fails it: SQLAlchemy's OperationalError from the driver, injected at the cursor for a
while. The real thing, a PostgreSQL stopped under two workers, is tests/search/test_storage_outages.py."""

from __future__ import annotations

import sqlite3
import time

import optuna
import pytest
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.storages._heartbeat import HeartbeatThread
from optuna.trial import TrialState
from sqlalchemy import event

from ee_search.search.resilient_storage import ResilientRDBStorage, StorageOutage
from ee_search.search.study import open_storage


class Outage:
    """Every statement fails as a lost connection does, from `start()` for `seconds`."""

    def __init__(self, storage: RDBStorage) -> None:
        self.until = 0.0
        self.failures = 0
        event.listen(storage.engine, "before_cursor_execute", self._fail)

    def start(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def _fail(self, *args) -> None:
        if time.monotonic() < self.until:
            self.failures += 1
            raise sqlite3.OperationalError("unable to open database file")


def _study(storage):
    return optuna.create_study(storage=storage, study_name="s", directions=["maximize"])


@pytest.mark.parametrize("resilient", [True, False])
def test_a_tell_during_an_outage_waits_for_the_storage_and_lands_once(tmp_path, resilient):
    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = open_storage(url, outage_s=30) if resilient else RDBStorage(url)
    study = _study(storage)
    trial = study.ask()
    outage = Outage(storage)
    outage.start(1.0)
    started = time.monotonic()
    if not resilient:  # Optuna's own storage: the first lost connection is the worker's end
        with pytest.raises(StorageInternalError):
            study.tell(trial, 0.5)
        return
    study.tell(trial, 0.5)
    assert outage.failures > 1 and time.monotonic() - started >= 1.0
    assert [(t.state, t.values) for t in optuna.load_study(study_name="s", storage=url).trials] == [
        (TrialState.COMPLETE, [0.5])]


def test_past_the_limit_every_call_gives_up_at_once_with_one_line(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = open_storage(url, outage_s=1)
    study = _study(storage)
    trial = study.ask()
    Outage(storage).start(3600)
    started = time.monotonic()
    with pytest.raises(StorageOutage) as lost:
        trial.set_user_attr("epoch", 1)
    assert 1.0 <= time.monotonic() - started < 5
    assert "\n" not in str(lost.value) and "unreachable for 1 s (OperationalError: unable to open" in str(lost.value)
    started = time.monotonic()
    with pytest.raises(StorageOutage):  # the process is stopping: no second wait
        _ = study.trials
    assert time.monotonic() - started < 0.5


def test_a_trial_whose_commit_answer_was_lost_is_created_once(tmp_path, monkeypatch):
    """The commit went through, the connection was lost before its answer: the retry finds the trial
    by its token instead of creating a second one (a trial nobody trains, RUNNING forever)."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = open_storage(url, outage_s=30)
    study = _study(storage)
    insert = ResilientRDBStorage._insert_trial
    lost = []

    def commit_then_lose_the_answer(self, study_id, template):
        frozen = insert(self, study_id, template)
        if not lost:
            lost.append(frozen.number)
            raise StorageInternalError("commit") from sqlite3_error_as_sqlalchemy()
        return frozen

    monkeypatch.setattr(ResilientRDBStorage, "_insert_trial", commit_then_lose_the_answer)
    trial = study.ask()
    assert lost == [0] and trial.number == 0
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 1


def sqlite3_error_as_sqlalchemy():
    from sqlalchemy.exc import OperationalError

    return OperationalError("COMMIT", {}, sqlite3.OperationalError("server closed the connection unexpectedly"))


def test_the_heartbeat_thread_lives_through_a_blip_and_beats_again(tmp_path):
    """Optuna's heartbeat thread ends on its first exception; the live trial would then go stale."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = open_storage(url, heartbeat=None, outage_s=30)
    study = _study(storage)
    trial = study.ask()
    storage.heartbeat_interval = 1  # Optuna's thread beats each second
    outage = Outage(storage)
    heart = HeartbeatThread(trial._trial_id, storage)
    heart.start()
    try:
        time.sleep(0.3)
        outage.start(1.5)
        time.sleep(3.5)
        assert heart._thread.is_alive() and outage.failures >= 1
        before = _last_beat(url, trial._trial_id)
        time.sleep(1.5)
        assert _last_beat(url, trial._trial_id) > before  # still beating after the blip
    finally:
        heart.join()


def _last_beat(url: str, trial_id: int):
    from sqlalchemy import create_engine, text

    with create_engine(url).connect() as con:
        return con.execute(text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t"), {"t": trial_id}).scalar()


def test_after_an_outage_no_trial_is_judged_stale_for_a_grace_period(tmp_path):
    """Every worker's heartbeats stopped with the storage: the first worker back must not fail the
    others' live trials as stale (they would be resumed elsewhere, their epochs redone)."""
    from ee_search.config import HeartbeatConfig

    url = f"sqlite:///{tmp_path}/optuna.db"
    storage = open_storage(url, heartbeat=HeartbeatConfig(interval_s=1, grace_period_s=2), outage_s=30)
    study = _study(storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    outage = Outage(storage)
    outage.start(3.0)
    storage.get_all_trials(study._study_id)  # waits the outage out: its heartbeat is now 3 s old
    assert storage._get_stale_trial_ids(study._study_id) == []
    time.sleep(2.1)
    assert storage._get_stale_trial_ids(study._study_id) == [trial._trial_id]  # a dead worker's is, later
