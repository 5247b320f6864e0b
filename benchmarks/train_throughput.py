"""Training throughput: from the seed's pipeline to ee-search's trainer, one change per row, timed
side by side in one run.

Same model (ee_resnet width 64, the size of the seed's MyResNet), same batch (256), same images per
repeat (SVHN-shaped synthetic house numbers, 28x28 crops; every row drops the ragged last batch).
Rows, each adding one thing to the row before it:

  seed_pipeline                  a torchvision Dataset making a PIL image per sample, RandomCrop(28) +
                                 RandomRotation(30) + ToTensor + Normalize, a DataLoader (the seed's
                                 settings: shuffle, no worker processes, pinned memory on CUDA), fp32,
                                 NCHW, `.item()` on every batch;
  +device_resident_augmentation  ee-search's data path: uint8 data resident on the device, batched
                                 crop/rotation/normalise, the Trainer's loop (metrics read once per
                                 epoch instead of `.item()` per batch); still fp32 NCHW;
  +channels_last                 model and batches channels_last;
  +bf16                          bf16 autocast (CUDA only; recorded as skipped on CPU);
  +compile                       torch.compile of the forward (its compile time is reported apart).

The rows and two references (a fp32 GEMM and a channels_last 3x3 conv forward+backward; bf16 too on
CUDA) are warmed up once, then timed in rotated order over --repeats repeats (A B C, B C A, ...); a
repeat is one epoch, or --steps batches. Per row: epoch seconds, images/s, achieved GFLOP/s (training
FLOPs per image x images/s), its fraction of the GEMM and conv rates measured in the same repeat, MFU
against the datasheet peak (nominal on CPU: see _common.peak_flops), and speedups from per-repeat
ratios. `ee_search` is the row the trainer runs by default on this device (bf16 on CUDA, fp32 on CPU;
no compile); `speedup_vs_seed_pipeline` is the median of seed/ee_search per repeat.
trial_overhead_ratio = a full ee-search trial per epoch (Optuna + MLflow + checkpoint + exit
evaluation + curve files) / the bare trainer per epoch, over --overhead-pairs alternating pairs.

    python benchmarks/train_throughput.py --samples 10240 --json benchmarks/results/train-throughput-cpu-10k.json
    python benchmarks/train_throughput.py --quick --json benchmarks/results/train-throughput-cpu-quick.json
    python benchmarks/train_throughput.py --device cuda --json benchmarks/results/train-throughput-h100.json
    python benchmarks/train_throughput.py --device cpu --tiny --json /tmp/tt.json   # seconds: a smoke run only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets.vision import VisionDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (Take, alternate, clock, conv_reference, gemm_reference, paired_ratios, peak_flops, references,
                     resolve, spread, write_json)

from ee_search.config import StudyConfig
from ee_search.data import prepare_data
from ee_search.data.sources import IMAGENET_MEAN, IMAGENET_STD
from ee_search.exits import training_flops_per_image
from ee_search.fit import build_fit
from ee_search.models import build_model
from ee_search.records import TrialRecord
from ee_search.train import Trainer, build_optimizer

SVHN_TRAIN = 73257

# (row, what it adds, trainer options or None for the seed's own loop)
ROWS = (
    ("seed_pipeline", "PIL RandomCrop+RandomRotation+Normalize, DataLoader num_workers=0, fp32 NCHW, .item() per batch", None),
    ("+device_resident_augmentation", "device-resident uint8, batched augmentation, Trainer loop (one host sync per epoch); fp32 NCHW",
     {"channels_last": False, "bf16": False, "compile": False}),
    ("+channels_last", "model and batches channels_last", {"channels_last": True, "bf16": False, "compile": False}),
    ("+bf16", "bf16 autocast (BN and loss fp32)", {"channels_last": True, "bf16": True, "compile": False}),
    ("+compile", "torch.compile of the forward", {"channels_last": True, "bf16": None, "compile": True}),  # bf16 as the row before
)


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


def study_config(n_train: int, epochs: int, root: Path, batch: int, width: int = 64) -> StudyConfig:
    return StudyConfig.model_validate({
        "name": "throughput", "seed": 0,
        "data": {"dataset": "synthetic_svhn", "root": str(root), "val_fraction": 0.1,
                 "augment": {"crop": 28, "rotation": 30},
                 # the train split after carving 10% validation is n_train
                 "synthetic": {"train_size": round(n_train / 0.9), "test_size": 256}},
        "model": {"name": "ee_resnet", "width": width},
        "train": {"max_epochs": epochs, "lr": 0.02, "momentum": 0.9, "batch_size": batch,
                  "early_stopping": {"patience": 1000, "tol": 0.0}},
        "exits": {"thresholds": [0.9, 0.9]},
        "search": {"n_trials": 1, "pruner": {"type": "none"}, "sampler": {"type": "random", "seed": 0}},
    })


def seed_row(prepared, config: StudyConfig, device: torch.device, steps: int):
    """One call = `steps` batches of the seed's loop."""
    transform = T.Compose([T.RandomCrop(28), T.RandomRotation(30), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    # drop_last like the trainer, so every row trains the same images per repeat
    loader = DataLoader(SeedStyleDataset(prepared.train.images, prepared.train.labels, transform),
                        batch_size=config.train.batch_size, shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = build_model(config.model, 3, 10).to(device)  # NCHW, fp32
    opt = build_optimizer(model.parameters(), "sgd", 0.02, 0.9, 5e-4)

    def run() -> None:
        model.train()
        for x, y in Take(loader, steps):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = model.exit_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the seed synchronised on every batch

    return run


def trainer_row(prepared, config: StudyConfig, device: torch.device, steps: int, *, channels_last: bool,
                bf16: bool, compile: bool):
    """One call = `steps` batches of ee-search's Trainer with these settings."""
    train = {"precision": "bf16" if bf16 else "fp32", "compile": compile}
    variant = config.model_copy(update={"train": config.train.model_copy(update=train)})
    trainer = build_fit(variant, device=device, seed=0, prepared=prepared, channels_last=channels_last).trainer
    trainer.train_batches = Take(trainer.train_batches, steps)
    return trainer.train_epoch


def ee_trainer(prepared, config: StudyConfig, device: torch.device) -> Trainer:
    """The trainer as a trial builds it (defaults for this device), with validation, for fit()."""
    return build_fit(config, device=device, seed=0, prepared=prepared).trainer


def overhead_trial(config: StudyConfig, device: torch.device, workdir: Path, i: int) -> tuple[list[float], float, float]:
    """One one-trial study of `config`: its epochs with the time spent outside them spread evenly over
    them, that outside time, and the time inside the epochs (as the trial logged it)."""
    import yaml
    from mlflow import MlflowClient

    from ee_search.config import load_study_file
    from ee_search.search.study import run_study

    # Only what the study file set: a dumped default (data.image_size) can be refused on reload.
    raw = config.model_dump(mode="json", exclude_unset=True)
    raw["name"] = f"throughput-{i}"
    raw.setdefault("search", {})["storage"] = f"sqlite:///{workdir}/optuna.db"
    raw.setdefault("tracking", {})["uri"] = f"sqlite:///{workdir}/mlflow.db"
    raw["device"] = str(device)
    path = workdir / f"study-{i}.yaml"
    path.write_text(yaml.safe_dump(raw))
    t = run_study(load_study_file(path), device, 1, None).study.trials[0]
    assert t.state.name == "COMPLETE", t.user_attrs
    wall = (t.datetime_complete - t.datetime_start).total_seconds()
    logged = [m.value for m in MlflowClient(raw["tracking"]["uri"]).get_metric_history(
        TrialRecord.read(t).mlflow_run_id, "epoch_seconds")]
    extra = wall - sum(logged)
    return [e + extra / len(logged) for e in logged], extra, sum(logged)  # fixed cost spread over epochs


def trial_overhead(prepared, config: StudyConfig, device: torch.device, workdir: Path, pairs: int) -> dict:
    """A full one-trial study per epoch vs the bare Trainer per epoch (same epochs, same validation).

    Two views. Across runs: a bare and a trial run form a pair, run back to back in alternating order
    (bare first on even pairs, trial first on odd), and each pair gives one ratio of median epoch
    seconds. Within the trial: its wall time against the epoch_seconds it logged itself, which isolates
    everything spent outside the epochs (set-up, FLOP count, sweep, plots, MLflow, checkpoint) without
    any run-to-run noise."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def bare() -> list[float]:
        return [h["epoch_seconds"] for h in ee_trainer(prepared, config, device).fit().history]

    bare_all, trial_all, ratios, outside, within = [], [], [], [], []
    for i in range(pairs):
        first_bare = i % 2 == 0
        b = bare() if first_bare else None
        t_epochs, extra, inside = overhead_trial(config, device, workdir, i)
        b = b if first_bare else bare()
        print(f"overhead pair {i + 1}/{pairs} ({'bare, trial' if first_bare else 'trial, bare'}): "
              f"bare {statistics.median(b):.2f} s/epoch, trial {statistics.median(t_epochs):.2f} s/epoch", flush=True)
        bare_all.append(b)
        trial_all.append(t_epochs)
        ratios.append(statistics.median(t_epochs) / statistics.median(b))
        outside.append(extra)
        within.append((inside + extra) / inside)
    flat_bare = [e for run in bare_all for e in run]
    ratio = spread(ratios)
    return {
        "epochs": config.train.max_epochs,
        "pairs": pairs,
        "pair_order": ["bare, trial" if i % 2 == 0 else "trial, bare" for i in range(pairs)],
        "bare_trainer_epoch_seconds": statistics.median(flat_bare),
        "trial_epoch_seconds": statistics.median(e for run in trial_all for e in run),
        "bare_trainer_epoch_seconds_all": bare_all,
        "trial_epoch_seconds_all": trial_all,
        "epoch_time_spread_between_identical_runs": max(flat_bare) / min(flat_bare),
        "trial_overhead_ratio": ratio["median"],  # median of the per-pair ratios
        "trial_overhead_ratio_spread": ratio,
        "trial_seconds_outside_epochs": spread(outside),
        "trial_overhead_ratio_within_run": statistics.median(within),
        "trial_overhead_ratio_within_run_spread": spread(within),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="1,280 samples, 2 steps per repeat, 2-epoch overhead runs")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke run of seconds: width 4, 128 samples, batch 16, 1 step, 1 repeat, small "
                             "references, no compile, one 1-epoch overhead pair (figures mean nothing)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=None, help="training samples (default 73,257; quick 1,280)")
    parser.add_argument("--steps", type=int, default=None, help="batches per repeat (default: one epoch; quick 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row, after one warm-up")
    parser.add_argument("--batch-size", type=int, default=256, help="256 as the seed; smaller only for smoke runs")
    parser.add_argument("--no-compile", action="store_true", help="skip the +compile row (compiling is slow on CPU)")
    parser.add_argument("--overhead-epochs", type=int, default=None, help="epochs per overhead run (default 3; quick 2)")
    parser.add_argument("--overhead-pairs", type=int, default=None,
                        help="bare/trial pairs (default 5, tiny 1; 0: skip the measurement)")
    args = parser.parse_args()
    if args.tiny:
        args.quick = True
        args.samples, args.steps, args.repeats, args.batch_size = 128, 1, 1, 16
        args.no_compile, args.overhead_epochs = True, 1
    if args.overhead_pairs is None:
        args.overhead_pairs = 1 if args.tiny else 5
    return args


def timed_rows(prepared, config: StudyConfig, device: torch.device, steps: int, no_compile: bool, log) -> tuple:
    """The ablation's rows as callables, what each adds, whether each runs bf16, the rows skipped,
    and the +compile row's first (compiling) call in seconds."""
    cuda = device.type == "cuda"
    rows, settings, bf16_of, skipped, compile_first_call = {}, {}, {}, {}, None
    for name, what, opts in ROWS:
        if name == "+bf16" and not cuda:
            skipped[name] = "bf16 autocast is a CUDA row: ee-search trains fp32 on CPU"
            continue
        if name == "+compile" and no_compile:
            skipped[name] = "--no-compile"
            continue
        if opts is None:
            rows[name] = seed_row(prepared, config, device, steps)
            bf16_of[name] = False
        else:
            opts = opts | {"bf16": cuda if opts["bf16"] is None else opts["bf16"]}
            rows[name] = trainer_row(prepared, config, device, steps, **opts)
            bf16_of[name] = opts["bf16"]
        settings[name] = what
        if name == "+compile":
            try:  # compile outside the alternation, so a failure skips the row instead of the run
                compile_first_call = clock(rows[name], device)
                log(f"+compile first call (compiles): {compile_first_call:.1f} s")
            except Exception as error:  # noqa: BLE001 - any compiler failure means "no row", reported
                skipped[name] = f"torch.compile failed: {error!r}"[:500]
                del rows[name]
    return rows, settings, bf16_of, skipped, compile_first_call


def reference_rates(device: torch.device, tiny: bool) -> dict:
    """The GEMM and conv references (bf16 too on CUDA); tiny ones for a smoke run."""
    dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    if not tiny:
        return references(device, dtypes)
    return {"gemm_fp32": gemm_reference(device, torch.float32, n=256, target_seconds=0.01),
            "conv_fp32": conv_reference(device, torch.float32, batch=8, target_seconds=0.01)}


def ablation_table(timing: dict, refs: dict, rows: dict, settings: dict, bf16_of: dict, *, images: int,
                   flops: float, peak: float, per_epoch: int, steps: int) -> dict:
    """Per row: seconds, images/s, GFLOP/s, fractions of the references, MFU and speedups."""
    secs = timing["seconds"]
    ref_gflops = {k: [f / s / 1e9 for s in secs[f"reference_{k}"]] for k, (_, f) in refs.items()}
    names = list(rows)
    ablation = {}
    for i, name in enumerate(names):
        s = secs[name]
        rate = [images / x for x in s]
        gflops = [flops * r / 1e9 for r in rate]
        tag = "bf16" if bf16_of[name] else "fp32"
        ablation[name] = {
            "adds": settings[name],
            "repeat_seconds": spread(s),
            "epoch_seconds": spread([x * per_epoch / steps for x in s]),
            "images_per_second": spread(rate),
            "achieved_gflops": spread(gflops),
            f"fraction_of_gemm_{tag}_reference": spread([g / r for g, r in zip(gflops, ref_gflops[f"gemm_{tag}"])]),
            f"fraction_of_conv_{tag}_reference": spread([g / r for g, r in zip(gflops, ref_gflops[f"conv_{tag}"])]),
            "mfu": spread([g * 1e9 / peak for g in gflops]),
            "speedup_vs_previous_row": paired_ratios(secs[names[i - 1]], s) if i else None,
            "speedup_vs_seed_pipeline": paired_ratios(secs[names[0]], s),
            "warmup_seconds": timing["warmup_seconds"][name],
        }
    return ablation, {k: spread(v) for k, v in ref_gflops.items()}


def goals(result: dict, ee: dict, cuda: bool, per_epoch: int, batch: int) -> dict:
    speedup = result["speedup_vs_seed_pipeline"]
    wanted = {"speedup_vs_seed_pipeline_at_least": 8.0 if cuda else 1.0, "trial_overhead_ratio_at_most": 1.15}
    met = {"speedup": speedup >= wanted["speedup_vs_seed_pipeline_at_least"]}
    if "trial_overhead_ratio" in result:
        met["overhead"] = result["trial_overhead_ratio"] <= wanted["trial_overhead_ratio_at_most"]
    if cuda:
        wanted |= {"epoch_seconds_at_most": 0.6, "mfu_at_least": 0.15}
        met |= {"epoch_seconds": ee["epoch_seconds"]["median"] * SVHN_TRAIN / (per_epoch * batch) <= 0.6,
                "mfu": ee["mfu"]["median"] >= 0.15}
    return wanted | {"met": met}


def summary(ablation: dict, settings: dict, cuda: bool) -> dict:
    """The seed's row and ee-search's default row (channels_last, bf16 on CUDA only, no compile)."""
    ee_row = "+bf16" if cuda else "+channels_last"
    ee, seed = ablation[ee_row], ablation["seed_pipeline"]
    speedup = ee["speedup_vs_seed_pipeline"]
    return {
        "seed_pipeline": {"epoch_seconds": seed["epoch_seconds"]["median"], "images_per_second": seed["images_per_second"]["median"],
                          "achieved_gflops": seed["achieved_gflops"]["median"], "mfu": seed["mfu"]["median"], "settings": settings["seed_pipeline"]},
        "ee_search": {"row": ee_row, "epoch_seconds": ee["epoch_seconds"]["median"],
                      "images_per_second": ee["images_per_second"]["median"], "achieved_gflops": ee["achieved_gflops"]["median"],
                      "mfu": ee["mfu"]["median"],
                      "settings": "device-resident uint8, batched augmentation, channels_last, " + ("bf16 autocast" if cuda else "fp32")},
        "speedup_vs_seed_pipeline": speedup["median"],
        "speedup_vs_seed_pipeline_spread": speedup,
    }


def print_table(ablation: dict, result: dict) -> None:
    print(f"{'row':32} {'epoch s (min-max)':>24} {'img/s':>8} {'GFLOP/s':>8} {'conv ref':>8} {'MFU':>6} {'vs seed':>8}")
    for name, row in ablation.items():
        e, ref = row["epoch_seconds"], next(v for k, v in row.items() if k.startswith("fraction_of_conv"))
        print(f"{name:32} {e['median']:8.2f} ({e['min']:.2f}-{e['max']:.2f}) {row['images_per_second']['median']:8.1f} "
              f"{row['achieved_gflops']['median']:8.1f} {ref['median']:8.2f} {row['mfu']['median']:6.2f} "
              f"{row['speedup_vs_seed_pipeline']['median']:8.2f}")
    for key in ("references_gflops", "skipped_rows", "speedup_vs_seed_pipeline_spread", "trial_overhead_ratio", "goals"):
        if key in result:
            print(f"{key}: {result[key]}")


def main() -> None:
    args = parse_args()
    device = resolve(args.device)
    cuda = device.type == "cuda"
    n = args.samples or (1280 if args.quick else SVHN_TRAIN)
    batch = args.batch_size
    log = lambda line: print(line, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="ee-search-bench-throughput-") as tmp:
        config = study_config(n, args.overhead_epochs or (2 if args.quick else 3), Path(tmp) / "data", batch,
                              width=4 if args.tiny else 64)
        prepared = prepare_data(config.data, config.seed)
        n_train = len(prepared.train)
        per_epoch = n_train // batch
        steps = min(args.steps or (2 if args.quick else per_epoch), per_epoch)
        flops = training_flops_per_image(build_model(config.model, 3, 10), (3, 28, 28))
        peak, peak_note = peak_flops(device)
        rows, settings, bf16_of, skipped, compile_first_call = timed_rows(prepared, config, device, steps,
                                                                            args.no_compile, log)
        refs = reference_rates(device, args.tiny)
        timing = alternate(rows | {f"reference_{k}": fn for k, (fn, _) in refs.items()}, device,
                           repeats=args.repeats, warmup=1, log=log)
        overhead = trial_overhead(prepared, config, device, Path(tmp), args.overhead_pairs) if args.overhead_pairs else {}
    ablation, ref_gflops = ablation_table(timing, refs, rows, settings, bf16_of, images=steps * batch, flops=flops,
                                          peak=peak, per_epoch=per_epoch, steps=steps)
    if "+compile" in ablation:
        ablation["+compile"]["compile_first_call_seconds"] = compile_first_call
    result = {
        "model": f"ee_resnet width {config.model.width}{'' if args.tiny else ' (MyResNet)'}, 3 exits, loss over all exits",
        "samples": n_train,
        "samples_note": "73,257 = SVHN train" if n_train >= SVHN_TRAIN * 0.99 else f"--quick/--samples: {n_train} of SVHN's 73,257",
        "batch_size": batch, "crop": 28, "steps_per_repeat": steps, "steps_per_epoch": per_epoch,
        "images_per_repeat": steps * batch, "repeats": args.repeats, "tiny": args.tiny,
        "method": "one warm-up call per row and reference, then repeats in rotated order; figures are median/min/max "
                  "over repeats; ratios are per repeat between figures measured in the same repeat",
        "order": timing["order"], "training_flops_per_image": flops, "peak_flops": peak, "peak_note": peak_note,
        "references_gflops": ref_gflops,
        "references_note": "gemm: 4096^3 torch.mm; conv: 3x3 conv 128->128 ch at 14x14, batch 256, channels_last, "
                           "forward+backward, FLOPs by torch.utils.flop_counter; timed in the same repeats as the rows"
                           + (" (--tiny: gemm 256^3, conv batch 8)" if args.tiny else ""),
        "ablation": ablation, "skipped_rows": skipped, **summary(ablation, settings, cuda), **overhead,
    }
    result["goals"] = goals(result, ablation["+bf16" if cuda else "+channels_last"], cuda, per_epoch, batch)
    write_json(args.json, "train_throughput", device, args.quick, result)
    print_table(ablation, result)


if __name__ == "__main__":
    main()
