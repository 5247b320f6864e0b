"""Training: the loop (trainer.py) and everything around it as callbacks.

The order in which callbacks see each hook is written down once, in `standard_order`:

1. weight averaging: swaps its averaged weights in before validation (and refreshes SWA's BN stats),
   so everything after it judges the model that will be kept;
2. early stopping: decides improvement / stop on that model;
3. best checkpoint: snapshots the weights early stopping just called an improvement;
3b. resume checkpoint: writes last.pt (resume.py) before the epoch is logged, so no logged epoch
   is missing from it, and publishes best.pt when it improved;
4. tracking and anything else that records the epoch;
5. pruning last: it may raise, and by then the epoch is logged and the best weights are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from ee_search.train.averaging import WeightAveraging
from ee_search.train.callbacks import Callback, CallbackList
from ee_search.train.checkpoint import BestCheckpoint, load_checkpoint
from ee_search.train.early_stopping import EarlyStopping, decide
from ee_search.train.optim import build_optimizer
from ee_search.train.outcome import MAX_EPOCHS, NON_FINITE_LOSS, PATIENCE_EXHAUSTED, FitResult, TrainingInterrupted
from ee_search.train.resume import InterruptWhen, ResumeCheckpoint, ResumeSpec, load_state
from ee_search.train.trainer import ExitPolicy, Trainer

__all__ = [
    "MAX_EPOCHS",
    "NON_FINITE_LOSS",
    "PATIENCE_EXHAUSTED",
    "BestCheckpoint",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ExitPolicy",
    "FitResult",
    "InterruptWhen",
    "ResumeCheckpoint",
    "ResumeSpec",
    "Trainer",
    "TrainingInterrupted",
    "WeightAveraging",
    "build_optimizer",
    "decide",
    "load_checkpoint",
    "load_state",
    "standard_order",
]


def standard_order(
    averaging: WeightAveraging | None,
    early_stopping: EarlyStopping,
    checkpoint: BestCheckpoint,
    recorders: Sequence[Callback] = (),
    pruning: Callback | None = None,
    resume: ResumeCheckpoint | None = None,
) -> list[Callback]:
    ordered: list[Callback] = [averaging] if averaging is not None else []
    ordered += [early_stopping, checkpoint, *([resume] if resume is not None else []), *recorders]
    if pruning is not None:
        ordered.append(pruning)
    return ordered
