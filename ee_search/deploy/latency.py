"""CPU latency of the exported program against full-depth inference of the same network, for card.json."""

from __future__ import annotations

import statistics
import time

import torch

LATENCY_BATCHES = (1, 256)


def latency(program, baseline, images: torch.Tensor) -> dict:
    """Wall time per call, early-exit program vs full depth, on validation images.

    The two are called alternately (A B, B A, ...) after a warm-up, and the speedup is the median of
    the per-pair ratios: on a shared machine the speed drifts, and timing one side after the other
    would put that drift into the ratio."""
    out = {}
    for batch in LATENCY_BATCHES:
        x = images[:batch]
        reps = 50 if batch == 1 else 10
        early, full = _paired_ms(lambda: program(x), lambda: baseline(x), reps)
        ratios = [f / e for e, f in zip(early, full)]
        out[f"batch_{batch}"] = {
            "early_exit_ms": statistics.median(early), "full_depth_ms": statistics.median(full),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "repeats": reps, "early_exit_ms_all": early, "full_depth_ms_all": full,  # the pairs, in order
        }
    out["torch_threads"] = torch.get_num_threads()
    return out


def _paired_ms(a, b, reps: int) -> tuple[list[float], list[float]]:
    def once(call) -> float:
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1000.0

    with torch.no_grad():
        for _ in range(3):
            a()
            b()
        times_a, times_b = [], []
        for i in range(reps):
            if i % 2 == 0:
                times_a.append(once(a))
                times_b.append(once(b))
            else:
                times_b.append(once(b))
                times_a.append(once(a))
    return times_a, times_b
