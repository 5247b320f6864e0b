"""Compacted early-exit inference against the dense all-exits path: the same predictions and exit
indices for every sample, on every model, with both criteria, while later stages really see fewer
samples."""

from __future__ import annotations

import pytest
import torch

from ee_search.config import ModelConfig
from ee_search.exits import criterion_score, predict_dense, predict_early_exit
from ee_search.models import MODELS, build_model


def _model(name: str, channels: int = 3):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=16), channels, 10).eval()
    # Random-init BN has unit running stats; give it data-like ones so exits differ in confidence.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _thresholds_for_half(model, x, criterion):
    """Per side exit, the median score on this batch: about half the samples can leave at each."""
    with torch.no_grad():
        scores = criterion_score(torch.stack(model(x)), criterion)
    return [float(scores[k].median()) for k in range(model.num_exits - 1)]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("criterion", ["max_softmax", "entropy"])
def test_compacted_equals_dense(name, criterion):
    model = _model(name)
    x = torch.randn(96, 3, 28, 28).contiguous(memory_format=torch.channels_last)
    thresholds = _thresholds_for_half(model, x, criterion)
    compact = predict_early_exit(model, x, thresholds, criterion)
    pred, taken = predict_dense(model, x, thresholds, criterion)
    assert torch.equal(compact.exit_index, taken)
    assert torch.equal(compact.prediction, pred)
    # Work is really skipped: each stage after the first sees only the survivors.
    assert compact.survivors[0] == 96
    assert all(later <= earlier for earlier, later in zip(compact.survivors, compact.survivors[1:]))
    assert compact.survivors[-1] == int((taken == model.num_exits - 1).sum())
    assert compact.survivors[-1] < 96


def test_everyone_leaving_at_exit_one_skips_the_rest():
    model = _model("ee_vgg")
    x = torch.randn(8, 3, 28, 28)
    out = predict_early_exit(model, x, [0.0, 0.0], "max_softmax")  # max softmax >= 0 always passes
    assert out.exit_index.tolist() == [0] * 8 and out.survivors == [8, 0, 0]


def test_training_mode_is_refused():
    model = _model("branchy_lenet").train()
    with pytest.raises(ValueError, match="eval mode"):
        predict_early_exit(model, torch.randn(2, 3, 28, 28), [0.5], "max_softmax")
