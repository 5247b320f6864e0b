"""last.pt: a fit killed at any point and continued from its last.pt ends bit for bit where an
uninterrupted fit with the same seed ends (CPU): weights, averaged weights, history, best epoch,
validation logits, exit metrics, and the final state of the trainer and of every stateful callback.
Killed during epoch 1 (nothing saved yet), right after epoch k's last.pt, and interrupted mid-epoch
at a batch boundary (SIGTERM's path). And the converse: leave any one state out and it does not.
The fits run a learning-rate schedule (warm-up, then cosine), so a resume lands mid-schedule."""

from __future__ import annotations

import optuna
import pytest
import torch
import yaml

from ee_search.config import validate_raw
from ee_search.fit import train_network
from ee_search.search.pruning import PruningCallback
from ee_search.train import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    InterruptWhen,
    ResumeSpec,
    LearningRateSchedule,
    Trainer,
    TrainingInterrupted,
    WeightAveraging,
    completed_epochs,
    load_checkpoint,
    newest_readable,
)
from ee_search.train.checkpoint_files import UNREADABLE
from ee_search.train.last_checkpoint import moved
from tests.conftest import TINY_STUDY

CPU = torch.device("cpu")
SUBSET = 320  # 5 batches of 64 an epoch (the last partial batch is dropped): what is resumed, not how much
STUDY = optuna.create_study(pruner=optuna.pruners.NopPruner())  # trials for the pruning callback


def _config(**early_stopping):
    raw = yaml.safe_load(TINY_STUDY)
    raw["data"]["train_subset"] = SUBSET
    raw["train"].update(max_epochs=3, early_stopping={"monitor": "val_loss", **early_stopping},
                        averaging={"method": "ema", "decay": 0.9},
                        lr_schedule={"warmup_epochs": 1.4, "decay": "cosine", "min_factor": 0.1})
    return validate_raw(raw, "tiny")


@pytest.fixture(scope="module")
def config():
    return _config(patience=50, tol=0.0)


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


class FinalStates(Callback):
    """The trainer's and every stateful callback's state as the fit ends (epoch times left out)."""

    def on_fit_end(self, trainer, result) -> None:
        own = trainer.state_dict()
        own["history"] = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in own["history"]]
        self.states = moved({"trainer": own, **{k: cb.state_dict() for k, cb in trainer.callbacks.stateful().items()}},
                            "cpu")


def _fit(config, tmp, name: str, state=None, recorders=()):
    """A fit as a trial runs it (best.pt, last.pt, a pruning callback), and its final states."""
    final = FinalStates()
    spec = ResumeSpec(tmp / f"{name}-last.pt", state=state)
    result = train_network(config, device=CPU, seed=7, checkpoint_path=tmp / f"{name}-best.pt",
                           recorders=[*recorders, final], pruning=PruningCallback(STUDY.ask(), None), resume=spec)
    return result, final.states


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _same(a, b) -> None:
    (a, a_states), (b, b_states) = a, b
    assert a.best_epoch == b.best_epoch
    assert a.fit.epochs_trained == b.fit.epochs_trained and a.fit.stop_reason == b.fit.stop_reason
    drop = lambda h: [{k: v for k, v in e.items() if k != "epoch_seconds"} for e in h]  # noqa: E731
    assert drop(a.fit.history) == drop(b.fit.history)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.val_logits.logits, b.val_logits.logits)
    assert a.metrics == b.metrics
    assert a_states.keys() == b_states.keys()
    for key in a_states:
        assert _equal(a_states[key], b_states[key]), key


@pytest.fixture(scope="module")
def uninterrupted(config, tmp_path_factory):
    return _fit(config, tmp_path_factory.mktemp("plain"), "plain")


