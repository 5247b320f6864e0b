"""ee_vgg: a VGG-style network (the seed's MyVgg) with an exit after each pooling block.

Blocks of 3x3 conv + BN + ReLU, each block ending in 2x2 max-pooling: (w, w), (2w, 2w), (4w, 4w, 4w)
and, at depth 4, (8w, 8w, 8w). BN is there because the seed trained with large learning rates.
"""

from __future__ import annotations

from torch import nn

from ee_search.models.base import EarlyExitNetwork, exit_heads
from ee_search.models.registry import BuildArgs

_BLOCKS = ((1, 2), (2, 2), (4, 3), (8, 3))  # (channel multiplier, convs per block)


def _vgg_block(inplanes: int, planes: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(inplanes if i == 0 else planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def build_ee_vgg(args: BuildArgs) -> EarlyExitNetwork:
    """`depth` blocks of `_BLOCKS` (3 or 4; the registry checks it, see `models.build_model`)."""
    stages, channels = [], []
    inplanes = args.in_channels
    for mult, convs in _BLOCKS[: args.depth]:
        stages.append(_vgg_block(inplanes, args.width * mult, convs))
        inplanes = args.width * mult
        channels.append(inplanes)
    heads = exit_heads(channels, args.num_classes, args.side_head)
    return EarlyExitNetwork(stages, heads, args.exit_loss_weights)
