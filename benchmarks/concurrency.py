"""Several trials sharing one GPU: aggregate training images/s with 1, 2 and 4 concurrent trials.

Each trial is what `search.n_jobs` runs: a thread with its own model, optimizer and CUDA stream,
training on the shared device-resident dataset (the same code path as a study's trials). Every trial
trains the same number of batches of 128; aggregate images/s = all images / wall time. Small models
leave a big GPU idle between kernel launches; concurrent trials fill those gaps.

The groups (1, 2, 4 trials) are built once, warmed up once (cudnn autotuning, allocator, compile),
then timed in rotated order (1 2 4, 2 4 1, 4 1 2, ...) over --repeats repeats; images/s are
median/min/max over repeats, and scaling_vs_one is the median of per-repeat ratios to the 1-trial
group timed in the same repeat.

    python benchmarks/concurrency.py --json benchmarks/results/concurrency-h100.json
    python benchmarks/concurrency.py --device cpu --quick --json /tmp/conc.json   # smoke run only
Goal (H100/H200): 4 trials >= 2x the aggregate images/s of 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Take, alternate, paired_ratios, resolve, spread, write_json

from ee_search.config import StudyConfig
from ee_search.data import build_batches, prepare_data
from ee_search.experiment import autocast_dtype
from ee_search.models import build_model
from ee_search.train import ExitPolicy, Trainer, build_optimizer


def config(width: int, n_train: int, root: Path, compile_model: bool) -> StudyConfig:
    return StudyConfig.model_validate({
        "name": "concurrency", "seed": 0,
        "data": {"dataset": "synthetic_svhn", "root": str(root), "val_fraction": 0.1,
                 "augment": {"crop": 28, "rotation": 30},
                 "synthetic": {"train_size": round(n_train / 0.9), "test_size": 256}},
        "model": {"name": "ee_resnet", "width": width},
        "train": {"batch_size": 128, "lr": 0.02, "compile": compile_model},
        "exits": {"thresholds": [0.9, 0.9]},
    })


def trial_group(n: int, prepared, cfg: StudyConfig, device: torch.device, batches_per_trial: int):
    """n trials as `search.n_jobs` runs them; one call trains all n at once for batches_per_trial batches
    each (in threads, one CUDA stream per trial) and returns when the last is done."""
    trainers, streams = [], []
    for i in range(n):
        data = build_batches(prepared, cfg.data.augment, device, 128, 1024, seed=i, channels_last=True)
        torch.manual_seed(i)
        model = build_model(cfg.model, 3, 10).to(device=device, memory_format=torch.channels_last)
        opt = build_optimizer(model.parameters(), "sgd", 0.02, 0.9, 5e-4)
        trainers.append(Trainer(model, opt, Take(data.train, batches_per_trial), [], max_epochs=1, policy=ExitPolicy((0.9, 0.9), "max_softmax"),
                                autocast_dtype=autocast_dtype("auto", device), compile_model=cfg.train.compile))
        streams.append(torch.cuda.Stream(device) if device.type == "cuda" else None)

    def work(i: int) -> None:
        with torch.cuda.stream(streams[i]) if streams[i] is not None else nullcontext():
            trainers[i].train_epoch()
            if streams[i] is not None:
                streams[i].synchronize()

    def run() -> None:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batches", type=int, default=None, help="batches each trial trains (default 200, quick 10)")
    parser.add_argument("--trials", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per group, after one warm-up")
    args = parser.parse_args()
    device = resolve(args.device)
    batches = args.batches or (10 if args.quick else 200)
    with tempfile.TemporaryDirectory(prefix="ee-search-bench-conc-") as tmp:
        cfg = config(args.width, batches * 128, Path(tmp), args.compile)
        prepared = prepare_data(cfg.data, cfg.seed)
        groups = {str(n): trial_group(n, prepared, cfg, device, batches) for n in args.trials}
        timing = alternate(groups, device, repeats=args.repeats, warmup=1)
    rates = {int(k): [int(k) * batches * 128 / s for s in v] for k, v in timing["seconds"].items()}
    base = args.trials[0]
    result = {
        "model": f"ee_resnet width {args.width}",
        "batch_size": 128,
        "batches_per_trial": batches,
        "mechanism": "threads (search.n_jobs), one CUDA stream per trial, shared device-resident data",
        "repeats": args.repeats,
        "order": timing["order"],
        "aggregate_images_per_second": {str(n): spread(r)["median"] for n, r in rates.items()},
        "aggregate_images_per_second_spread": {str(n): spread(r) for n, r in rates.items()},
        # per repeat, rate of n trials / rate of the first group in the same repeat
        "scaling_vs_one": {str(n): paired_ratios(r, rates[base])["median"] for n, r in rates.items()},
        "scaling_vs_one_spread": {str(n): paired_ratios(r, rates[base]) for n, r in rates.items()},
    }
    if device.type == "cuda" and 4 in rates and 1 in rates:
        four = paired_ratios(rates[4], rates[1])["median"]
        result["goal"] = {"four_over_one_at_least": 2.0, "met": four >= 2.0}
    elif device.type != "cuda":
        result["note"] = "CPU smoke run of the GPU benchmark's code path: the goal (4 trials >= 2x one) is about GPUs"
    write_json(args.json, "concurrency", device, args.quick, result)
    print(result)


if __name__ == "__main__":
    main()
