"""Cost of a trial's operating points: every per-exit threshold setting of an SVHN-size validation
split (7,326 samples, 4 exits, 10 classes) reduced to its front, on cached logits.

Issue goal: at most 2 s per trial on the project's 2-core CPU. The two criteria are timed in
alternation (A B A B ...) after a warm-up, `--repeats` times each; the JSON holds the median and the
min-max. The per-setting path (`evaluate` once per setting) is timed on a sample of settings and
extrapolated, to show what the histogram method saves.

    python benchmarks/operating_points.py --json benchmarks/results/operating-points-cpu.json
    python benchmarks/operating_points.py --device cuda --json benchmarks/results/operating-points-<gpu>.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, resolve, sync, write_json

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=7326)
    parser.add_argument("--exits", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = resolve(args.device)
    logits, labels = trained_like_logits(args.exits, args.samples, 10, device)
    costs = torch.linspace(0.15, 1.0, args.exits).tolist()
    criteria = ("max_softmax", "entropy")
    runs = {c: [] for c in criteria}
    points = {}
    for c in criteria:  # warm-up
        points[c] = operating_points(logits, labels, c, costs)
    for _ in range(args.repeats):
        for c in criteria:  # alternated
            sync(device)
            start = time.perf_counter()
            points[c] = operating_points(logits, labels, c, costs)
            sync(device)
            runs[c].append(time.perf_counter() - start)
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
        "seconds": {c: {"median": median(runs[c]), "min": min(runs[c]), "max": max(runs[c]), "runs": runs[c]}
                    for c in criteria},
        "front_points": {c: len(points[c]) for c in criteria},
        "curve_hypervolume": {c: curve_hypervolume(points[c]) for c in criteria},
        "one_setting_at_a_time_seconds_estimated": per_setting * settings,
        "goal_seconds": 2.0,
        # Other work on the machine inflates the times; the load average says how much there was.
        "load_average_1_5_15_min": list(os.getloadavg()),
    }
    for c in criteria:
        s = result["seconds"][c]
        print(f"{c}: median {s['median']:.3f} s (min {s['min']:.3f}, max {s['max']:.3f}) for {settings:,} settings, "
              f"{len(points[c])} front points")
    print(f"evaluate() one setting at a time: ~{per_setting * settings:,.0f} s for the same settings")
    if args.json:
        write_json(args.json, "operating_points", device, False, result)


if __name__ == "__main__":
    main()
