"""What a running study tells whoever shows its progress (the CLI's live lines, a test, a benchmark).

The study calls these hooks; it never draws anything itself, so the search layer stays free of
terminals and the display lives above it (console). With `search.n_jobs > 1`, trials run in threads
and the trial and epoch hooks arrive from them concurrently: an implementation that keeps state
must lock. Every hook is a no-op here, so an implementation overrides only what it shows.
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from optuna.trial import FrozenTrial


class StudyEvents:
    def study_started(self, study: optuna.Study, target: int | None, to_start: int | None) -> None:
        """Before the first trial of this invocation: `target` is the study's n_trials (None: no
        target), `to_start` how many trials this invocation will start (None: until timeout)."""

    def trial_started(self, trial_number: int, max_epochs: int, resumed_at_epoch: int) -> None:
        """A trial begins training; a resumed trial continues after `resumed_at_epoch` (0: a new one)."""

    def epoch_ended(self, trial_number: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """After an epoch's validation: `metrics` are its per-epoch metrics (val_*, train_loss,
        epoch_seconds), the ones logged to the trial's MLflow run at step `epoch`."""

    def trial_ended(self, trial: FrozenTrial) -> None:
        """After a trial is recorded in the storage, in whatever state it ended."""
