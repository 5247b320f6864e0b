"""One configured training run, without Optuna or MLflow: data -> model -> trainer -> exits.

The objective wraps this with a trial and a tracked run; benchmarks and tests call it bare. The
checkpoint written here carries what is needed to rebuild and evaluate the model later (model config,
dataset shape, normalisation, exit policy), as plain data that `torch.load(weights_only=True)` accepts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ee_search.config import StudyConfig
from ee_search.data import DataBundle, build_batches, prepare_data
from ee_search.exits import (
    ExitCosts,
    ExitLogits,
    ExitOutcome,
    OperatingPoint,
    collect_exit_logits,
    curve_hypervolume,
    evaluate,
    exit_costs,
    operating_points,
    threshold_grid,
    tradeoff_curve,
)
from ee_search.models import build_model
from ee_search.models.base import EarlyExitNetwork
from ee_search.train import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    ExitPolicy,
    FitResult,
    ResumeCheckpoint,
    ResumeSpec,
    Trainer,
    WeightAveraging,
    build_optimizer,
    standard_order,
)


_INIT_LOCK = threading.Lock()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device: use --device cpu or auto")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA (BN and the loss stay fp32); fp32 on CPU, where bf16 is rarely faster."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@dataclass
class ExperimentResult:
    fit: FitResult
    model: EarlyExitNetwork  # the kept model: best (averaged) weights, eval mode
    data: DataBundle
    costs: ExitCosts
    best_epoch: int | None
    val_logits: ExitLogits | None  # of the best epoch: what the kept model produces on val
    outcome: ExitOutcome | None  # at the trial's thresholds; None if no epoch ever counted
    curve: list[dict[str, float]]  # one threshold shared by every side exit, swept over its range
    points: list[OperatingPoint]  # the network's own front over per-exit thresholds (DESIGN.md §4)
    checkpoint: Path | None

    @property
    def metrics(self) -> dict[str, float]:
        if self.outcome is None:
            return {}
        return self.outcome.metrics() | {"curve_hypervolume": curve_hypervolume(self.points)}


def run_experiment(
    config: StudyConfig,
    *,
    device: torch.device,
    seed: int,
    stopper: EarlyStopping | None = None,
    recorders: Sequence[Callback] = (),
    pruning: Callback | None = None,
    checkpoint_path: str | Path | None = None,
    resume: ResumeSpec | None = None,
) -> ExperimentResult:
    # Each trial queues its kernels on its own CUDA stream, so trials sharing a GPU (search.n_jobs)
    # can overlap instead of serialising on the default stream.
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    try:
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            return _run(config, device, seed, stopper, recorders, pruning, checkpoint_path, resume)
    finally:
        if stream is not None:
            stream.synchronize()  # results (or a pruned trial's checkpoint) are read on other streams next


def _run(config, device, seed, stopper, recorders, pruning, checkpoint_path, resume) -> ExperimentResult:
    prepared = prepare_data(config.data, config.seed)  # same split for every trial of the study
    tc = config.train
    data = build_batches(prepared, config.data.augment, device, tc.batch_size, tc.eval_batch_size,
                         seed, channels_last=True)
    # Threads (search.n_jobs) share torch's global RNG: the initial weights are drawn under a lock on
    # a forked RNG, so each trial's are a function of its seed alone. The global RNG is then seeded
    # for what draws from it during training (dropout); last.pt saves its state.
    with _INIT_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model(config.model, data.channels, data.num_classes, exit_loss_weights=config.loss_weights)
    torch.manual_seed(seed)
    # channels_last on every device: on this project's 2-core CPU it trains ee_resnet ~5x faster.
    model = model.to(device=device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), tc.optimizer, tc.lr, tc.momentum, tc.weight_decay, tc.alpha)
    es = tc.early_stopping
    stopper = stopper or EarlyStopping(es.monitor, es.patience, es.tol)
    policy = ExitPolicy(tuple(config.exits.thresholds), config.exits.criterion)
    checkpoint = BestCheckpoint(stopper, checkpoint_path, metadata=checkpoint_metadata(config, data))
    avg = tc.averaging
    averaging = (
        WeightAveraging(avg.method, avg.decay, avg.update_every, avg.swa_start_epoch)
        if avg.method != "none"
        else None
    )
    resumer = ResumeCheckpoint(resume, stopper, checkpoint, averaging) if resume is not None else None
    trainer = Trainer(
        model,
        optimizer,
        data.train,
        data.val,
        max_epochs=tc.max_epochs,
        policy=policy,
        callbacks=standard_order(averaging, stopper, checkpoint, recorders, pruning, resumer),
        autocast_dtype=autocast_dtype(tc.precision, device),
        compile_model=tc.compile,
    )
    fit = trainer.fit()
    kept = trainer.eval_model
    kept.eval()
    costs = exit_costs(kept, (data.channels, data.input_size, data.input_size))
    logits = checkpoint.best_val_logits
    outcome, curve, points = None, [], []
    if logits is not None:
        outcome = evaluate(logits.logits, logits.labels, policy.thresholds, policy.criterion, costs.relative)
        grid = threshold_grid(policy.criterion, data.num_classes, config.exits.sweep_points)
        curve = tradeoff_curve(logits.logits, logits.labels, policy.criterion, grid, costs.relative)
        points = operating_points(logits.logits, logits.labels, policy.criterion, costs.relative,
                                  include=policy.thresholds)
    return ExperimentResult(
        fit=fit,
        model=kept,
        data=data,
        costs=costs,
        best_epoch=checkpoint.best_epoch,
        val_logits=logits,
        outcome=outcome,
        curve=curve,
        points=points,
        checkpoint=checkpoint.path if checkpoint.written else None,
    )


def checkpoint_metadata(config: StudyConfig, data: DataBundle) -> dict:
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


def checkpoint_logits(payload: dict, config: StudyConfig, split: str,
                      device: torch.device) -> tuple[ExitLogits, ExitCosts]:
    """Every exit's logits of a saved model on a split ('val' or 'test'), computed once, and the
    exits' costs: any number of threshold settings are then evaluated from them for free. The test
    split is used for reporting only: nothing is chosen from these numbers."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test' but got {split!r}")
    model = model_from_checkpoint(payload).to(device=device, memory_format=torch.channels_last)
    prepared = prepare_data(config.data, config.seed)
    tc = config.train
    data = build_batches(prepared, config.data.augment, device, tc.batch_size, tc.eval_batch_size, seed=0,
                         channels_last=True)
    logits = collect_exit_logits(model, data.test if split == "test" else data.val,
                                 autocast_dtype(tc.precision, device))
    return logits, exit_costs(model, (data.channels, data.input_size, data.input_size))


def evaluate_checkpoint(payload: dict, config: StudyConfig, split: str, device: torch.device,
                        thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """Exit metrics of a saved model on a split at `thresholds` (default: those it was trained for)."""
    meta = payload["metadata"]
    logits, costs = checkpoint_logits(payload, config, split, device)
    chosen = meta["thresholds"] if thresholds is None else thresholds
    return evaluate(logits.logits, logits.labels, chosen, meta["criterion"], costs.relative).metrics()


def model_from_checkpoint(payload: dict) -> EarlyExitNetwork:
    """Rebuild the network a checkpoint describes and load its weights (eval mode, CPU)."""
    from ee_search.config import ModelConfig

    meta = payload["metadata"]
    model = build_model(ModelConfig(**meta["model"]), meta["in_channels"], meta["num_classes"],
                        exit_loss_weights=meta["exit_loss_weights"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()
