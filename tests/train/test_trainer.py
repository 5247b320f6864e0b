"""The training loop: hook order, the best weights restored at the end and written to a checkpoint that
loads with weights_only=True, the exception path, and metrics that match a recomputation."""

from __future__ import annotations

import time

import pytest
import torch

from ee_search.config import AugmentConfig, DataConfig, ModelConfig
from ee_search.data import build_batches, prepare_data
from ee_search.exits import ExitPolicy, collect_exit_logits
from ee_search.models import build_model
from ee_search.train import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    Trainer,
    build_optimizer,
    load_checkpoint,
    standard_order,
)


@pytest.fixture(scope="module")
def digits():
    cfg = DataConfig(dataset="digits", val_fraction=0.2, augment=AugmentConfig(crop=28, rotation=0))
    return build_batches(prepare_data(cfg, seed=0), cfg.augment, torch.device("cpu"), 64, 256, seed=0)


def _trainer(digits, callbacks, max_epochs=3, lr=0.05, model=ModelConfig(name="branchy_lenet", width=64),
             optimizer="sgd", policy=ExitPolicy((0.5,), "entropy"), exit_loss_weights=None):
    torch.manual_seed(0)
    network = build_model(model, 1, 10, exit_loss_weights=exit_loss_weights)
    opt = build_optimizer(network.parameters(), optimizer, lr, 0.9, 0.0)
    return Trainer(network, opt, digits.train, digits.val, max_epochs=max_epochs, policy=policy,
                   callbacks=callbacks)


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
    ckpt = BestCheckpoint(tmp_path / "best.pt", metadata={"note": "x"})
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


