"""The standalone early-exit program (docs/design.md §10): normalisation, then compacted inference with
one operating point's thresholds, as a TorchScript module that runs with only torch installed.

Input: float32 [B, C, H, W] images at the model's input size, scaled to [0, 1], not normalised.
Output: (prediction [B] int64, exit [B] int64 in 1..K, confidence [B] float32 = the max softmax
probability at the exit taken).

TorchScript rather than `torch.export`: after each exit the batch shrinks to the samples still
undecided, a size that depends on the data, and `torch.export` (2.11-2.14) cannot trace BatchNorm
and pooling on such unbacked batch sizes (it stops on guards like `Eq(numel, 0)`). Scripting keeps
the data-dependent loop as real control flow.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ee_search.exits.inference import CompactedEarlyExit
from ee_search.models.base import EarlyExitNetwork

PROGRAM_FILE = "model.ts"


class DeployedEarlyExit(nn.Module):
    def __init__(self, network: EarlyExitNetwork, thresholds: Sequence[float], criterion: str,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.core = CompactedEarlyExit(network, thresholds, criterion)
        self.normalise = Normalise(mean, std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.core(self.normalise(x))


class Normalise(nn.Module):
    """[0, 1] images -> the network's inputs, computed exactly as training computed them.

    Training normalises uint8 pixels as addcmul(shift, u8, scale) on NHWC (data/augment.py). Here the
    pixels are recovered as round(x * 255) (exact for x = u8 / 255, and for u8 * (1 / 255), which is
    not), then the same addcmul on the same layout gives the training inputs bit for bit, so the
    program's exits are the evaluation's. Inputs that were never 8-bit are quantised to 8-bit levels,
    like every image the network was trained on."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {list(mean)} vs {list(std)}")
        std_t = torch.tensor(list(std), dtype=torch.float32)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -torch.tensor(list(mean), dtype=torch.float32) / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = torch.round(x.float() * 255.0).permute(0, 2, 3, 1).contiguous()  # NHWC
        return torch.addcmul(self.shift, pixels, self.scale).permute(0, 3, 1, 2)  # NCHW view, channels_last


def full_depth(program: DeployedEarlyExit) -> nn.Module:
    """The same network without early exits (normalise, every stage, then the final head): the
    baseline that the exported program's latency is compared against."""
    return nn.Sequential(program.normalise, *program.core.stages, program.core.heads[-1]).eval()


def script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated": see above
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module.eval())


def save_program(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        script(module).save(str(path))


def load_program(path: str | Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()
