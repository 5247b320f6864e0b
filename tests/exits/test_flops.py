"""FLOPs per exit from FlopCounterMode against hand-computed conv and linear FLOPs."""

from __future__ import annotations

import pytest
from torch import nn

from ee_search.exits import exit_costs
from ee_search.models.base import EarlyExitNetwork


def _conv_flops(cin, cout, k, h, w):
    return 2 * cin * cout * k * k * h * w  # multiply-adds, counted as 2 FLOPs


def test_costs_match_hand_count():
    stages = [nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)]
    heads = [nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10)), nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10))]
    costs = exit_costs(EarlyExitNetwork(stages, heads, [1.0, 1.0]), (3, 8, 8))
    s1, s2 = _conv_flops(3, 4, 3, 8, 8), _conv_flops(4, 8, 3, 4, 4)
    h1, h2 = 2 * 256 * 10, 2 * 128 * 10
    assert costs.stage_flops == [s1, s2] and costs.head_flops == [h1, h2]
    assert costs.cumulative == [s1 + h1, s1 + h1 + s2 + h2]
    assert costs.full_network == s1 + s2 + h2
    assert costs.relative == pytest.approx([(s1 + h1) / (s1 + s2 + h2), (s1 + h1 + s2 + h2) / (s1 + s2 + h2)])


def test_myresnet_width64_costs_what_the_seed_says():
    # ~9e13 FLOP per SVHN epoch (73,257 images, forward + backward = 3x forward) at 28x28 crops.
    from ee_search.config import ModelConfig
    from ee_search.models import build_model

    model = build_model(ModelConfig(name="ee_resnet", width=64), 3, 10)
    backbone = sum(exit_costs(model, (3, 28, 28)).stage_flops)
    assert 3 * backbone * 73257 == pytest.approx(9e13, rel=0.05)
