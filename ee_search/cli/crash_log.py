"""No tracebacks for users (docs/design.md §3): an unexpected exception ends the command with one line,
`error: <what failed>; details in <log file>`, and the traceback goes to that file.

The file is written under the working directory's `.ee-search/logs/`; where that cannot be written (a
read-only folder, a full disk) under the system's temporary folder; where neither can, the line says
so instead of naming a file. Nothing here imports more than the standard library, so it works however
early or late the command failed."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

LOG_FOLDER = Path(".ee-search") / "logs"
EXIT_CODE = 1


def log_folders() -> list[Path]:
    """Where a traceback is written, in the order tried."""
    return [Path.cwd() / LOG_FOLDER, Path(tempfile.gettempdir()) / f"ee-search-logs-{os.getuid()}"]


def write_traceback(error: BaseException, command: list[str] | None = None) -> tuple[Path | None, str]:
    """The traceback of `error` (and the command line) in a new log file: (its path, "") or, if no
    folder could take it, (None, why)."""
    text = "".join(traceback.format_exception(error))
    header = f"ee-search {' '.join(command if command is not None else sys.argv[1:])}\n"
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    why = ""
    for folder in log_folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(header + text, encoding="utf-8")
            return path, ""
        except OSError as exc:
            why = exc.strerror or str(exc)
    return None, why


def crash_line(what: str, error: BaseException) -> str:
    """The one line for `error`: `what` failed, and where its traceback is."""
    path, why = write_traceback(error)
    where = f"details in {path}" if path is not None else f"its traceback could not be saved ({why})"
    return f"error: {' '.join(what.split())}; {where}"


def describe(error: BaseException) -> str:
    """What failed, in words: the exception's type and message on one line, cut to a readable size."""
    message = " ".join(str(error).split())
    if len(message) > 300:
        message = message[:299] + "…"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def report(error: BaseException, what: str | None = None) -> int:
    """Print the one line for an unexpected `error` on stderr; returns the exit code to end with."""
    print(crash_line(what or describe(error), error), file=sys.stderr, flush=True)
    return EXIT_CODE


class TracebacksToFile:
    """A logging filter: a record that carries a traceback (Optuna's "Trial N failed ...", a library's
    `logger.exception`) keeps its one line on the terminal, and the traceback goes to a log file
    named at the end of that line."""

    def filter(self, record) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            path, why = write_traceback(record.exc_info[1])
            record.msg = f"{record.getMessage()} ({f'details in {path}' if path else f'traceback not saved: {why}'})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def keep_tracebacks_off_the_terminal() -> None:
    """Every handler of the root logger gets the filter (call after logging is configured)."""
    import logging

    for handler in logging.getLogger().handlers:
        handler.addFilter(TracebacksToFile())
