"""One configured fit, without Optuna or MLflow: data -> model -> trainer -> exits.

`build_fit` is the one place a fit is wired: the seeded model, the optimizer, the exit policy and
the callbacks in `standard_order` (the stopper among them: callers pass recorders and a pruning
callback, never a stopper). `train_network` runs that fit and evaluates the kept network's exits.
The objective wraps it with a trial and a tracked run; benchmarks and tests call them bare.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ee_search.checkpoints import checkpoint_metadata
from ee_search.config import StudyConfig, TrainConfig
from ee_search.data import DataBundle, PreparedData, build_batches, prepare_data
from ee_search.device import autocast_dtype
from ee_search.exits import (
    ExitCosts,
    ExitLogits,
    ExitOutcome,
    ExitPolicy,
    OperatingPoint,
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
    FitResult,
    LastCheckpoint,
    LearningRateSchedule,
    ResumeSpec,
    Trainer,
    WeightAveraging,
    build_optimizer,
    standard_order,
)

_INIT_LOCK = threading.Lock()


@dataclass
class Fit:
    """A fit ready to run (`trainer.fit()`), and the parts a caller reads afterwards."""

    trainer: Trainer
    data: DataBundle
    policy: ExitPolicy
    stopper: EarlyStopping
    best: BestCheckpoint
    averaging: WeightAveraging | None
    last: LastCheckpoint | None


@dataclass
class TrainedNetwork:
    fit: FitResult
    model: EarlyExitNetwork  # the kept model: best (averaged) weights, eval mode
    data: DataBundle
    costs: ExitCosts
    best_epoch: int | None
    val_logits: ExitLogits | None  # of the best epoch: what the kept model produces on val
    outcome: ExitOutcome | None  # at the trial's thresholds; None if no epoch ever counted
    curve: list[dict[str, float]]  # one threshold shared by every side exit, swept over its range
    points: list[OperatingPoint]  # the network's own front over per-exit thresholds (docs/design.md §4)
    checkpoint: Path | None

    @property
    def metrics(self) -> dict[str, float]:
        if self.outcome is None:
            return {}
        return self.outcome.metrics() | {"curve_hypervolume": curve_hypervolume(self.points)}


def build_fit(
    config: StudyConfig,
    *,
    device: torch.device,
    seed: int,
    prepared: PreparedData | None = None,
    recorders: Sequence[Callback] = (),
    pruning: Callback | None = None,
    checkpoint_path: str | Path | None = None,
    on_best_saved: Callable[[Path], None] | None = None,
    resume: ResumeSpec | None = None,
    channels_last: bool = True,
) -> Fit:
    """The fit `config` describes at `seed`. `prepared`: the study's data split, prepared once per
    trial by the caller (prepared here if not given); `on_best_saved` publishes best.pt each time it
    improves; `resume` writes last.pt and, with a state, continues from it."""
    prepared = prepared if prepared is not None else prepare_data(config.data, config.seed)
    tc = config.train
    data = build_batches(prepared, config.data.augment, device, tc.batch_size, tc.eval_batch_size,
                         seed, channels_last=channels_last)
    model = _seeded_model(config, data, device, seed, channels_last)
    optimizer = build_optimizer(model.parameters(), tc.optimizer, tc.lr, tc.momentum, tc.weight_decay, tc.alpha)
    es = tc.early_stopping
    stopper = EarlyStopping(es.monitor, es.patience, es.tol)
    policy = ExitPolicy(tuple(config.exits.thresholds), config.exits.criterion)
    best = BestCheckpoint(checkpoint_path, metadata=checkpoint_metadata(config, data), on_saved=on_best_saved)
    averaging = _averaging(tc)
    last = LastCheckpoint(resume) if resume is not None else None
    trainer = Trainer(
        model,
        optimizer,
        data.train,
        data.val,
        max_epochs=tc.max_epochs,
        policy=policy,
        callbacks=standard_order(averaging, stopper, best, recorders, pruning, last, _lr_schedule(tc)),
        autocast_dtype=autocast_dtype(tc.precision, device),
        compile_model=tc.compile,
    )
    return Fit(trainer, data, policy, stopper, best, averaging, last)


def _seeded_model(config: StudyConfig, data: DataBundle, device: torch.device, seed: int,
                  channels_last: bool) -> EarlyExitNetwork:
    # Threads (search.n_jobs) share torch's global RNG: the initial weights are drawn under a lock on
    # a forked RNG, so each trial's are a function of its seed alone. The global RNG is then seeded
    # for what draws from it during training (dropout); last.pt saves its state.
    with _INIT_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model(config.model, data.channels, data.num_classes, exit_loss_weights=config.loss_weights)
    torch.manual_seed(seed)
    # channels_last on every device: on this project's 2-core CPU it trains ee_resnet ~5x faster.
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device=device, memory_format=layout)


def _lr_schedule(tc: TrainConfig) -> LearningRateSchedule | None:
    schedule = tc.lr_schedule
    if schedule.warmup_epochs == 0 and schedule.decay == "none":
        return None  # a constant lr: nothing to step, nothing filed in last.pt
    return LearningRateSchedule(schedule.warmup_epochs, schedule.warmup_start_factor, schedule.decay,
                                schedule.min_factor)


def _averaging(tc: TrainConfig) -> WeightAveraging | None:
    avg = tc.averaging
    if avg.method == "none":
        return None
    return WeightAveraging(avg.method, avg.decay, avg.update_every, avg.swa_start_epoch, avg.warmup)


def train_network(config: StudyConfig, *, device: torch.device, seed: int, **fit_options) -> TrainedNetwork:
    """Build the fit (`build_fit`'s options), run it, and evaluate the kept network's exits."""
    # Each trial queues its kernels on its own CUDA stream, so trials sharing a GPU (search.n_jobs)
    # can overlap instead of serialising on the default stream.
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    try:
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            built = build_fit(config, device=device, seed=seed, **fit_options)
            return _evaluated(built, built.trainer.fit(), config)
    finally:
        if stream is not None:
            stream.synchronize()  # results (or a pruned trial's checkpoint) are read on other streams next


def _evaluated(built: Fit, fit: FitResult, config: StudyConfig) -> TrainedNetwork:
    """The kept network's costs, and its exits judged on the best epoch's validation logits."""
    kept = built.trainer.eval_model
    kept.eval()
    data, policy = built.data, built.policy
    costs = exit_costs(kept, (data.channels, data.input_size, data.input_size))
    logits = built.best.best_val_logits
    outcome, curve, points = None, [], []
    if logits is not None:
        outcome = evaluate(logits.logits, logits.labels, policy.thresholds, policy.criterion, costs.relative)
        grid = threshold_grid(policy.criterion, data.num_classes, config.exits.sweep_points)
        curve = tradeoff_curve(logits.logits, logits.labels, policy.criterion, grid, costs.relative)
        points = operating_points(logits.logits, logits.labels, policy.criterion, costs.relative,
                                  include=policy.thresholds)
    return TrainedNetwork(fit=fit, model=kept, data=data, costs=costs, best_epoch=built.best.best_epoch,
                          val_logits=logits, outcome=outcome, curve=curve, points=points,
                          checkpoint=built.best.path if built.best.written else None)
