"""The one error type for mistakes in user input.

Every command catches `UserInputError` at the edge and prints `str(error)`: one line naming the file,
the field and what to do about it, then exits with code 2. Anything else ends in one line too, with
its traceback in a log file (`ee_search.cli.crash_log`).
"""

from __future__ import annotations

import reprlib
from typing import Any

# A value quoted in an error line is cut to this many characters: a 50 MB `name` must not be echoed.
QUOTE_CHARS = 80
# The parts of the line are cut too, whatever a caller passed in: a safety net for a value quoted
# without `quote` (a 1 MB key as the field, a long path as the source).
_SOURCE_CHARS, _FIELD_CHARS, _MESSAGE_CHARS = 160, QUOTE_CHARS, 600
# reprlib bounds the work as well as the text: it never builds the repr of a whole 50 MB string or of
# a list of 100,000 values before cutting it.
_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12 on
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 8, 8
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_CHARS


def cut(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` within `limit` characters: its start and its end, joined by an ellipsis."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[: limit - tail - 1]}…{text[len(text) - tail:]}"


def quote(value: Any) -> str:
    """The repr of a value the user gave, for an error line: at most about QUOTE_CHARS characters."""
    return cut(_REPR.repr(value))


class UserInputError(Exception):
    """A mistake the user can fix: a bad study file, a bad flag, missing dataset files."""

    exit_code = 2

    def __init__(self, source: str, field: str | None, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        source = cut(str(self.source), _SOURCE_CHARS)
        where = f"{source}: {cut(str(self.field), _FIELD_CHARS)}" if self.field else source
        # Collapse whitespace so the message stays on one line whatever the caller passed in.
        return f"{where}: {cut(' '.join(self.message.split()), _MESSAGE_CHARS)}"


class FieldError(Exception):
    """A cross-field check failed. Not a ValueError on purpose: pydantic re-raises it untouched, so the
    dotted field name survives to the error line instead of being flattened into the model's loc."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class CorruptArtifact(Exception):
    """A file ee-search saved (best.pt, last.pt, val_logits.pt) that cannot be read back: truncated,
    overwritten, or not ee-search's. Caught at the edge like `UserInputError` (one line, exit 2).

    The message never quotes torch's own: for a file that is not plain data it advises loading with
    `weights_only=False`, which would run whatever code the file carries."""

    exit_code = 2

    def __init__(self, file: str, reason: str, trial: int | None = None, fix: str | None = None) -> None:
        self.file = file
        self.reason = reason
        self.trial = trial
        self.fix = fix
        super().__init__(str(self))

    def naming(self, file: str | None = None, trial: int | None = None, fix: str | None = None) -> CorruptArtifact:
        """The same error, told by what the caller knows: the artifact's name, the trial it belongs to,
        what to do instead."""
        return CorruptArtifact(file or self.file, self.reason, self.trial if trial is None else trial, fix or self.fix)

    def __str__(self) -> str:
        who = f"trial {self.trial}: " if self.trial is not None else ""
        fix = f"; {self.fix}" if self.fix else ""
        return f"{who}{self.file} cannot be read: {' '.join(self.reason.split())}{fix}"
