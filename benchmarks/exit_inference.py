"""Early-exit inference that skips work: FLOPs-predicted vs measured speedup.

ee_resnet (width 64, the seed's MyResNet) at batch 1024 on synthetic house numbers, with per-exit
thresholds picked on the batch so that about half the samples leave before the final exit. Three
paths, timed side by side in one run:

- full depth: the backbone plus the final head only (what you run without early exits);
- dense all exits: every stage and every head on every sample, then decide (the sweep's path);
- compacted: after each side exit the samples that leave are dropped (exits.predict_early_exit).

The three paths are warmed up once, then timed in rotated order (A B C, B C A, C A B, ...) over
--repeats repeats (default 10, quick 5); seconds are median/min/max over repeats.
flops_speedup = FLOPs(full depth) / mean FLOPs of the exits taken; measured_speedup = the median over
repeats of time(full depth) / time(compacted) within the same repeat (its min-max beside it);
outputs_match_dense: compacted predictions and exit indices == dense.

    python benchmarks/exit_inference.py --json benchmarks/results/exit-inference-cpu.json
    python benchmarks/exit_inference.py --quick --json /tmp/exit.json
    python benchmarks/exit_inference.py --tiny --json /tmp/exit.json    # width 8, batch 32: a smoke run
Goals: measured >= 0.7 x flops_speedup on CPU, >= 0.8 x on an H100/H200.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_tiny_argument, alternate, paired_ratios, resolve, spread, write_json

from ee_search.config import ModelConfig
from ee_search.data.augment import BatchTransform
from ee_search.data.sources import IMAGENET_MEAN, IMAGENET_STD
from ee_search.data.synthetic_svhn import render_house_numbers
from ee_search.exits import criterion_score, exit_costs, predict_dense, predict_early_exit
from ee_search.models import build_model


@torch.no_grad()
def full_depth(model, x):
    for stage in model.stages:
        x = stage(x)
    return model.heads[-1](x)


def half_early_thresholds(model, x, criterion: str, early_share: float = 0.5) -> list[float]:
    """Thresholds that let `early_share` of the batch leave, spread evenly over the side exits."""
    with torch.no_grad():
        scores = criterion_score(torch.stack([z.float() for z in model(x)]), criterion)
    k_side = model.num_exits - 1
    remaining = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
    thresholds = []
    for k in range(k_side):
        # Of those still in, let this exit take an equal slice of the early share.
        want = (early_share / k_side) / float(remaining.float().mean())
        s = scores[k][remaining]
        q = (1 - want) if criterion == "max_softmax" else want
        t = float(torch.quantile(s.float(), min(max(q, 0.0), 1.0)))
        thresholds.append(t)
        leave = scores[k] >= t if criterion == "max_softmax" else scores[k] <= t
        remaining &= ~leave
    return thresholds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="5 timing repeats instead of 10")
    add_tiny_argument(parser)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per path (default 10, quick 5)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--criterion", default="max_softmax", choices=["max_softmax", "entropy"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.width, args.repeats = 32, 8, args.repeats or 2
    args.repeats = args.repeats or (5 if args.quick else 10)
    return args


def model_and_batch(width: int, batch: int, device: torch.device):
    """ee_resnet at `width` (random weights, data-like BN statistics) and a normalised batch of
    synthetic house numbers, both on `device`, channels_last."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="ee_resnet", width=width), 3, 10)
    model = model.to(device=device, memory_format=torch.channels_last).eval()
    with torch.no_grad():  # data-like BN statistics so random-init exits differ in confidence
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    images, _ = render_house_numbers(batch, seed=0)
    store = torch.from_numpy(images.transpose(0, 2, 3, 1).copy()).to(device)
    transform = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 0.0, train=False, device=device, channels_last=True)
    return model, transform(store, torch.arange(batch, device=device))


def measure(model, x, args, device: torch.device) -> dict:
    """The three paths timed side by side, and what the compacted one decided against the dense one."""
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext())
    with autocast:
        thresholds = half_early_thresholds(model, x, args.criterion)
        compact = predict_early_exit(model, x, thresholds, args.criterion)
        dense_pred, dense_taken = predict_dense(model, x, thresholds, args.criterion)
        costs = exit_costs(model, (3, 28, 28))
        timing = alternate({
            "full_depth": lambda: full_depth(model, x),
            "dense_all_exits": lambda: model(x),
            "compacted": lambda: predict_early_exit(model, x, thresholds, args.criterion),
        }, device, repeats=args.repeats, warmup=1)
    taken = compact.exit_index
    share = [float((taken == k).float().mean()) for k in range(model.num_exits)]
    return {"thresholds": thresholds, "compact": compact, "costs": costs, "timing": timing, "share": share,
            "outputs_match_dense": bool(torch.equal(compact.prediction, dense_pred) and torch.equal(taken, dense_taken))}


def summarize(m: dict, args, device: torch.device) -> dict:
    t, costs, share = m["timing"]["seconds"], m["costs"], m["share"]
    mean_cost = sum(s * c for s, c in zip(share, costs.cumulative))
    flops_speedup = costs.full_network / mean_cost
    measured = paired_ratios(t["full_depth"], t["compacted"])
    vs_dense = paired_ratios(t["dense_all_exits"], t["compacted"])
    result = {
        "model": f"ee_resnet width {args.width}",
        "batch": args.batch,
        "criterion": args.criterion,
        "precision": args.precision,
        "thresholds": m["thresholds"],
        "exit_fractions": share,
        "early_share": 1 - share[-1],
        "survivors_per_stage": m["compact"].survivors,
        "flops_per_image": {"full_depth": costs.full_network, "per_exit_cumulative": costs.cumulative},
        "seconds": {k: spread(v)["median"] for k, v in t.items()},
        "seconds_spread": {k: spread(v) for k, v in t.items()},
        "order": m["timing"]["order"],
        "flops_speedup": flops_speedup,
        "measured_speedup": measured["median"],
        "measured_speedup_spread": measured,
        "measured_over_flops": measured["median"] / flops_speedup,
        "measured_over_flops_spread": {k: v / flops_speedup for k, v in measured.items() if k != "values"},
        "speedup_vs_dense_all_exits": vs_dense["median"],
        "speedup_vs_dense_all_exits_spread": vs_dense,
        "outputs_match_dense": m["outputs_match_dense"],
        "repeats": args.repeats,
    }
    goal = 0.8 if device.type == "cuda" else 0.7
    result["goal"] = {"measured_over_flops_at_least": goal, "met": result["measured_over_flops"] >= goal}
    return result


def main() -> None:
    args = parse_args()
    device = resolve(args.device)
    model, x = model_and_batch(args.width, args.batch, device)
    result = summarize(measure(model, x, args, device), args, device)
    record = write_json(args.json, "exit_inference", device, args.quick, result, tiny=args.tiny)
    for key in ("exit_fractions", "flops_speedup", "measured_speedup_spread", "measured_over_flops", "outputs_match_dense",
                "seconds_spread"):
        print(f"{key}: {record[key]}")


if __name__ == "__main__":
    main()
