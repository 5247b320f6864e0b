"""Several trials sharing one GPU: aggregate training images/s with 1, 2 and 4 concurrent trials.

Each trial is what `search.n_jobs` runs: a thread with its own model, optimizer and CUDA stream,
training on the shared device-resident dataset (the same code path as a study's trials). Every trial
trains the same number of batches of 128 (16 with --tiny); aggregate images/s = all images / wall time. Small models
leave a big GPU idle between kernel launches; concurrent trials fill those gaps.

The groups (1, 2, 4 trials) are built once, warmed up once (cudnn autotuning, allocator, compile),
then timed in rotated order (1 2 4, 2 4 1, 4 1 2, ...) over --repeats repeats; images/s are
median/min/max over repeats, and scaling_vs_one is the median of per-repeat ratios to the 1-trial
group timed in the same repeat.

    python benchmarks/concurrency.py --json benchmarks/results/concurrency-h100.json
    python benchmarks/concurrency.py --device cpu --quick --json /tmp/conc.json   # smoke run only
    python benchmarks/concurrency.py --device cpu --tiny --json /tmp/conc.json    # seconds: checks the code path
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
from ee_search.data import prepare_data
from ee_search.fit import build_fit


def config(width: int, n_train: int, root: Path, compile_model: bool, batch: int = 128) -> StudyConfig:
    return StudyConfig.model_validate({
        "name": "concurrency", "seed": 0,
        "data": {"dataset": "synthetic_svhn", "root": str(root), "val_fraction": 0.1,
                 "augment": {"crop": 28, "rotation": 30},
                 # at least 200 images: a --tiny run still has every class in its validation split
                 "synthetic": {"train_size": max(round(n_train / 0.9), 200), "test_size": 256}},
        "model": {"name": "ee_resnet", "width": width},
        "train": {"batch_size": batch, "eval_batch_size": 1024, "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4,
                  "optimizer": "sgd", "compile": compile_model},
        "exits": {"thresholds": [0.9, 0.9]},
    })


def trial_group(n: int, prepared, cfg: StudyConfig, device: torch.device, batches_per_trial: int):
    """n trials as `search.n_jobs` runs them; one call trains all n at once for batches_per_trial batches
    each (in threads, one CUDA stream per trial) and returns when the last is done."""
    trainers, streams = [], []
    for i in range(n):
        trainer = build_fit(cfg, device=device, seed=i, prepared=prepared).trainer  # as a trial builds it
        trainer.train_batches = Take(trainer.train_batches, batches_per_trial)
        trainers.append(trainer)
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke run of seconds: width 4, batch 16, 2 batches, 1 and 2 trials, 1 repeat")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batches", type=int, default=None, help="batches each trial trains (default 200, quick 10)")
    parser.add_argument("--trials", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per group, after one warm-up")
    args = parser.parse_args()
    args.batch = 128
    if args.tiny:
        args.quick = True
        args.width, args.batches, args.trials, args.repeats, args.batch = 4, 2, [1, 2], 1, 16
    return args


def main() -> None:
    args = parse_args()
    device = resolve(args.device)
    batches = args.batches or (10 if args.quick else 200)
    with tempfile.TemporaryDirectory(prefix="ee-search-bench-conc-") as tmp:
        cfg = config(args.width, batches * args.batch, Path(tmp), args.compile, args.batch)
        prepared = prepare_data(cfg.data, cfg.seed)
        groups = {str(n): trial_group(n, prepared, cfg, device, batches) for n in args.trials}
        timing = alternate(groups, device, repeats=args.repeats, warmup=1)
    rates = {int(k): [int(k) * batches * args.batch / s for s in v] for k, v in timing["seconds"].items()}
    base = args.trials[0]
    result = {
        "model": f"ee_resnet width {args.width}",
        "batch_size": args.batch,
        "batches_per_trial": batches,
        "tiny": args.tiny,
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
