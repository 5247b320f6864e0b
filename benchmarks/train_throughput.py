"""Training throughput: the seed's pipeline vs ee-search's trainer, side by side in one run.

Same model (ee_resnet width 64, the size of the seed's MyResNet), same data size (73,257 SVHN-shaped
synthetic house numbers, 28x28 crops; `--quick` uses fewer, recorded in the JSON), same batch (256):

(a) seed-style: a torchvision Dataset that makes a PIL image per sample, RandomCrop(28) +
    RandomRotation(30) + ToTensor + Normalize, a DataLoader (the seed's settings: shuffle, no worker
    processes, pinned memory on CUDA), fp32, NCHW, `.item()` on every batch;
(b) ee-search's Trainer: uint8 data resident on the device, batched crop/rotation/normalise,
    channels_last, bf16 autocast on CUDA, metrics read once per epoch.

Reports epoch seconds, images/s and MFU for both, speedup_vs_seed_pipeline = a / b, and
trial_overhead_ratio = a full ee-search trial per epoch (Optuna + MLflow + checkpoint + exit
evaluation + curve files) / the bare trainer per epoch (same epochs, same validation).

    python benchmarks/train_throughput.py --json benchmarks/results/train-throughput-cpu.json
    python benchmarks/train_throughput.py --quick --json /tmp/throughput.json   # < 5 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets.vision import VisionDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gemm_gflops, peak_flops, resolve, sync, write_json

from ee_search.config import (
    StudyConfig,
)
from ee_search.data import build_batches, prepare_data
from ee_search.data.sources import IMAGENET_MEAN, IMAGENET_STD
from ee_search.exits import training_flops_per_image
from ee_search.experiment import autocast_dtype
from ee_search.models import build_model
from ee_search.train import EarlyStopping, ExitPolicy, Trainer, build_optimizer

SVHN_TRAIN = 73257


class SeedStyleDataset(VisionDataset):
    """What torchvision.datasets.SVHN does per item: uint8 CHW -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        super().__init__(root=None, transform=transform)
        self.data, self.labels = images, labels

    def __getitem__(self, index: int):
        img = Image.fromarray(np.transpose(self.data[index], (1, 2, 0)))
        return self.transform(img), int(self.labels[index])

    def __len__(self) -> int:
        return len(self.labels)


def study_config(n_train: int, epochs: int, root: Path) -> StudyConfig:
    return StudyConfig.model_validate({
        "name": "throughput", "seed": 0,
        "data": {"dataset": "synthetic_svhn", "root": str(root), "val_fraction": 0.1,
                 "augment": {"crop": 28, "rotation": 30},
                 # the train split after carving 10% validation is n_train
                 "synthetic": {"train_size": round(n_train / 0.9), "test_size": 256}},
        "model": {"name": "ee_resnet", "width": 64},
        "train": {"max_epochs": epochs, "lr": 0.02, "momentum": 0.9, "batch_size": 256,
                  "early_stopping": {"patience": 1000, "tol": 0.0}},
        "exits": {"thresholds": [0.9, 0.9]},
        "search": {"n_trials": 1, "pruner": {"type": "none"}, "sampler": {"type": "random", "seed": 0}},
    })


