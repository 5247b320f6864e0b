"""The seed recipe's optimizers receive their hyperparameters and actually optimise."""

from __future__ import annotations

import pytest
import torch

from ee_search.train.optim import build_optimizer


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "weight_decay": 1e-3}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 0.1, "momentum": 0.8, "weight_decay": 1e-3, "alpha": 0.9}),
        ("adamw", torch.optim.AdamW, {"lr": 0.1, "weight_decay": 1e-3}),
    ],
)
def test_hyperparameters_reach_the_optimizer_and_it_descends(name, cls, expected):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    opt = build_optimizer([w], name, lr=0.1, momentum=0.8, weight_decay=1e-3, alpha=0.9)
    assert isinstance(opt, cls)
    assert {k: opt.defaults[k] for k in expected} == expected
    start = float((w**2).sum())
    for _ in range(50):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert float((w**2).sum()) < 0.1 * start


def test_bad_names_and_rates_are_refused():
    w = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(w, "lion", lr=0.1)
    with pytest.raises(ValueError, match="lr must be positive but got 0"):
        build_optimizer(w, "sgd", lr=0)
