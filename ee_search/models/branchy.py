"""BranchyNet's B-LeNet and B-AlexNet (Teerapittayanon et al., 2016), as early-exit networks.

Layer sizes follow the paper's CIFAR/SVHN variants (B_Alexnet / C_Alexnet_SVHN, B_Lenet). Two changes:
the pooling right before each flatten is adaptive, so the same network takes 28x28 crops, 32x32
images or 1-channel digits; and `width` scales every channel count, with width=64 meaning the
paper's sizes (so the same `model.width` field means "bigger" for every model).
"""

from __future__ import annotations

import math
from torch import nn

from ee_search.models.base import EarlyExitNetwork
from ee_search.models.registry import BuildArgs


def _c(channels: int, width: int) -> int:
    return max(1, math.ceil(channels * width / 64))


def build_branchy_lenet(args: BuildArgs) -> EarlyExitNetwork:
    """BranchyNet's own side heads; no `side_head` (the registry marks the family so, and the
    schema rejects `model.side_head` for it). `depth` is always 2 (checked by the registry)."""
    c1, c2, c3 = _c(5, args.width), _c(10, args.width), _c(20, args.width)
    stages = [
        nn.Sequential(nn.Conv2d(args.in_channels, c1, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(inplace=True)),
        nn.Sequential(
            nn.Conv2d(c1, c2, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 5, padding=2), nn.AdaptiveMaxPool2d(4), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(c3 * 16, _c(84, args.width)), nn.ReLU(inplace=True),
        ),
    ]
    heads = [
        # The paper's branch: one 3x3 conv, pool, ReLU, then a classifier.
        nn.Sequential(
            nn.Conv2d(c1, c2, 3, padding=1), nn.AdaptiveMaxPool2d(4), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(c2 * 16, args.num_classes),
        ),
        nn.Linear(_c(84, args.width), args.num_classes),
    ]
    return EarlyExitNetwork(stages, heads, args.exit_loss_weights)


def build_branchy_alexnet(args: BuildArgs) -> EarlyExitNetwork:
    """See `build_branchy_lenet`; `depth` is always 3."""
    c32, c64, c96 = _c(32, args.width), _c(64, args.width), _c(96, args.width)
    fc1, fc2 = _c(256, args.width), _c(128, args.width)

    def lrn() -> nn.Module:
        return nn.LocalResponseNorm(3, alpha=5e-05, beta=0.75)

    stages = [
        nn.Sequential(
            nn.Conv2d(args.in_channels, c32, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, ceil_mode=True), lrn(),
            nn.Conv2d(c32, c64, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, ceil_mode=True), lrn(),
        ),
        nn.Sequential(nn.Conv2d(c64, c96, 3, padding=1), nn.ReLU(inplace=True)),
        nn.Sequential(
            nn.Conv2d(c96, c96, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c96, c64, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(4), nn.Flatten(),
            nn.Linear(c64 * 16, fc1), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(fc1, fc2), nn.ReLU(inplace=True), nn.Dropout(0.5),
        ),
    ]
    heads = [
        nn.Sequential(
            nn.Conv2d(c64, c32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c32, c32, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(4), nn.Flatten(), nn.Linear(c32 * 16, args.num_classes, bias=False),
        ),
        nn.Sequential(
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(c96, c32, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(c32 * 4, args.num_classes, bias=False),
        ),
        nn.Linear(fc2, args.num_classes, bias=False),
    ]
    return EarlyExitNetwork(stages, heads, args.exit_loss_weights)
