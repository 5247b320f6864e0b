"""A small 3-exit CNN written against ee-search's model protocol (README, "Your own model and data").

    model:
      name: examples.my_early_exit_net:build     # run ee-search from the repository root
      width: 16                                  # read below; searchable like any field
      options: {head_hidden: 32}                 # anything else your function wants

`build(in_channels, num_classes, config)` gets the study file's `model` section as a dict and returns
an nn.Module with `stages` and `heads` (nn.ModuleLists of equal length K) whose `forward` returns K
logits tensors: head k applied to the output of stages 1..k. ee-search runs the stages and heads one
at a time (training, FLOPs per exit, early-exit inference, export), so forward must do exactly that.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv, BN, ReLU, then 2x2 max-pool: each stage halves the image."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def exit_head(channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """Global average pool and a small MLP: works on any image size."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class SmallEarlyExitCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: list[int], head_hidden: int) -> None:
        super().__init__()
        inputs = [in_channels, *widths[:-1]]
        self.stages = nn.ModuleList(conv_block(a, b) for a, b in zip(inputs, widths))
        self.heads = nn.ModuleList(exit_head(c, head_hidden, num_classes) for c in widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            logits.append(head(x))
        return logits


def build(in_channels: int, num_classes: int, config: dict) -> nn.Module:
    width = config["width"]
    options = config.get("options", {})
    return SmallEarlyExitCNN(in_channels, num_classes, [width, 2 * width, 4 * width],
                             head_hidden=options.get("head_hidden", 32))
