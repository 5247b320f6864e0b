"""How a fit ends: the stop reasons (docs/design.md §5's `stop_reason`) and the result the trainer returns.

Its own module because the trainer, the callbacks that stop it and the objective that reports the
reason all need these names, and none of them should import another just for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PATIENCE_EXHAUSTED = "patience_exhausted"
NON_FINITE_LOSS = "non_finite_loss"
MAX_EPOCHS = "max_epochs"


@dataclass
class FitResult:
    epochs_trained: int
    stop_reason: str
    history: list[dict[str, float]] = field(default_factory=list)


class TrainingInterrupted(Exception):
    """Raised by the trainer at a batch boundary after `request_interrupt` (SIGTERM, Ctrl-C): the
    resumable state is saved by then, and the trial is left to be resumed, not failed."""
