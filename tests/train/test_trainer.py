"""The training loop: hook order, the best weights restored at the end and written to a checkpoint that
loads with weights_only=True, the exception path, and metrics that match a recomputation."""

from __future__ import annotations

import pytest
import torch

from ee_search.config import AugmentConfig, DataConfig, ModelConfig
from ee_search.data import build_batches, prepare_data
from ee_search.exits import collect_exit_logits
from ee_search.models import build_model
from ee_search.train import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    ExitPolicy,
    Trainer,
    build_optimizer,
    load_checkpoint,
    standard_order,
)


@pytest.fixture(scope="module")
def digits():
    cfg = DataConfig(dataset="digits", val_fraction=0.2, augment=AugmentConfig(crop=28, rotation=0))
    return build_batches(prepare_data(cfg, seed=0), cfg.augment, torch.device("cpu"), 64, 256, seed=0)


def _trainer(digits, callbacks, max_epochs=3, lr=0.05):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="branchy_lenet", width=64), 1, 10)
    opt = build_optimizer(model.parameters(), "sgd", lr, 0.9, 0.0)
    return Trainer(model, opt, digits.train, digits.val, max_epochs=max_epochs,
                   policy=ExitPolicy((0.5,), "entropy"), callbacks=callbacks)


class Recorder(Callback):
    def __init__(self, log):
        self.log = log

    def on_fit_start(self, trainer):
        self.log.append("fit_start")

    def on_epoch_start(self, trainer, epoch):
        self.log.append(f"epoch_start {epoch}")

    def on_train_batch_end(self, trainer, step):
        if step == 1:
            self.log.append("batch")

    def on_validation_start(self, trainer, epoch):
        self.log.append(f"validation_start {epoch}")

    def on_validation_end(self, trainer, epoch, metrics):
        self.log.append(f"validation_end {epoch}")

    def on_epoch_end(self, trainer, epoch, metrics):
        self.log.append(f"epoch_end {epoch}")

    def on_fit_end(self, trainer, result):
        self.log.append(f"fit_end {result.stop_reason}")

    def on_exception(self, trainer, error):
        self.log.append(f"exception {type(error).__name__}")


def test_hooks_run_in_order(digits):
    log = []
    _trainer(digits, [Recorder(log)], max_epochs=2).fit()
    assert log == [
        "fit_start", "epoch_start 1", "batch", "validation_start 1", "validation_end 1", "epoch_end 1",
        "epoch_start 2", "validation_start 2", "validation_end 2", "epoch_end 2", "fit_end max_epochs",
    ]


def test_best_weights_are_restored_and_checkpoint_reloads(digits, tmp_path):
    stopper = EarlyStopping("val_accuracy", patience=10, tol=0.0)
    ckpt = BestCheckpoint(stopper, tmp_path / "best.pt", metadata={"note": "x"})
    trainer = _trainer(digits, standard_order(None, stopper, ckpt), max_epochs=4)
    result = trainer.fit()
    history = [h["val_accuracy"] for h in result.history]
    assert ckpt.best_epoch == 1 + max(range(len(history)), key=lambda i: (history[i], -i))
    # The model now holds the best epoch's weights: its logits are the cached ones of that epoch.
    again = collect_exit_logits(trainer.eval_model, digits.val)
    torch.testing.assert_close(again.logits, ckpt.best_val_logits.logits)
    payload = load_checkpoint(tmp_path / "best.pt")  # weights_only=True inside
    assert payload["epoch"] == ckpt.best_epoch and payload["metadata"] == {"note": "x"}
    fresh = build_model(ModelConfig(name="branchy_lenet", width=64), 1, 10)
    fresh.load_state_dict(payload["state_dict"])
    torch.testing.assert_close(collect_exit_logits(fresh, digits.val).logits, again.logits)


def test_validation_metrics_match_a_recomputation(digits):
    result = _trainer(digits, [], max_epochs=1).fit()
    m = result.history[0]
    assert set(m) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_accuracy_exit_1",
                      "val_accuracy_exit_2", "val_avg_exit_depth", "lr", "epoch_seconds"}
    assert m["lr"] == 0.05 and m["epoch_seconds"] > 0
    assert 0.5 <= m["val_avg_exit_depth"] <= 1.0


class Boom(Callback):
    def on_validation_end(self, trainer, epoch, metrics):
        if epoch == 2:
            raise RuntimeError("boom")


def test_exception_reaches_every_callback_and_the_best_checkpoint_is_still_written(digits, tmp_path):
    log = []
    stopper = EarlyStopping("val_loss", patience=5, tol=0.0)
    ckpt = BestCheckpoint(stopper, tmp_path / "best.pt")
    trainer = _trainer(digits, standard_order(None, stopper, ckpt, [Recorder(log)], pruning=Boom()), max_epochs=5)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert log[-1] == "exception RuntimeError"
    assert (tmp_path / "best.pt").is_file() and ckpt.written


def test_early_stop_ends_the_loop_with_the_reason(digits):
    stopper = EarlyStopping("val_loss", patience=1, tol=10.0)  # nothing ever improves by 10
    result = _trainer(digits, [stopper], max_epochs=6).fit()
    assert (result.epochs_trained, result.stop_reason) == (2, "patience_exhausted")