def _score(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """Per-sample criterion of one exit's logits [N, C], in float32 as exit decisions compare it:
    max softmax, or entropy in nats."""
    logits = logits.float()
    if criterion == "max_softmax":
        return torch.softmax(logits, dim=-1).amax(dim=-1)
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def _passes(score: float, threshold: float, criterion: str) -> bool:
    return score >= threshold if criterion == "max_softmax" else score <= threshold


class ThresholdsOnSamples(Callback):
    """Just before validation, puts each side exit's threshold exactly on one validation sample's score
    (the median score among the samples still in at that exit): samples then leave at every exit, and
    some sit on a threshold, so `>=` vs `>` (or `<=` vs `<`) changes the metrics."""

    def on_validation_start(self, trainer, epoch):
        criterion = trainer.policy.criterion
        model = trainer.eval_model
        model.eval()
        with torch.no_grad():
            logits = [torch.cat(z) for z in zip(*(model(x) for x, _ in trainer.val_batches))]
        model.train()
        still_in = torch.ones(len(logits[0]), dtype=torch.bool)
        thresholds = []
        for z in logits[:-1]:
            score = _score(z, criterion)
            t = float(score[still_in].sort().values[int(still_in.sum()) // 2])  # a sample's own float32 score
            thresholds.append(t)
            still_in &= ~torch.tensor([_passes(float(s), t, criterion) for s in score])
        trainer.policy = ExitPolicy(tuple(thresholds), criterion)


@pytest.mark.parametrize("criterion", ["max_softmax", "entropy"])
def test_validation_metrics_match_a_recomputation(digits, criterion):
    """Oracle: every validation metric recomputed by hand (per-sample loops) from the kept model's own logits."""
    weights = (0.5, 0.25, 1.0)  # not the default (0.3, 0.3, 1.0): each exit's weight is distinguishable
    trainer = _trainer(digits, [ThresholdsOnSamples()], max_epochs=1, lr=0.003, optimizer="adamw",
                       model=ModelConfig(name="branchy_alexnet", width=16), exit_loss_weights=weights,
                       policy=ExitPolicy((0.0, 0.0), criterion))
    m = trainer.fit().history[0]
    assert m["lr"] == 0.003
    assert trainer.model.exit_loss_weights == weights

    # The model as validation saw it (nothing trains after the last validation), in eval mode.
    model = trainer.eval_model
    model.eval()
    with torch.no_grad():
        batches = [(model(x), y) for x, y in digits.val]
    K = len(weights)
    logits = [torch.cat([out[k] for out, _ in batches]) for k in range(K)]  # K x [N, C]
    labels = torch.cat([y for _, y in batches]).tolist()
    n = len(labels)
    assert n == len(digits.val.labels)

    # val_loss: sum over exits of w_k * mean over samples of -log softmax(z)[y], in float64.
    expected_loss = 0.0
    for w, z in zip(weights, logits):
        z = z.double()
        ce = sum(float(torch.logsumexp(z[i], dim=0) - z[i, labels[i]]) for i in range(n)) / n
        expected_loss += w * ce
    assert m["val_loss"] == pytest.approx(expected_loss, rel=1e-5)

    # val_accuracy_exit_k: each exit alone.
    predictions = [z.argmax(dim=-1).tolist() for z in logits]
    for k in range(K):
        right = sum(predictions[k][i] == labels[i] for i in range(n))
        assert m[f"val_accuracy_exit_{k + 1}"] == pytest.approx(right / n), k + 1

    # val_accuracy / val_avg_exit_depth: the first side exit whose criterion passes, else exit K.
    thresholds = trainer.policy.thresholds
    scores = [_score(z, criterion).tolist() for z in logits[:-1]]
    taken, right, on_threshold = [], 0, 0
    for i in range(n):
        k = K
        for j, t in enumerate(thresholds):
            on_threshold += scores[j][i] == t
            if _passes(scores[j][i], t, criterion):
                k = j + 1
                break
        taken.append(k)
        right += predictions[k - 1][i] == labels[i]
    assert set(taken) == set(range(1, K + 1)), "samples must leave at every exit"
    assert on_threshold >= 1, "some sample must sit exactly on its threshold"
    assert m["val_accuracy"] == pytest.approx(right / n)
    assert m["val_avg_exit_depth"] == pytest.approx(sum(k / K for k in taken) / n)


class Clocked(Callback):
    """Sleeps where an epoch's clock must not run (before it starts, after it ends) and where it must
    (between training and validation), and reads the clock at the edges of both."""

    OUTSIDE, INSIDE = 0.15, 0.1

    def __init__(self):
        self.started, self.first_step, self.validating, self.ended = [], [], [], []

    def on_epoch_start(self, trainer, epoch):
        time.sleep(self.OUTSIDE)
        self.started.append(time.perf_counter())

    def on_train_batch_end(self, trainer, step):
        if len(self.first_step) < len(self.started):
            self.first_step.append(time.perf_counter())

    def on_validation_start(self, trainer, epoch):
        time.sleep(self.INSIDE)
        self.validating.append(time.perf_counter())

    def on_validation_end(self, trainer, epoch, metrics):
        self.ended.append(time.perf_counter())
        time.sleep(self.OUTSIDE)


def test_epoch_seconds_is_the_epochs_own_wall_time(digits):
    """Oracle: the clock read by a callback around each epoch. An epoch's time covers its training and
    validation (from its first step to the start of validation, which sleeps inside it) and nothing
    before it starts or after it ends (where the callback sleeps too); together they fit in the fit's."""
    clock = Clocked()
    before = time.perf_counter()
    history = _trainer(digits, [clock], max_epochs=2).fit().history
    wall = time.perf_counter() - before
    for k, m in enumerate(history):
        assert clock.validating[k] - clock.first_step[k] <= m["epoch_seconds"] <= clock.ended[k] - clock.started[k]
    assert Clocked.INSIDE * 2 < sum(m["epoch_seconds"] for m in history) <= wall - 4 * Clocked.OUTSIDE


class Boom(Callback):
    def on_validation_end(self, trainer, epoch, metrics):
        if epoch == 2:
            raise RuntimeError("boom")


def test_exception_reaches_every_callback_and_the_best_checkpoint_is_still_written(digits, tmp_path):
    log = []
    stopper = EarlyStopping("val_loss", patience=5, tol=0.0)
    ckpt = BestCheckpoint(tmp_path / "best.pt")
    trainer = _trainer(digits, standard_order(None, stopper, ckpt, [Recorder(log)], pruning=Boom()), max_epochs=5)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert log[-1] == "exception RuntimeError"
    assert (tmp_path / "best.pt").is_file() and ckpt.written


def test_early_stop_ends_the_loop_with_the_reason(digits):
    stopper = EarlyStopping("val_loss", patience=1, tol=10.0)  # nothing ever improves by 10
    result = _trainer(digits, [stopper], max_epochs=6).fit()
    assert (result.epochs_trained, result.stop_reason) == (2, "patience_exhausted")
