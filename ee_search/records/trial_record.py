"""The Optuna user attributes of a trial and of a study (docs/design.md §5): names, types, meaning.

The attribute keys ARE the field names below, so a key exists in one place. A record is written in
pieces as the trial goes (`TrialRecord(best_epoch=3).write(trial)` writes that one attribute: fields
left None are not written) and read whole (`TrialRecord.read(frozen_trial)`; absent keys read None,
which is also what a trial made outside ee-search gives).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

# The final metrics a completed trial carries (and that can be objectives): docs/design.md §4.
FINAL_METRICS = ("accuracy", "avg_exit_depth", "relative_flops", "curve_hypervolume")
# Optuna's own system attribute, written by RetryHeartbeatStaleTrialCallback on a retry: the numbers
# of the trials it continues, oldest first.
RETRY_HISTORY = "retry_history"
# Our system attributes (docs/design.md §9, "Storage outages"): the token of the worker attempt that
# trains the trial (the fence), and the token a trial is created with, so that creating it again after
# a lost connection finds the one whose commit went through instead of making a second.
OWNER_TOKEN = "ee_search:owner"
CREATE_TOKEN = "ee_search:create_token"


class OperatingPointRow(NamedTuple):
    """One point of a trial's own front: per-exit thresholds and what they give on validation."""

    thresholds: list[float]
    accuracy: float
    avg_exit_depth: float
    relative_flops: float | None


@dataclass
class _Record:
    def write(self, target: Any) -> None:
        """Every field that is set, as a user attribute of `target` (an Optuna trial or study)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                target.set_user_attr(f.name, value)

    @classmethod
    def read(cls, source: Any):
        """The record of a trial or study, from its `user_attrs`."""
        attrs = source.user_attrs
        return cls(**{f.name: attrs.get(f.name) for f in fields(cls)})

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class TrialRecord(_Record):
    # cross-links (written when the trial's run is opened)
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None  # the run's page (a UI route for a local store)
    mlflow_model_id: str | None = None  # COMPLETE: the network's MLflow LoggedModel (MLflow >= 3)
    worker: str | None = None  # "HOST:PID" of the process running it (a cluster's node; the last retry's)
    # the pruner's record (the monitored value per epoch; None where it was not finite)
    monitor: str | None = None
    monitor_history: list[float | None] | None = None
    # how training went
    best_epoch: int | None = None
    epochs_trained: int | None = None
    stop_reason: str | None = None  # patience_exhausted | max_epochs | non_finite_loss | pruned | duplicate
    duplicate_of: int | None = None  # pruned untrained: the earlier trial with the same values
    prune_detail: str | None = None  # why the pruner stopped it
    error: str | None = None  # a failed trial's error, one line
    last_pt_write_seconds: float | None = None  # slowest last.pt write
    mlflow_model_seconds: float | None = None  # the LoggedModel and the final metrics linked to it
    # the result (completed trials): the final metrics at the sampled thresholds ...
    accuracy: float | None = None
    avg_exit_depth: float | None = None
    relative_flops: float | None = None
    curve_hypervolume: float | None = None
    thresholds: list[float] | None = None
    # ... and the network's own front: [[thresholds...], accuracy, avg_exit_depth, relative_flops]
    operating_points: list[list[Any]] | None = None
    # resume (docs/design.md §9)
    resumed_by: int | None = None  # on an interrupted trial: the trial that continues it
    resumed_from: int | None = None  # on a retry: the trial it continues
    resumed_at_epoch: int | None = None  # epochs the retry found in last.pt (0: it started over)

    @property
    def has_result(self) -> bool:
        """A completed ee-search trial: it can be placed on a front."""
        return self.accuracy is not None and self.avg_exit_depth is not None

    def final_metrics(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FINAL_METRICS if getattr(self, name) is not None}

    def points(self) -> list[OperatingPointRow]:
        return [OperatingPointRow(list(t), float(a), float(d), f) for t, a, d, f in self.operating_points or []]

    @staticmethod
    def rows(points) -> list[list[Any]]:
        """Operating points (anything with thresholds, accuracy, avg_exit_depth, relative_flops) as stored."""
        return [[list(p.thresholds), p.accuracy, p.avg_exit_depth, p.relative_flops] for p in points]


@dataclass
class StudyRecord(_Record):
    mlflow_parent_run_id: str | None = None  # the study's own MLflow run
    mlflow_experiment_id: str | None = None
