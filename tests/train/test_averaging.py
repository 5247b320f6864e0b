"""Weight averaging against hand-computed averages after scripted steps.

A model with one scalar weight is set to scripted values w1, w2, ... and the callback's hooks are
called as the trainer would; the averaged weight must equal the formula written out by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from ee_search.train.averaging import WeightAveraging, get_ema_warmup_multi_avg_fn, get_t_adema_multi_avg_fn


class ScriptedTrainer:
    """What the averaging callback touches: the live model, eval_model, and training batches."""

    def __init__(self, model, batches=()):
        self.model = model
        self.eval_model = model
        self.train_batches = list(batches)


def _scalar_model():
    model = nn.Linear(1, 1, bias=False)
    return model


def _drive(method, weights, decay=0.9, update_every=1, swa_start_epoch=1, epochs_per_step=None, warmup=0):
    model = _scalar_model()
    trainer = ScriptedTrainer(model)
    cb = WeightAveraging(method, decay=decay, update_every=update_every, swa_start_epoch=swa_start_epoch,
                         warmup=warmup)
    cb.on_fit_start(trainer)
    cb.on_epoch_start(trainer, 1)
    for step, w in enumerate(weights, start=1):
        if epochs_per_step:
            cb.on_epoch_start(trainer, epochs_per_step[step - 1])
        with torch.no_grad():
            model.weight.fill_(w)
        cb.on_train_batch_end(trainer, step)
    return trainer, cb


def _avg(trainer):
    return trainer.eval_model.weight.item()


def test_ema_matches_hand_computation():
    trainer, _ = _drive("ema", [1.0, 2.0, 4.0], decay=0.9)
    # first update copies; then W <- 0.9 W + 0.1 w
    expected = 0.9 * (0.9 * 1.0 + 0.1 * 2.0) + 0.1 * 4.0
    assert _avg(trainer) == pytest.approx(expected)
    assert trainer.eval_model is not trainer.model  # the averaged copy is what gets evaluated


def test_ema_warmup_decay_is_the_smaller_of_decay_and_its_schedule():
    weights = [1.0, 2.0, 4.0, 8.0, -3.0, 5.0]
    trainer, _ = _drive("ema", weights, decay=0.5, warmup=10)
    w = weights[0]  # first update copies (n = 0 -> 1)
    for n, new in enumerate(weights[1:], start=1):
        d = min(0.5, (1 + n) / (10 + n))  # 2/11, 3/12, 4/13, 5/14, 6/15, then 0.5
        w = d * w + (1 - d) * new
    assert _avg(trainer) == pytest.approx(w, rel=1e-6)
    plain, _ = _drive("ema", weights, decay=0.5)
    assert _avg(plain) != pytest.approx(w)  # the warm-up changed the average


def test_ema_warmup_forgets_the_initial_weights_within_an_epoch():
    """After one 32-step epoch at decay 0.99, plain EMA still weighs the initial weights by
    0.99**31 = 73 %; with the warm-up their weight is the product of the per-step decays."""
    start = [0.0, 1.0, 1.0, 1.0]
    warm, _ = _drive("ema", start, decay=0.99, warmup=10)
    assert 1.0 - _avg(warm) == pytest.approx((2 / 11) * (3 / 12) * (4 / 13), rel=1e-5)
    epoch = [0.0] + [1.0] * 31
    warm, _ = _drive("ema", epoch, decay=0.99, warmup=10)
    plain, _ = _drive("ema", epoch, decay=0.99)
    assert 1.0 - _avg(warm) < 1e-6
    assert 1.0 - _avg(plain) == pytest.approx(0.99 ** 31, rel=1e-5)


def test_ema_warmup_leaves_integer_buffers_to_follow_the_model():
    update = get_ema_warmup_multi_avg_fn(0.9, 10)
    averaged, current = [torch.tensor(3)], [torch.tensor(7)]
    update(averaged, current, torch.tensor(2))
    assert averaged[0].item() == 7


def test_swa_is_the_equal_mean_of_the_weights_seen():
    trainer, _ = _drive("swa", [1.0, 2.0, 6.0, 3.0])
    assert _avg(trainer) == pytest.approx((1 + 2 + 6 + 3) / 4)


def test_swa_starts_at_its_epoch_and_mirrors_the_model_before():
    trainer, cb = _drive("swa", [10.0, 20.0, 1.0, 3.0], swa_start_epoch=2, epochs_per_step=[1, 1, 2, 2])
    assert _avg(trainer) == pytest.approx((1 + 3) / 2)  # epoch-1 weights are not averaged
    trainer2, cb2 = _drive("swa", [10.0, 20.0], swa_start_epoch=2)
    cb2.on_validation_start(trainer2, 1)  # before the start epoch: evaluate the current weights
    assert _avg(trainer2) == pytest.approx(20.0)


def test_t_adema_decay_is_alpha_tanh_of_the_update_count():
    alpha = 0.95
    trainer, _ = _drive("t_adema", [1.0, 2.0, 4.0, 8.0], decay=alpha)
    w = 1.0  # first update copies (n = 0 -> 1)
    for n, new in zip((1, 2, 3), (2.0, 4.0, 8.0)):
        d = alpha * math.tanh(n)
        w = d * w + (1 - d) * new
    assert _avg(trainer) == pytest.approx(w, rel=1e-6)


def test_update_every_skips_steps():
    trainer, _ = _drive("ema", [1.0, 100.0, 3.0, 100.0, 5.0, 7.0], decay=0.5, update_every=2)
    # updates at steps 2, 4, 6 see 100, 100, 7
    expected = 0.5 * (0.5 * 100.0 + 0.5 * 100.0) + 0.5 * 7.0
    assert _avg(trainer) == pytest.approx(expected)


def test_t_adema_leaves_integer_buffers_to_follow_the_model():
    update = get_t_adema_multi_avg_fn(0.9)
    averaged, current = [torch.tensor(3)], [torch.tensor(7)]
    update(averaged, current, torch.tensor(2))
    assert averaged[0].item() == 7


def test_swa_recomputes_batchnorm_statistics_before_validation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    batches = [(torch.randn(16, 3) * 3 + 1, torch.zeros(16)) for _ in range(4)]
    trainer = ScriptedTrainer(model, batches)
    cb = WeightAveraging("swa")
    cb.on_fit_start(trainer)
    cb.on_epoch_start(trainer, 1)
    for step in range(1, 4):
        with torch.no_grad():
            model[0].weight.add_(0.1 * step)
        cb.on_train_batch_end(trainer, step)
    cb.on_validation_start(trainer, 1)
    oracle = copy.deepcopy(cb.averaged.module)
    oracle[1].reset_running_stats()
    update_bn(batches, oracle)  # torch's own recomputation, on the same averaged weights
    torch.testing.assert_close(trainer.eval_model[1].running_mean, oracle[1].running_mean)
    torch.testing.assert_close(trainer.eval_model[1].running_var, oracle[1].running_var)
    assert not torch.allclose(trainer.eval_model[1].running_mean, torch.zeros(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"method": "mean"}, "method must be one of"), ({"method": "ema", "update_every": 0}, "update_every must be at least 1 but got 0"),
     ({"method": "swa", "swa_start_epoch": 0}, "swa_start_epoch must be at least 1 but got 0")],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightAveraging(**kwargs)
