"""Cost of a trial's operating points: every per-exit threshold setting of an SVHN-size validation
split (7,326 samples, 4 exits, 10 classes) reduced to its front, on cached logits.

Goal: at most 2 s per trial on the project's 2-core CPU. The two criteria are timed in
alternation (A B A B ...) after a warm-up, `--repeats` times each; the JSON holds the median and the
min-max. The per-setting path (`evaluate` once per setting) is timed on a sample of settings and
extrapolated, to show what the histogram method saves.

    python benchmarks/operating_points.py --json benchmarks/results/operating-points-cpu.json
    python benchmarks/operating_points.py --device cuda --json benchmarks/results/operating-points-<gpu>.json
    python benchmarks/operating_points.py --tiny --json /tmp/op.json   # 400 samples, 3 exits: a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_tiny_argument, median, resolve, sync, write_json

from ee_search.exits import curve_hypervolume, evaluate, operating_points
from ee_search.exits.operating_points import DEFAULT_MAX_SETTINGS, _per_exit_count


def trained_like_logits(k_exits: int, n: int, classes: int, device: torch.device, seed: int = 0):
    """Logits shaped like a trained early-exit network's: later exits are sharper and more often
    right (exit 1 about 60% accurate, the final exit about 95%)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(k_exits, n, classes, generator=g) * torch.linspace(1.0, 2.0, k_exits).view(-1, 1, 1)
    logits[:, torch.arange(n), labels] += torch.linspace(1.5, 5.0, k_exits).view(-1, 1)
    return logits.to(device), labels.to(device)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=7326)
    parser.add_argument("--exits", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    add_tiny_argument(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.tiny:
        args.samples, args.exits, args.repeats = 400, 3, 2
    return args


def time_criteria(logits, labels, costs, repeats: int, device: torch.device) -> tuple[dict, dict]:
    """Seconds per call of `operating_points` for each criterion, alternated after a warm-up, and the
    points of the last call."""
    criteria = ("max_softmax", "entropy")
    runs = {c: [] for c in criteria}
    points = {c: operating_points(logits, labels, c, costs) for c in criteria}  # warm-up
    for _ in range(repeats):
        for c in criteria:  # alternated
            sync(device)
            start = time.perf_counter()
            points[c] = operating_points(logits, labels, c, costs)
            sync(device)
            runs[c].append(time.perf_counter() - start)
    return runs, points


def main() -> None:
    args = parse_args()
    device = resolve(args.device)
    logits, labels = trained_like_logits(args.exits, args.samples, 10, device)
    costs = torch.linspace(0.15, 1.0, args.exits).tolist()
    runs, points = time_criteria(logits, labels, costs, args.repeats, device)
    per_exit = _per_exit_count(args.exits - 1, args.samples, DEFAULT_MAX_SETTINGS)
    settings = per_exit ** (args.exits - 1)
    sample = 50
    start = time.perf_counter()
    for i in range(sample):
        evaluate(logits, labels, [0.5 + i / (2 * sample)] * (args.exits - 1), "max_softmax", costs)
    per_setting = (time.perf_counter() - start) / sample
    result = {
        "samples": args.samples, "exits": args.exits, "classes": 10,
        "candidates_per_side_exit": per_exit, "settings_per_trial": settings,
        "seconds": {c: {"median": median(r), "min": min(r), "max": max(r), "runs": r} for c, r in runs.items()},
        "front_points": {c: len(p) for c, p in points.items()},
        "curve_hypervolume": {c: curve_hypervolume(p) for c, p in points.items()},
        "one_setting_at_a_time_seconds_estimated": per_setting * settings,
        "goal_seconds": 2.0,
        # Other work on the machine inflates the times; the load average says how much there was.
        "load_average_1_5_15_min": list(os.getloadavg()),
    }
    for c, s in result["seconds"].items():
        print(f"{c}: median {s['median']:.3f} s (min {s['min']:.3f}, max {s['max']:.3f}) for {settings:,} settings, "
              f"{len(points[c])} front points")
    print(f"evaluate() one setting at a time: ~{per_setting * settings:,.0f} s for the same settings")
    if args.json:
        write_json(args.json, "operating_points", device, False, result, tiny=args.tiny)


if __name__ == "__main__":
    main()
