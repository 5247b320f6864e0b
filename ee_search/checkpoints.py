"""best.pt: what it carries besides the weights, and how a saved network is rebuilt and evaluated.

The metadata is what is needed to rebuild and evaluate the model later (model config, dataset shape,
normalisation, exit policy), as plain data that `torch.load(weights_only=True)` accepts. Export,
deploy and the tests reload networks through here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ee_search.config import ModelConfig, StudyConfig
from ee_search.data import DataBundle, PreparedData, build_batches, prepare_data
from ee_search.device import autocast_dtype
from ee_search.exits import ExitCosts, ExitLogits, collect_exit_logits, evaluate, exit_costs
from ee_search.models import build_model
from ee_search.models.base import EarlyExitNetwork
from ee_search.records import BestCheckpointFile, CheckpointMetadata


def checkpoint_metadata(config: StudyConfig, data: DataBundle) -> CheckpointMetadata:
    """best.pt's `metadata` (records.CheckpointMetadata): what rebuilds and feeds the network."""
    return {
        "model": config.model.model_dump(mode="json"),
        "exit_loss_weights": config.loss_weights,
        "in_channels": data.channels,
        "num_classes": data.num_classes,
        "input_size": data.input_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "thresholds": list(config.exits.thresholds),
        "criterion": config.exits.criterion,
    }


def checkpoint_logits(payload: BestCheckpointFile, config: StudyConfig, split: str, device: torch.device,
                      prepared: PreparedData | None = None) -> tuple[ExitLogits, ExitCosts]:
    """Every exit's logits of a saved model on a split ('val' or 'test'), computed once, and the
    exits' costs: any number of threshold settings are then evaluated from them for free. The test
    split is used for reporting only: nothing is chosen from these numbers. `prepared`: the study's
    data if the caller has it (prepared here otherwise)."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test' but got {split!r}")
    model = model_from_checkpoint(payload).to(device=device, memory_format=torch.channels_last)
    prepared = prepared if prepared is not None else prepare_data(config.data, config.seed)
    tc = config.train
    data = build_batches(prepared, config.data.augment, device, tc.batch_size, tc.eval_batch_size, seed=0,
                         channels_last=True)
    logits = collect_exit_logits(model, data.test if split == "test" else data.val,
                                 autocast_dtype(tc.precision, device))
    return logits, exit_costs(model, (data.channels, data.input_size, data.input_size))


def evaluate_checkpoint(payload: BestCheckpointFile, config: StudyConfig, split: str, device: torch.device,
                        thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """Exit metrics of a saved model on a split at `thresholds` (default: those it was trained for)."""
    meta = payload["metadata"]
    logits, costs = checkpoint_logits(payload, config, split, device)
    chosen = meta["thresholds"] if thresholds is None else thresholds
    return evaluate(logits.logits, logits.labels, chosen, meta["criterion"], costs.relative).metrics()


def model_from_checkpoint(payload: BestCheckpointFile) -> EarlyExitNetwork:
    """Rebuild the network a checkpoint describes and load its weights (eval mode, CPU)."""
    meta = payload["metadata"]
    model = build_model(ModelConfig(**meta["model"]), meta["in_channels"], meta["num_classes"],
                        exit_loss_weights=meta["exit_loss_weights"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()
