"""The durable half of the spool (docs/design.md §5, "Tracking outages"): one SQLite file per process,
an append-only queue of the MLflow writes it has not sent yet, with the files they upload beside it.

An entry is appended (and committed) before the call that made it returns, so it survives the
process being killed; it is removed only after the server accepted it. A crash between the two sends
it again: every write is idempotent at the store (a metric carries its original timestamp, and
MLflow's SQL store drops a (key, step, timestamp, value) row it already has; tags, params, uploads,
deletes and the final status replace what they replace), so a replay adds no duplicate step.

The file is locked (`flock` on a companion `.lock` file) for as long as its process lives: a file
whose lock can be taken belongs to a process that is gone, and the next `ee-search run` drains it."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Entry:
    seq: int
    run_id: str
    kind: str  # batch | artifacts | inputs | terminate | delete
    body: dict[str, Any]
    blob: Path | None  # the folder of files an `artifacts` entry uploads


def spool_folder(root: str | Path, tracking_uri: str) -> Path:
    """The folder of one tracking server's spool files: named by a digest of its URI, so a file is
    only ever sent where it was meant to go, and no credential in the URI is written to disk."""
    return Path(root) / hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]


class SpoolFile:
    """One process's queue. Thread-safe: the trial's threads append, the writer thread reads and
    removes."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self.blobs = path.with_suffix(".blobs")
        self._lock_fd = lock_fd
        self._mutex = threading.Lock()
        # WAL with synchronous=NORMAL: a commit survives the process being killed (not a power cut),
        # at a fraction of a full fsync per entry.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "run_id TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, blob TEXT)")

    @classmethod
    def create(cls, folder: Path) -> SpoolFile:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-{time.time_ns()}.db"
        fd = os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # new and ours: never contended
        return cls(path, fd)

    @classmethod
    def claim(cls, path: Path) -> SpoolFile | None:
        """Another process's file, if that process is gone (its lock is free) and nobody else is
        draining it; None otherwise."""
        try:
            fd = os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        if not path.is_file():  # drained and removed by another process meanwhile
            os.close(fd)
            return None
        return cls(path, fd)

    # ------------------------------------------------------------------------------ writing
    def append(self, run_id: str, kind: str, body: dict[str, Any], files: dict[str, Path | str | bytes] | None = None) -> None:
        """One write, committed before this returns; `files` (name -> a file to copy, or the text /
        bytes to write) are put under the entry's own blob folder first."""
        with self._mutex:
            blob = None
            if files is not None:
                blob = self.blobs / f"{time.time_ns()}"
                _write_blob(blob, files)
            self._db.execute("INSERT INTO entries (run_id, kind, body, blob) VALUES (?, ?, ?, ?)",
                             (run_id, kind, json.dumps(body), str(blob) if blob else None))

    # ------------------------------------------------------------------------------ draining
    def head(self, limit: int = 64) -> list[Entry]:
        with self._mutex:
            rows = self._db.execute("SELECT seq, run_id, kind, body, blob FROM entries ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        return [Entry(seq, run, kind, json.loads(body), Path(blob) if blob else None)
                for seq, run, kind, body, blob in rows]

    def remove(self, entry: Entry) -> None:
        """`entry` was accepted by the server (or refused for good): gone, its files too."""
        with self._mutex:
            self._db.execute("DELETE FROM entries WHERE seq = ?", (entry.seq,))
        if entry.blob is not None:
            shutil.rmtree(entry.blob, ignore_errors=True)

    def pending(self, run_id: str | None = None) -> int:
        with self._mutex:
            if run_id is None:
                return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM entries WHERE run_id = ?", (run_id,)).fetchone()[0]

    def close(self, delete: bool) -> None:
        """Closed (and removed with its files if `delete`: nothing left to send); the lock is
        released last, so no other process claims a file that is still being removed."""
        with self._mutex:
            self._db.close()
        if delete:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            shutil.rmtree(self.blobs, ignore_errors=True)
            self.path.with_suffix(".lock").unlink(missing_ok=True)
        os.close(self._lock_fd)


def _write_blob(folder: Path, files: dict[str, Path | str | bytes]) -> None:
    folder.mkdir(parents=True)
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            try:
                os.link(content, target)  # same file system: no copy (the source is replaced, never changed)
            except OSError:
                shutil.copyfile(content, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")


def orphans(folder: Path) -> Iterator[Path]:
    """The spool files in `folder`, oldest first (their names start with the pid and a timestamp;
    the caller claims those whose process is gone)."""
    if not folder.is_dir():
        return iter(())
    return iter(sorted(folder.glob("*.db"), key=lambda p: int(p.stem.split("-")[1])))
