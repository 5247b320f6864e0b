"""last.pt: a fit killed at any point and continued from its last.pt ends bit for bit where an
uninterrupted fit with the same seed ends (CPU): weights, averaged weights, history, best epoch,
validation logits and exit metrics. Killed during epoch 1 (nothing saved yet), right after epoch k's
last.pt, and interrupted mid-epoch at a batch boundary (SIGTERM's path)."""

from __future__ import annotations

import pytest
import torch
import yaml

from ee_search.config import validate_raw
from ee_search.experiment import run_experiment
from ee_search.train import Callback, InterruptWhen, ResumeSpec, TrainingInterrupted, load_state
from tests.conftest import TINY_STUDY

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def config():
    raw = yaml.safe_load(TINY_STUDY)
    raw["train"].update(max_epochs=3, early_stopping={"monitor": "val_loss", "patience": 50, "tol": 0.0},
                        averaging={"method": "ema", "decay": 0.9})
    return validate_raw(raw, "tiny")


class Crash(Exception):
    pass


class CrashAt(Callback):
    """A worker dying: after `epoch`'s on_validation_end (last.pt written, metrics logged), at the start
    of epoch `next_epoch` (between last.pt and the next epoch), or at `step` inside an epoch."""

    def __init__(self, epoch: int | None = None, step: int | None = None, next_epoch: int | None = None) -> None:
        self.epoch, self.step, self.next_epoch = epoch, step, next_epoch

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if epoch == self.next_epoch:
            raise Crash(f"start of epoch {epoch}")

    def on_train_batch_end(self, trainer, step: int) -> None:
        if step == self.step:
            raise Crash(f"step {step}")

    def on_validation_end(self, trainer, epoch: int, metrics) -> None:
        if epoch == self.epoch:
            raise Crash(f"epoch {epoch}")


def _same(a, b) -> None:
    assert a.best_epoch == b.best_epoch
    assert a.fit.epochs_trained == b.fit.epochs_trained and a.fit.stop_reason == b.fit.stop_reason
    drop = lambda h: [{k: v for k, v in e.items() if k != "epoch_seconds"} for e in h]  # noqa: E731
    assert drop(a.fit.history) == drop(b.fit.history)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.val_logits.logits, b.val_logits.logits)
    assert a.metrics == b.metrics


@pytest.fixture(scope="module")
def uninterrupted(config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    return run_experiment(config, device=CPU, seed=7, checkpoint_path=tmp / "best.pt",
                          resume=ResumeSpec(tmp / "last.pt"))


def _resume_after(config, tmp_path, crash: Callback | None = None, interrupt_at: int | None = None):
    spec = ResumeSpec(tmp_path / "last.pt")
    recorders = [crash] if crash is not None else []
    if interrupt_at is not None:
        steps = {"n": 0}

        def reason():
            steps["n"] += 1
            return "SIGTERM" if steps["n"] >= interrupt_at else None
        recorders.append(InterruptWhen(reason))
    with pytest.raises((Crash, TrainingInterrupted)):
        run_experiment(config, device=CPU, seed=7, checkpoint_path=tmp_path / "best.pt", recorders=recorders,
                       resume=spec)
    state = load_state(spec.path) if spec.path.exists() else None
    again = ResumeSpec(tmp_path / "last2.pt", state=state)
    return state, run_experiment(config, device=CPU, seed=7, checkpoint_path=tmp_path / "best2.pt", resume=again)


@pytest.mark.parametrize("crash, epoch", [(CrashAt(epoch=1), 1), (CrashAt(next_epoch=3), 2)])
def test_killed_after_epoch_k_resumes_at_k_plus_1_and_ends_identical(config, uninterrupted, tmp_path, crash, epoch):
    state, resumed = _resume_after(config, tmp_path, crash)
    assert state["epoch"] == epoch and not state["mid_epoch"] and len(state["history"]) == epoch
    assert state["pruner_history"] == [h["val_loss"] for h in state["history"]]
    _same(resumed, uninterrupted)


def test_killed_during_the_first_epoch_starts_over_and_ends_identical(config, uninterrupted, tmp_path):
    state, resumed = _resume_after(config, tmp_path, CrashAt(step=5))
    assert state is None
    _same(resumed, uninterrupted)


@pytest.mark.parametrize("step", [3, 30])  # in epoch 1, and in epoch 2 (17 batches an epoch)
def test_interrupted_mid_epoch_resumes_at_that_batch_and_ends_identical(config, uninterrupted, tmp_path, step):
    state, resumed = _resume_after(config, tmp_path, interrupt_at=step)
    assert state["mid_epoch"] and state["global_step"] == step
    assert state["rng"]["data"]["next"] == state["global_step"] - 17 * state["epoch"] > 0
    _same(resumed, uninterrupted)


def test_last_pt_reads_with_weights_only_and_holds_the_contract(uninterrupted, tmp_path_factory, config):
    tmp = tmp_path_factory.mktemp("every")
    spec = ResumeSpec(tmp / "last.pt", every_epochs=2)
    run_experiment(config, device=CPU, seed=7, checkpoint_path=tmp / "best.pt", resume=spec)
    state = torch.load(spec.path, weights_only=True)
    assert len(spec.write_seconds) == 1 and state["epoch"] == 2  # every 2 epochs of 3
    for key in ("model", "optimizer", "averaged", "early_stopping", "best", "history", "rng", "epoch"):
        assert state[key] is not None, key
    assert state["best"]["val_logits"]["logits"].shape[0] == 2


def test_a_dropout_model_interrupted_mid_epoch_ends_identical(tmp_path):
    """branchy_alexnet draws dropout masks from torch's global RNG: last.pt must carry its state."""
    raw = yaml.safe_load(TINY_STUDY)
    raw["model"] = {"name": "branchy_alexnet", "width": 16}
    raw["exits"] = {"criterion": "entropy", "thresholds": [0.8, 0.8]}
    raw["train"].update(max_epochs=2, early_stopping={"monitor": "val_loss", "patience": 50, "tol": 0.0})
    config = validate_raw(raw, "tiny")
    plain = run_experiment(config, device=CPU, seed=7, checkpoint_path=tmp_path / "plain.pt")
    torch.manual_seed(123)  # whatever the global RNG holds before the resumed fit must not matter
    state, resumed = _resume_after(config, tmp_path, interrupt_at=20)
    assert state["mid_epoch"] and state["epoch"] == 1
    _same(resumed, plain)
