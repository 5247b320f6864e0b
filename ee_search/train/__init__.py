"""Training: the loop (trainer.py) and everything around it as callbacks.

The order in which callbacks see each hook is written down once, in `standard_order`:

0. the learning-rate schedule: steps after each optimizer step, before anything reads the lr, and
   builds its scheduler at fit start before last.pt restores the scheduler's state;
1. weight averaging: swaps its averaged weights in before validation (and refreshes SWA's BN stats),
   so everything after it judges the model that will be kept;
2. early stopping: decides improvement / stop on that model;
3. best checkpoint: snapshots (and writes) the weights early stopping just called an improvement;
4. pruning: records the epoch's monitored value before last.pt holds its record; it decides (and
   may raise) only at epoch end, when the epoch is logged and the best weights are kept;
5. last checkpoint: writes last.pt (last_checkpoint.py) after 1-4 have judged the epoch and before
   it is logged, so no logged epoch is missing from it; at fit start it restores a saved one, once
   1-4 have set up;
6. tracking and anything else that records the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

from ee_search.train.averaging import WeightAveraging
from ee_search.train.best_checkpoint import BestCheckpoint
from ee_search.train.callbacks import Callback, CallbackList, InterruptWhen, TrainerView
from ee_search.train.checkpoint_files import load_checkpoint, write_atomically
from ee_search.train.early_stopping import EarlyStopping, judge_epoch
from ee_search.train.last_checkpoint import (
    LastCheckpoint,
    ResumeSpec,
    completed_epochs,
    newest_readable,
    saved_history,
)
from ee_search.train.lr_schedule import LearningRateSchedule
from ee_search.train.optim import build_optimizer
from ee_search.train.outcome import (
    MAX_EPOCHS,
    NON_FINITE_LOSS,
    PATIENCE_EXHAUSTED,
    FitResult,
    TrainingInterrupted,
)
from ee_search.train.trainer import Trainer

__all__ = [
    "MAX_EPOCHS",
    "NON_FINITE_LOSS",
    "PATIENCE_EXHAUSTED",
    "BestCheckpoint",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "FitResult",
    "InterruptWhen",
    "LastCheckpoint",
    "LearningRateSchedule",
    "ResumeSpec",
    "Trainer",
    "TrainerView",
    "TrainingInterrupted",
    "WeightAveraging",
    "build_optimizer",
    "completed_epochs",
    "judge_epoch",
    "load_checkpoint",
    "newest_readable",
    "saved_history",
    "standard_order",
    "write_atomically",
]


def standard_order(
    averaging: WeightAveraging | None,
    early_stopping: EarlyStopping,
    checkpoint: BestCheckpoint,
    recorders: Sequence[Callback] = (),
    pruning: Callback | None = None,
    last: LastCheckpoint | None = None,
    lr_schedule: LearningRateSchedule | None = None,
) -> list[Callback]:
    ordered: list[Callback] = [lr_schedule] if lr_schedule is not None else []
    ordered += [averaging] if averaging is not None else []
    ordered += [early_stopping, checkpoint]
    ordered += [pruning] if pruning is not None else []
    ordered += [last] if last is not None else []
    return [*ordered, *recorders]
