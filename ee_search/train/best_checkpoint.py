"""Keep the best weights, restore them at the end, and write them to `best.pt`.

"Best" is early stopping's own notion (improved by more than tol), so the weights that are kept are
the ones early stopping judged; with weight averaging they are the averaged weights, because those
are what gets validated. With a path, best.pt is written (and handed to `on_saved`, which publishes
it) each time the best improves, so a crash never loses the best weights; a pruned or failed trial
still has its best checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ee_search.exits.logits import ExitLogits
from ee_search.train.callbacks import Callback, TrainerView
from ee_search.train.checkpoint_files import write_atomically
from ee_search.train.early_stopping import EarlyStopping


class BestCheckpoint(Callback):
    def __init__(self, path: str | Path | None, metadata: dict[str, Any] | None = None,
                 on_saved: Callable[[Path], None] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.metadata = dict(metadata or {})
        self.on_saved = on_saved
        self.stopper: EarlyStopping | None = None  # the trainer's own, found at fit start
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.best_val_logits: ExitLogits | None = None
        self.written = False

    def on_fit_start(self, trainer: TrainerView) -> None:
        self.stopper = trainer.find_callback(EarlyStopping)

    def on_validation_end(self, trainer: TrainerView, epoch: int, metrics: dict[str, float]) -> None:
        if self.stopper.improved:
            # A device-side copy: no host transfer on the hot path.
            self.best_state = {k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()}
            self.best_epoch = epoch
            self.best_val_logits = trainer.val_logits
            if self.save() and self.on_saved is not None:
                self.on_saved(self.path)

    def on_fit_end(self, trainer: TrainerView, result) -> None:
        self.restore(trainer.eval_model)
        self.save()

    def on_exception(self, trainer: TrainerView, error: BaseException) -> None:
        self.save()

    def restore(self, model: torch.nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def save(self) -> bool:
        """Write best.pt if there is a path and a best epoch; whether it was written."""
        if self.path is None or self.best_state is None:
            return False
        payload = {
            "state_dict": {k: v.cpu() for k, v in self.best_state.items()},
            "epoch": self.best_epoch,
            "metadata": self.metadata,
        }
        write_atomically(payload, self.path)
        self.written = True
        return True

    def state_dict(self) -> dict[str, Any]:
        logits = self.best_val_logits
        return {"state_dict": self.best_state, "epoch": self.best_epoch,
                "val_logits": None if logits is None else {"logits": logits.logits, "labels": logits.labels}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_state = state["state_dict"]
        self.best_epoch = state["epoch"]
        logits = state["val_logits"]
        self.best_val_logits = None if logits is None else ExitLogits(logits["logits"], logits["labels"])
