"""The exported early-exit program (docs/design.md §10): the network cut into one `torch.export` program
per stage and its exit head, saved in `DIR/program/` beside the torch-only routine that runs them
(`early_exit_torch.py`, copied there) and the operating point it applies (`exit_rule.json`).

Input: float32 [B, C, H, W] images at the model's input size, scaled to [0, 1], not normalised.
Output: (prediction [B] int64, exit [B] int64 in 1..K, confidence [B] float32 = the max softmax
probability at the exit taken).

One program per stage rather than one for the whole network: after each exit the batch shrinks to the
samples still undecided, a size that depends on the data, which `torch.export` cannot trace through
BatchNorm and pooling. Each stage is an ordinary graph with a dynamic batch dimension, and the small
loop between them (apply the exit rule, keep the survivors) is plain Python in early_exit_torch.py.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ee_search.deploy import early_exit_torch
from ee_search.deploy.early_exit_torch import RULE_FILE, EarlyExitProgram
from ee_search.models.base import EarlyExitNetwork

PROGRAM_DIR = "program"
RUNNER_FILE = Path(early_exit_torch.__file__).name
EXAMPLE_BATCH = 4  # export traces at this batch size; 0 and 1 would be specialised into the graph


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


class ExitStage(nn.Module):
    """Stage k then its head: returns (logits, features), the features being stage k+1's input; the
    last stage returns (logits,). Stage 1 normalises its input first."""

    def __init__(self, stage: nn.Module, head: nn.Module, normalise: Normalise | None, last: bool) -> None:
        super().__init__()
        self.normalise = normalise
        self.stage = stage
        self.head = head
        self.last = last

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.normalise is not None:
            x = self.normalise(x)
        x = self.stage(x)
        logits = self.head(x).float()
        return (logits,) if self.last else (logits, x)


def exit_stages(network: EarlyExitNetwork, normalise: Normalise) -> list[ExitStage]:
    k_exits = network.num_exits
    return [ExitStage(stage, head, normalise if k == 0 else None, last=k == k_exits - 1).eval()
            for k, (stage, head) in enumerate(zip(network.stages, network.heads))]


def full_depth(network: EarlyExitNetwork, normalise: Normalise) -> nn.Module:
    """The same network without early exits (normalise, every stage, then the final head): the
    baseline that the exported program's latency is compared against."""
    return nn.Sequential(normalise, *network.stages, network.heads[-1]).eval()


def example_batch(images: torch.Tensor) -> torch.Tensor:
    """EXAMPLE_BATCH images to trace with (repeated if the split is smaller)."""
    repeats = -(-EXAMPLE_BATCH // len(images))
    # A copy, not a view: each program keeps its example inputs, and a view would keep the whole split.
    return images[:EXAMPLE_BATCH].repeat(repeats, 1, 1, 1)[:EXAMPLE_BATCH].clone()


def batch_dim() -> dict:
    """The first dimension of the input is the batch: any size from 1 up."""
    return {"x": {0: torch.export.Dim("batch", min=1)}}


@torch.no_grad()
def export_stages(stages: Sequence[ExitStage], example: torch.Tensor) -> list[torch.export.ExportedProgram]:
    """One program per stage, each traced on the previous stage's features for `example`."""
    programs = []
    x = example
    for stage in stages:
        programs.append(torch.export.export(stage, (x,), dynamic_shapes=batch_dim()))
        out = stage(x)
        x = out[-1]
    return programs


def save_program(programs: Sequence[torch.export.ExportedProgram], thresholds: Sequence[float],
                 criterion: str, directory: Path) -> None:
    directory.mkdir(parents=True)
    names = [f"stage_{k}.pt2" for k in range(1, len(programs) + 1)]
    with warnings.catch_warnings():
        # channels_last weights are not "contiguous" to the archive writer, which then stores their
        # whole storage and restores the strides on load, as it should, but says so for each one.
        warnings.filterwarnings("ignore", "No complete tensor found", UserWarning)
        for program, name in zip(programs, names):
            torch.export.save(program, str(directory / name))
    write_rule(directory, thresholds, criterion, names)
    shutil.copyfile(early_exit_torch.__file__, directory / RUNNER_FILE)


def write_rule(directory: Path, thresholds: Sequence[float], criterion: str, stages: Sequence[str]) -> None:
    rule = {"criterion": criterion, "thresholds": [float(t) for t in thresholds], "stages": list(stages)}
    (directory / RULE_FILE).write_text(json.dumps(rule, indent=2) + "\n")


def load_program(directory: str | Path) -> EarlyExitProgram:
    return early_exit_torch.load(directory)
