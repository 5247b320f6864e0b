"""SIGTERM / Ctrl-C: every running trial stops at a batch boundary, saves, and waits to be resumed."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class StopRequest:
    """SIGTERM / SIGINT set a flag that every running trainer checks at its next batch boundary
    (train.InterruptWhen); nothing is raised inside a signal handler mid-step. A second signal exits
    at once: Ctrl-C raises KeyboardInterrupt, SIGTERM gets its default action."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.disk_full: str | None = None  # where a disk filled up (search/disk_full.py): stop as for a signal

    def reason(self) -> str | None:
        if self.disk_full is not None:
            return "disk full"
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.signum = signum
        logger.warning("%s: stopping at the next batch boundary and saving (again to exit at once)",
                       signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only; an embedding caller handles them
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class StudyInterrupted(Exception):
    """The run stopped on a signal; its trials were saved and enqueued to be resumed."""

    def __init__(self, signum: int, trials: list[int]) -> None:
        self.signum = signum
        self.trials = trials
        super().__init__(f"stopped by {signal.Signals(signum).name}; trial(s) {trials} will be resumed")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def resume_note(self) -> str:
        """What became of the running trials, for the one line the command prints."""
        return (f"trial(s) {', '.join(map(str, self.trials))} saved and queued" if self.trials
                else "nothing to save")
