"""ee_resnet: the seed's MyResNet with exits.

MyResNet = 3x3 stem without pooling + ResNet-18's layer2 and layer3 (two BasicBlocks each, stride 2);
MyResNet2 (depth 4) adds layer4. Built from torchvision's own BasicBlock. Channels are width, 2w, 4w, 8w;
at width 64 on 28x28 crops this is about 0.2 GMAC per image (the seed's ~9e13 FLOP per SVHN epoch).
Exits follow the stem and each layer.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock

from ee_search.models.base import EarlyExitNetwork, exit_heads
from ee_search.models.registry import BuildArgs


def _resnet_layer(inplanes: int, planes: int, blocks: int = 2, stride: int = 2) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def build_ee_resnet(args: BuildArgs) -> EarlyExitNetwork:
    """`depth` 3 is MyResNet, 4 MyResNet2; the registry checks it (see `models.build_model`)."""
    stem = nn.Sequential(
        nn.Conv2d(args.in_channels, args.width, 3, padding=1, bias=False),
        nn.BatchNorm2d(args.width),
        nn.ReLU(inplace=True),
    )
    stages: list[nn.Module] = [stem]
    channels = [args.width]
    for i in range(1, args.depth):
        stages.append(_resnet_layer(channels[-1], args.width * 2**i))
        channels.append(args.width * 2**i)
    model = EarlyExitNetwork(stages, exit_heads(channels, args.num_classes, args.side_head), args.exit_loss_weights)
    _init_like_torchvision(model)
    return model


def _init_like_torchvision(model: nn.Module) -> None:
    # torchvision's ResNet init: Kaiming fan-out for convs, BN to identity.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
