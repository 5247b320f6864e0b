"""The one error type for mistakes in user input.

Every command catches `UserInputError` at the edge and prints `str(error)`: one line naming the file,
the field and what to do about it, then exits with code 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserInputError(Exception):
    """A mistake the user can fix: a bad study file, a bad flag, missing dataset files."""

    exit_code = 2

    def __init__(self, source: str, field: str | None, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        # Collapse whitespace so the message stays on one line whatever the caller passed in.
        return f"{where}: {' '.join(self.message.split())}"


class FieldError(Exception):
    """A cross-field check failed. Not a ValueError on purpose: pydantic re-raises it untouched, so the
    dotted field name survives to the error line instead of being flattened into the model's loc."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
