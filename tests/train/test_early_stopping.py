"""Early stopping, table-driven: a sequence of monitored values -> the epoch training stops at, and why.

The seed's EarlyStopping had two bugs, both covered here: it returned a bool and the caller compared it
with the string "True" (so it never stopped), and an improvement of exactly `tol` fell through both of
its branches (neither reset nor counted). Here an epoch improves only when it beats the best so far by
MORE than tol; exactly tol counts as no improvement.
"""

from __future__ import annotations

import math

import pytest

from ee_search.train.early_stopping import EarlyStopping, StopState, judge_epoch

NAN, INF = math.nan, math.inf


def run_sequence(values, *, mode="min", patience=2, tol=0.0, train_losses=None):
    """Feed values epoch by epoch; return (stop epoch or None, reason, epochs that improved)."""
    state = StopState()
    improved = []
    for epoch, value in enumerate(values, start=1):
        train_loss = None if train_losses is None else train_losses[epoch - 1]
        d = judge_epoch(state, value, epoch, mode=mode, patience=patience, tol=tol, train_loss=train_loss)
        state = d.state
        if d.improved:
            improved.append(epoch)
        if d.stop:
            return epoch, d.reason, improved
    return None, None, improved


CASES = [
    # id, values, kwargs, expected stop epoch, reason, improving epochs
    ("steady improvement never stops", [5, 4, 3, 2, 1], {}, None, None, [1, 2, 3, 4, 5]),
    ("stops after patience stale epochs", [5, 4, 4.5, 4.2, 3], {"patience": 2}, 4, "patience_exhausted", [1, 2]),
    ("a new best resets the count", [5, 6, 4, 6, 6], {"patience": 2}, 5, "patience_exhausted", [1, 3]),
    ("tie is not an improvement", [3, 3, 3], {"patience": 2}, 3, "patience_exhausted", [1]),
    # Values exact in binary, so "exactly tol" really is exact.
    ("improvement of exactly tol is stale (seed bug 2)", [1.0, 0.75], {"tol": 0.25, "patience": 1}, 2, "patience_exhausted", [1]),
    ("exactly tol twice counts twice", [1.0, 0.75, 0.75], {"tol": 0.25, "patience": 2}, 3, "patience_exhausted", [1]),
    ("exactly tol in max mode", [0.5, 0.75], {"mode": "max", "tol": 0.25, "patience": 1}, 2, "patience_exhausted", [1]),
    ("improvement just over tol counts", [1.0, 0.49, -0.02], {"tol": 0.5, "patience": 1}, None, None, [1, 2, 3]),
    ("small gains below tol accumulate staleness", [1.0, 0.99, 0.98, 0.97], {"tol": 0.05, "patience": 3}, 4, "patience_exhausted", [1]),
    ("patience 1 with huge tol stops at epoch 2", [9, 1], {"tol": 10.0, "patience": 1}, 2, "patience_exhausted", [1]),
    ("max mode (val_accuracy)", [0.5, 0.6, 0.55, 0.6], {"mode": "max", "patience": 2}, 4, "patience_exhausted", [1, 2]),
    ("NaN stops at once", [1.0, NAN, 0.5], {"patience": 5}, 2, "non_finite_loss", [1]),
    ("inf stops at once", [INF], {"patience": 5}, 1, "non_finite_loss", []),
    ("NaN first epoch", [NAN], {}, 1, "non_finite_loss", []),
    ("non-finite training loss stops even if val is fine", [1.0, 0.5], {"train_losses": [1.0, NAN]}, 2, "non_finite_loss", [1]),
]


@pytest.mark.parametrize(("values", "kwargs", "stop", "reason", "improved"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sequence_to_stop_epoch(values, kwargs, stop, reason, improved):
    assert run_sequence(values, **kwargs) == (stop, reason, improved)


def test_seed_bug_1_a_stop_decision_is_acted_on():
    # The seed returned True and its loop tested `== "True"`; here the callback calls request_stop.
    class FakeTrainer:
        stopped_with = None

        def request_stop(self, reason):
            self.stopped_with = reason

    trainer = FakeTrainer()
    cb = EarlyStopping("val_loss", patience=1, tol=0.0)
    cb.on_validation_end(trainer, 1, {"val_loss": 1.0})
    assert trainer.stopped_with is None and cb.improved
    cb.on_validation_end(trainer, 2, {"val_loss": 1.0})
    assert trainer.stopped_with == "patience_exhausted" and not cb.improved
    assert cb.state.best == 1.0 and cb.state.best_epoch == 1 and cb.state.stale == 1


def test_monitor_names_give_their_direction():
    assert EarlyStopping("val_loss").mode == "min"
    assert EarlyStopping("val_accuracy").mode == "max"
    assert EarlyStopping("val_accuracy_exit_3").mode == "max"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"patience": 0}, "patience must be at least 1 but got 0"),
     ({"tol": -1.0}, "tol cannot be negative but got -1.0"),
     ({"monitor": "val_f1"}, "monitor must be val_loss, val_accuracy, val_curve_hypervolume or val_accuracy_exit_<k>"),
     ({"monitor": "val_accuracy_exit_0"}, "but got 'val_accuracy_exit_0'")],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EarlyStopping(**kwargs)