def seed_pipeline_epoch(prepared, device: torch.device, warmup_batches: int) -> float:
    transform = T.Compose([T.RandomCrop(28), T.RandomRotation(30), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    loader = DataLoader(SeedStyleDataset(prepared.train.images, prepared.train.labels, transform),
                        batch_size=256, shuffle=True, drop_last=False, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = build_model(study_config(256, 1, Path(".")).model, 3, 10).to(device)  # NCHW, fp32
    opt = build_optimizer(model.parameters(), "sgd", 0.02, 0.9, 5e-4)

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = model.exit_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()  # the seed synchronised on every batch

    batches = iter(loader)
    for _ in range(warmup_batches):
        step(*next(batches))
    sync(device)
    start = time.perf_counter()
    for x, y in loader:
        step(x, y)
    sync(device)
    return time.perf_counter() - start


def ee_trainer(prepared, config: StudyConfig, device: torch.device, val_batches=None) -> Trainer:
    tc = config.train
    data = build_batches(prepared, config.data.augment, device, tc.batch_size, tc.eval_batch_size, seed=0,
                         channels_last=True)
    torch.manual_seed(0)
    model = build_model(config.model, 3, 10).to(device=device, memory_format=torch.channels_last)
    opt = build_optimizer(model.parameters(), "sgd", tc.lr, tc.momentum, tc.weight_decay)
    return Trainer(model, opt, data.train, val_batches if val_batches is not None else data.val,
                   max_epochs=tc.max_epochs, policy=ExitPolicy((0.9, 0.9), "max_softmax"),
                   callbacks=[EarlyStopping("val_loss", 1000, 0.0)],
                   autocast_dtype=autocast_dtype(tc.precision, device), compile_model=tc.compile)


def ee_pipeline_epoch(prepared, config, device: torch.device, warmup_batches: int) -> float:
    trainer = ee_trainer(prepared, config, device)
    # Warm up on a short prefix of batches (cudnn autotuning, allocator), then time a full epoch.
    warm = list(zip(range(warmup_batches), trainer.train_batches))
    trainer.train_batches, full = [b for _, b in warm], trainer.train_batches
    trainer.train_epoch()
    trainer.train_batches = full
    sync(device)
    start = time.perf_counter()
    trainer.train_epoch()
    sync(device)
    return time.perf_counter() - start


def trial_overhead(prepared, config: StudyConfig, device: torch.device, workdir: Path, pairs: int = 2) -> dict:
    """A full one-trial study per epoch vs the bare Trainer per epoch (same epochs, same validation).

    Two views. Across runs: bare and trial runs alternate (bare, trial, bare, trial), and the ratio
    compares medians over all their epochs; on a shared VM identical runs differ by ~10%, so this one
    is only as good as that noise. Within the trial: its wall time against the epoch_seconds it logged
    itself, which isolates everything spent outside the epochs (set-up, FLOP count, sweep, plots,
    MLflow, checkpoint) without any run-to-run noise."""
    import optuna
    import yaml
    from mlflow import MlflowClient

    from ee_search.config import load_study_file
    from ee_search.search.study import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bare_epochs, trial_epochs, outside, inside = [], [], [], []
    for i in range(pairs):
        trainer = ee_trainer(prepared, config, device)
        bare_epochs += [h["epoch_seconds"] for h in trainer.fit().history]

        raw = config.model_dump(mode="json")
        raw["name"] = f"throughput-{i}"
        raw["search"]["storage"] = f"sqlite:///{workdir}/optuna.db"
        raw["tracking"]["uri"] = f"sqlite:///{workdir}/mlflow.db"
        raw["device"] = str(device)
        path = workdir / f"study-{i}.yaml"
        path.write_text(yaml.safe_dump(raw))
        trial = run_study(load_study_file(path), device, 1, None).study.trials[0]
        assert trial.state.name == "COMPLETE", trial.user_attrs
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        logged = [m.value for m in MlflowClient(raw["tracking"]["uri"]).get_metric_history(
            trial.user_attrs["mlflow_run_id"], "epoch_seconds")]
        extra = wall - sum(logged)
        outside.append(extra)
        inside.append(sum(logged))
        trial_epochs += [e + extra / len(logged) for e in logged]  # the trial's fixed cost spread over its epochs
    bare_s, trial_s = statistics.median(bare_epochs), statistics.median(trial_epochs)
    return {
        "epochs": config.train.max_epochs,
        "pairs": pairs,
        "bare_trainer_epoch_seconds": bare_s,
        "trial_epoch_seconds": trial_s,
        "bare_trainer_epoch_seconds_all": bare_epochs,
        "trial_epoch_seconds_all": trial_epochs,
        "epoch_time_spread_between_identical_runs": max(bare_epochs) / min(bare_epochs),
        "trial_overhead_ratio": trial_s / bare_s,
        "trial_seconds_outside_epochs": statistics.median(outside),
        "trial_overhead_ratio_within_run": statistics.median((i + o) / i for i, o in zip(inside, outside)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=None, help="training samples (default 73,257; quick 1,280)")
    parser.add_argument("--overhead-epochs", type=int, default=None)
    args = parser.parse_args()
    device = resolve(args.device)
    n = args.samples or (1280 if args.quick else SVHN_TRAIN)
    epochs = args.overhead_epochs or 3
    warmup = 2 if args.quick else 5

    with tempfile.TemporaryDirectory(prefix="ee-search-bench-throughput-") as tmp:
        config = study_config(n, epochs, Path(tmp) / "data")
        prepared = prepare_data(config.data, config.seed)
        n_train = len(prepared.train)
        flops = training_flops_per_image(build_model(config.model, 3, 10), (3, 28, 28))
        peak, peak_note = peak_flops(device)
        seed_s = seed_pipeline_epoch(prepared, device, warmup)
        ours_s = ee_pipeline_epoch(prepared, config, device, warmup)
        overhead = trial_overhead(prepared, config, device, Path(tmp))

    def pipeline(seconds: float, images: int) -> dict:
        rate = images / seconds
        return {"epoch_seconds": seconds, "images_per_second": rate, "achieved_gflops": flops * rate / 1e9,
                "mfu": flops * rate / peak}

    ee_images = (n_train // 256) * 256  # the trainer drops the ragged last batch
    result = {
        "model": "ee_resnet width 64 (MyResNet), 3 exits, loss over all exits",
        "samples": n_train,
        "samples_note": "73,257 = SVHN train" if n_train >= SVHN_TRAIN * 0.99 else f"--quick/--samples: {n_train} of SVHN's 73,257",
        "batch_size": 256,
        "crop": 28,
        "training_flops_per_image": flops,
        "peak_flops": peak,
        "peak_note": peak_note,
        "gemm_gflops_reference": gemm_gflops(device),
        "seed_pipeline": pipeline(seed_s, n_train) | {"settings": "PIL RandomCrop+RandomRotation+Normalize, DataLoader num_workers=0, fp32 NCHW, .item() per batch"},
        "ee_search": pipeline(ours_s, ee_images) | {"settings": "device-resident uint8, batched augmentation, channels_last, " + ("bf16 autocast" if device.type == "cuda" else "fp32")},
        "speedup_vs_seed_pipeline": (seed_s / n_train) / (ours_s / ee_images),
        **overhead,
    }
    goals = {"speedup_vs_seed_pipeline_at_least": 8.0 if device.type == "cuda" else 1.0,
             "trial_overhead_ratio_at_most": 1.15}
    if device.type == "cuda":
        goals |= {"epoch_seconds_at_most": 0.6, "mfu_at_least": 0.15}
    met = {
        "speedup": result["speedup_vs_seed_pipeline"] >= goals["speedup_vs_seed_pipeline_at_least"],
        "overhead": result["trial_overhead_ratio"] <= goals["trial_overhead_ratio_at_most"],
    }
    if device.type == "cuda":
        met |= {"epoch_seconds": ours_s * SVHN_TRAIN / ee_images <= 0.6, "mfu": result["ee_search"]["mfu"] >= 0.15}
    result["goals"] = goals | {"met": met}
    write_json(args.json, "train_throughput", device, args.quick, result)
    for key in ("samples", "seed_pipeline", "ee_search", "speedup_vs_seed_pipeline", "trial_overhead_ratio", "goals"):
        print(f"{key}: {result[key]}")


if __name__ == "__main__":
    main()