def _resume_after(config, tmp_path, crash: Callback | None = None, interrupt_at: int | None = None):
    """Kill a fit, then continue it from its last.pt: the saved state, and the continued fit."""
    recorders = [crash] if crash is not None else []
    if interrupt_at is not None:
        steps = {"n": 0}

        def reason():
            steps["n"] += 1
            return "SIGTERM" if steps["n"] >= interrupt_at else None
        recorders.append(InterruptWhen(reason))
    with pytest.raises((Crash, TrainingInterrupted)):
        _fit(config, tmp_path, "killed", recorders=recorders)
    path = tmp_path / "killed-last.pt"
    state = load_checkpoint(path) if path.exists() else None
    return state, _fit(config, tmp_path, "again", state=state)


@pytest.mark.parametrize("crash, epoch", [(CrashAt(epoch=1), 1), (CrashAt(next_epoch=3), 2)])
def test_killed_after_epoch_k_resumes_at_k_plus_1_and_ends_identical(config, uninterrupted, tmp_path, crash, epoch):
    state, resumed = _resume_after(config, tmp_path, crash)
    own = state["trainer"]
    assert own["epoch"] == epoch and not own["mid_epoch"] and len(own["history"]) == epoch
    assert state["callbacks"]["PruningCallback"]["history"] == [h["val_loss"] for h in own["history"]]
    _same(resumed, uninterrupted)


def test_killed_during_the_first_epoch_starts_over_and_ends_identical(config, uninterrupted, tmp_path):
    state, resumed = _resume_after(config, tmp_path, CrashAt(step=3))
    assert state is None
    _same(resumed, uninterrupted)


@pytest.mark.parametrize("step", [3, 8])  # in epoch 1, and in epoch 2 (5 batches an epoch)
def test_interrupted_mid_epoch_resumes_at_that_batch_and_ends_identical(config, uninterrupted, tmp_path, step):
    state, resumed = _resume_after(config, tmp_path, interrupt_at=step)
    own = state["trainer"]
    assert own["mid_epoch"] and own["global_step"] == step
    assert own["rng"]["data"]["next"] == own["global_step"] - 5 * own["epoch"] > 0
    _same(resumed, uninterrupted)


