"""Where a run's artifacts live, and what the files ee-search writes there hold (docs/design.md §5).

A trial's MLflow run:

    checkpoints/best.pt        the kept weights and what rebuilds the network (BestCheckpointFile)
    checkpoints/last.pt        the resumable state while the trial can still be resumed (§9),
    checkpoints/last.alt.pt    written in turn with last.pt, so a torn newest one leaves the previous
    config/trial.yaml          the trial's own resolved study file
    exits/val_logits.pt        every exit's validation logits of the kept model (ValLogitsFile)
    exits/tradeoff.csv|html|png  the accuracy-vs-compute curve and the network's own front

The study's run: config/study.yaml, figures/ and pareto/.

The payloads are plain tensors and data, read with `torch.load(weights_only=True)`: never pickled code.
A file that does not read back as its payload is a `CorruptArtifact` naming the artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import torch

from ee_search.errors import CorruptArtifact
from ee_search.train.checkpoint_files import load_checkpoint, write_atomically

CHECKPOINTS = "checkpoints"
EXITS = "exits"
FIGURES = "figures"
PARETO = "pareto"
BEST_CHECKPOINT = f"{CHECKPOINTS}/best.pt"
LAST_CHECKPOINT = f"{CHECKPOINTS}/last.pt"
LAST_CHECKPOINT_ALT = f"{CHECKPOINTS}/last.alt.pt"
LAST_CHECKPOINTS = (LAST_CHECKPOINT, LAST_CHECKPOINT_ALT)  # the two slots last.pt is written to in turn
VAL_LOGITS = f"{EXITS}/val_logits.pt"
TRADEOFF_CSV = f"{EXITS}/tradeoff.csv"
TRADEOFF_FIGURE = "tradeoff"  # stem: exits/tradeoff.html (interactive) and exits/tradeoff.png
TRIAL_CONFIG = "config/trial.yaml"
STUDY_CONFIG = "config/study.yaml"


def folder(artifact_path: str) -> str:
    """`checkpoints/best.pt` -> `checkpoints` (MLflow uploads a local file into a folder)."""
    return artifact_path.rsplit("/", 1)[0]


def file_name(artifact_path: str) -> str:
    """`checkpoints/best.pt` -> `best.pt`."""
    return artifact_path.rsplit("/", 1)[-1]


class CheckpointMetadata(TypedDict):
    """What rebuilds and feeds the network of a best.pt, written by the fit (checkpoints.py)."""

    model: dict  # the study file's `model` section, as JSON
    exit_loss_weights: list[float]
    in_channels: int
    num_classes: int
    input_size: int
    mean: list[float]
    std: list[float]
    thresholds: list[float]  # the trial's sampled thresholds
    criterion: str


class BestCheckpointFile(TypedDict):
    """`checkpoints/best.pt`, as train.BestCheckpoint writes it."""

    state_dict: dict[str, torch.Tensor]
    epoch: int | None
    metadata: CheckpointMetadata


class ValLogitsFile(TypedDict):
    """`exits/val_logits.pt`: the kept model's exits on the validation split, so any later command
    re-evaluates any thresholds without the network or the data."""

    logits: torch.Tensor  # [K, N, C] float32
    labels: torch.Tensor  # [N] int64
    relative_flops: list[float]  # cost of exiting at each exit, relative to the full network
    criterion: str


def _load(path: str | Path, keys: frozenset[str], artifact: str) -> dict:
    """The payload of a downloaded `artifact`; a file that is unreadable or lacks its keys is a
    CorruptArtifact named by the artifact (the local copy is a temporary file nobody can look at)."""
    try:
        payload = load_checkpoint(path)
    except CorruptArtifact as error:
        raise error.naming(artifact) from None
    missing = keys - set(payload) if isinstance(payload, dict) else keys
    if missing:
        raise CorruptArtifact(artifact, f"it is not an ee-search {file_name(artifact)}: it lacks {sorted(missing)}")
    return payload


def load_best_checkpoint(path: str | Path) -> BestCheckpointFile:
    return _load(path, frozenset(BestCheckpointFile.__annotations__), BEST_CHECKPOINT)  # type: ignore[return-value]


def load_val_logits(path: str | Path) -> ValLogitsFile:
    return _load(path, frozenset(ValLogitsFile.__annotations__), VAL_LOGITS)  # type: ignore[return-value]


def save_val_logits(path: Path, logits: torch.Tensor, labels: torch.Tensor, relative_flops: list[float],
                    criterion: str) -> None:
    payload: ValLogitsFile = {"logits": logits.detach().float().cpu(), "labels": labels.cpu().long(),
                              "relative_flops": list(relative_flops), "criterion": criterion}
    write_atomically(payload, path)
