"""The one-trial gate's lock (search/gate.py) on a database server: workers on any machine that share a
PostgreSQL storage take the same lock (a real PostgreSQL, pgserver), and it goes with a worker that dies
holding it. The gate's use by workers is tested in test_local_workers.py (a file lock) and, across Ray
workers on PostgreSQL, in test_ray_workers.py."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from ee_search.search.gate import DatabaseLock, FileLock, gate_lock

pytestmark = pytest.mark.slow  # a PostgreSQL server


def _acquiring(lock) -> tuple[threading.Thread, threading.Event]:
    """`lock.acquire()` in a thread; the event is set once it has the lock."""
    taken = threading.Event()

    def take() -> None:
        lock.acquire()
        taken.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread, taken


def test_workers_sharing_a_postgresql_storage_share_its_lock(postgres, tmp_path):
    url = postgres.url("optuna")
    first, second, other = gate_lock(url, "tiny"), DatabaseLock(url, "tiny"), DatabaseLock(url, "another")
    assert isinstance(first, DatabaseLock)
    assert isinstance(gate_lock(f"sqlite:///{tmp_path}/optuna.db", "tiny"), FileLock)  # one machine's file
    first.acquire()
    thread, taken = _acquiring(second)
    assert not taken.wait(0.5)  # another connection (another machine's worker) waits for it
    _, elsewhere = _acquiring(other)
    assert elsewhere.wait(10)  # another study's gate is its own
    other.release()
    first.release()
    assert taken.wait(10)  # released: the waiting worker goes on
    thread.join(5)
    second.release()
    for lock in (first, second, other):
        lock.close()


def test_a_worker_that_dies_holding_the_lock_releases_it(postgres):
    url = postgres.url("optuna")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from ee_search.search.gate import DatabaseLock\n"
        "DatabaseLock(sys.argv[1], 'tiny').acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"), url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = DatabaseLock(url, "tiny")
        thread, taken = _acquiring(lock)
        assert not taken.wait(0.5)
        holder.kill()  # SIGKILL while holding it: no release, the server ends its session
        assert taken.wait(30)
        thread.join(5)
        lock.release()
        lock.close()
    finally:
        holder.kill()
        holder.wait()
