"""Every model: one logits tensor per exit with the right shape, on 3-channel crops and 1-channel
images; exit counts agree with the registry used by config validation; the loss is the weighted sum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ee_search.config import ModelConfig
from ee_search.models import MODELS, build_model, num_exits
from ee_search.models.base import EarlyExitNetwork


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("channels", "size"), [(3, 28), (1, 32)])
def test_forward_gives_one_logits_per_exit(name, channels, size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=8), channels, 7)
    outs = model(torch.randn(3, channels, size, size))
    assert len(outs) == model.num_exits == num_exits(name, None)
    assert all(o.shape == (3, 7) for o in outs)
    assert len(model.stages) == len(model.heads) == len(model.exit_loss_weights)


@pytest.mark.parametrize(("name", "depth", "exits"), [("ee_resnet", 4, 4), ("ee_vgg", 4, 4)])
def test_depth_adds_a_stage_and_an_exit(name, depth, exits):
    model = build_model(ModelConfig(name=name, width=8, depth=depth), 3, 10)
    assert model.num_exits == exits == num_exits(name, depth)
    assert len(model(torch.randn(2, 3, 28, 28))) == exits


def test_ee_resnet_is_myresnet_stem_layer2_layer3():
    model = build_model(ModelConfig(name="ee_resnet", width=64), 3, 10)
    stem, layer2, layer3 = model.stages
    conv = stem[0]
    assert (conv.kernel_size, conv.stride, conv.out_channels) == ((3, 3), (1, 1), 64)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in stem.modules())  # no pooling stem
    assert len(layer2) == len(layer3) == 2  # two BasicBlocks each, as ResNet-18
    assert layer2[0].conv1.stride == (2, 2) and layer2[0].conv2.out_channels == 128
    assert layer3[0].conv2.out_channels == 256


def test_exit_loss_is_the_weighted_sum_of_cross_entropies():
    torch.manual_seed(1)
    model = build_model(ModelConfig(name="ee_vgg", width=8, exit_loss_weights=[0.2, 0.5, 1.0]), 3, 10)
    x, y = torch.randn(5, 3, 28, 28), torch.randint(0, 10, (5,))
    outs = model(x)
    expected = sum(w * F.cross_entropy(o, y) for w, o in zip([0.2, 0.5, 1.0], outs))
    torch.testing.assert_close(model.exit_loss(outs, y), expected)


def test_base_checks_its_arguments():
    stage, head = torch.nn.Identity(), torch.nn.Identity()
    with pytest.raises(ValueError, match="one head per stage"):
        EarlyExitNetwork([stage, stage], [head], [1.0])
    with pytest.raises(ValueError, match="one loss weight per exit"):
        EarlyExitNetwork([stage], [head], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive sum"):
        EarlyExitNetwork([stage], [head], [0.0])