def test_last_pt_goes_to_two_files_in_turn_and_a_retry_takes_the_newest_that_reads(config, tmp_path):
    """Killed before epoch 3: one file holds epoch 1, the other epoch 2. The newest is truncated on its
    way to the store: epoch 1's is taken (tests/search/test_resume_trial.py continues from it, to the
    same end); neither readable (here another format), nothing is, before any fit is built."""
    slots = {"last.pt": tmp_path / "last.pt", "last.alt.pt": tmp_path / "last.alt.pt"}
    spec = ResumeSpec(slots["last.pt"], alternate=slots["last.alt.pt"])
    with pytest.raises(Crash):
        train_network(config, device=CPU, seed=7, checkpoint_path=tmp_path / "killed-best.pt", resume=spec,
                      recorders=[CrashAt(next_epoch=3)], pruning=PruningCallback(STUDY.ask(), None))
    assert {name: completed_epochs(load_checkpoint(p)) for name, p in slots.items()} == {"last.pt": 1, "last.alt.pt": 2}
    found = newest_readable(slots)
    assert (found.name, completed_epochs(found.state), found.refused) == ("last.alt.pt", 2, [])
    whole = slots["last.alt.pt"].read_bytes()
    slots["last.alt.pt"].write_bytes(whole[: len(whole) // 2])
    found = newest_readable(slots)
    assert (found.name, completed_epochs(found.state)) == ("last.pt", 1)
    assert [str(e) for e in found.refused] == [f"last.alt.pt cannot be read: {UNREADABLE}"]
    torch.save({**found.state, "format": 1}, slots["last.pt"])
    found = newest_readable(slots)
    assert found.state is None and found.name is None
    assert [e.file for e in found.refused] == ["last.pt", "last.alt.pt"] and "format 1" in str(found.refused[0])


def test_last_pt_reads_with_weights_only_and_holds_the_contract(config, tmp_path):
    spec = ResumeSpec(tmp_path / "last.pt", every_epochs=2)
    train_network(config, device=CPU, seed=7, checkpoint_path=tmp_path / "best.pt", resume=spec,
                  pruning=PruningCallback(STUDY.ask(), None))
    state = torch.load(spec.path, weights_only=True)
    assert len(spec.write_seconds) == 1 and state["format"] == 2 and state["trainer"]["epoch"] == 2  # every 2 of 3
    assert set(state["callbacks"]) == {"EarlyStopping", "BestCheckpoint", "WeightAveraging", "PruningCallback",
                                       "LearningRateSchedule"}
    for key in ("model", "optimizer", "history", "rng", "epoch"):
        assert state["trainer"][key] is not None, key
    assert state["callbacks"]["BestCheckpoint"]["val_logits"]["logits"].shape[0] == 2


def test_a_last_pt_of_another_format_or_missing_a_state_is_refused(config, tmp_path):
    state, _ = _resume_after(config, tmp_path, CrashAt(epoch=1))
    with pytest.raises(ValueError, match="format 1"):
        _fit(config, tmp_path, "old", state={**state, "format": 1})
    del state["callbacks"]["EarlyStopping"]
    with pytest.raises(ValueError, match="EarlyStopping"):
        _fit(config, tmp_path, "partial", state=state)


# Each state filed in last.pt, and the class whose load_state_dict takes it back.
OWNERS = {"trainer": Trainer, "EarlyStopping": EarlyStopping, "BestCheckpoint": BestCheckpoint,
          "WeightAveraging": WeightAveraging, "PruningCallback": PruningCallback,
          "LearningRateSchedule": LearningRateSchedule}


@pytest.fixture(scope="module")
def nothing_improves_after_epoch_1(tmp_path_factory):
    """A fit whose every state differs from its initial one by the middle of epoch 3: early stopping is
    stale, the best epoch is 1 (not the latest), the average and the pruner's record are two epochs
    long, and the loop is mid-epoch. Interrupted there, last.pt, and the same fit uninterrupted."""
    config = _config(patience=5, tol=10.0)
    tmp = tmp_path_factory.mktemp("stale")
    state, resumed = _resume_after(config, tmp, interrupt_at=13)  # epoch 3 runs steps 11..15
    plain = _fit(config, tmp, "plain")
    _same(resumed, plain)  # with every state carried over: identical
    return config, state, plain


@pytest.mark.parametrize("left_out", sorted(OWNERS))
def test_leaving_any_one_state_out_of_the_resume_changes_the_continuation(nothing_improves_after_epoch_1,
                                                                          tmp_path, monkeypatch, left_out):
    """The converse of the tests above, so that none of them passes by accident: with one state not
    carried over (its owner keeps its initial state), the continued fit no longer ends identical."""
    config, state, plain = nothing_improves_after_epoch_1
    assert left_out == "trainer" or left_out in state["callbacks"]
    monkeypatch.setattr(OWNERS[left_out], "load_state_dict", lambda self, saved: None)
    with pytest.raises(AssertionError):
        _same(_fit(config, tmp_path, "partial", state=state), plain)


def test_a_dropout_model_interrupted_mid_epoch_ends_identical(tmp_path):
    """branchy_alexnet draws dropout masks from torch's global RNG: last.pt must carry its state."""
    raw = yaml.safe_load(TINY_STUDY)
    raw["data"]["train_subset"] = SUBSET
    raw["model"] = {"name": "branchy_alexnet", "width": 16}
    raw["exits"] = {"criterion": "entropy", "thresholds": [0.8, 0.8]}
    raw["train"].update(max_epochs=2, early_stopping={"monitor": "val_loss", "patience": 50, "tol": 0.0})
    config = validate_raw(raw, "tiny")
    plain = _fit(config, tmp_path, "plain")
    torch.manual_seed(123)  # whatever the global RNG holds before the resumed fit must not matter
    state, resumed = _resume_after(config, tmp_path, interrupt_at=8)  # in epoch 2
    assert state["trainer"]["mid_epoch"] and state["trainer"]["epoch"] == 1
    _same(resumed, plain)
