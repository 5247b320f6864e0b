"""Keep the best weights, restore them at the end, and write them to `best.pt`.

"Best" is early stopping's own notion (improved by more than tol), so the weights that are kept are
the ones early stopping judged; with weight averaging they are the averaged weights, because those
are what gets validated. A pruned or failed trial still writes its best checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ee_search.train.callbacks import Callback
from ee_search.train.early_stopping import EarlyStopping


class BestCheckpoint(Callback):
    def __init__(self, stopper: EarlyStopping, path: str | Path | None, metadata: dict[str, Any] | None = None) -> None:
        self.stopper = stopper
        self.path = Path(path) if path is not None else None
        self.metadata = dict(metadata or {})
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self.best_val_logits = None
        self.written = False

    def on_validation_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.stopper.improved:
            # A device-side copy: no host transfer on the hot path, written to disk once at the end.
            self.best_state = {k: v.detach().clone() for k, v in trainer.eval_model.state_dict().items()}
            self.best_epoch = epoch
            self.best_val_logits = trainer.val_logits

    def on_fit_end(self, trainer, result) -> None:
        self.restore(trainer.eval_model)
        self.save()

    def on_exception(self, trainer, error: BaseException) -> None:
        self.save()

    def restore(self, model: torch.nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def save(self) -> None:
        if self.path is None or self.best_state is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "state_dict": {k: v.cpu() for k, v in self.best_state.items()},
            "epoch": self.best_epoch,
            "metadata": self.metadata,
        }
        tmp = self.path.with_suffix(".pt.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.path)  # never a half-written best.pt
        self.written = True


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a saved file (`best.pt`, `val_logits.pt`) safely: tensors and plain data only, never pickled code."""
    return torch.load(path, map_location="cpu", weights_only=True)
