"""What every benchmark shares: the device description, the peak used for MFU, reference rates measured
in the same run, alternating timing with medians and spreads, and the JSON record (device and date
included, as benchmarks/results/ wants).

Why alternate: on a shared VM identical runs differ by up to 1.45x, and the drift is slow (other
tenants, thermal, page cache). Timing A five times and then B five times puts that drift into the
A/B ratio; timing A B, B A, A B ... and dividing the A and B of the same repeat cancels most of it.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA's data sheets; the sheets print the sparse figure,
# these are half of it. Matched against torch.cuda.get_device_name in this order, so the specific
# names ("H100 PCIe", "H100 NVL") come before the generic one ("H100" is the SXM part, "H100 80GB HBM3").
GPU_BF16_DENSE_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),   # H100 SXM5
    ("H200 NVL", 835.0),
    ("H200", 989.0),   # H200 SXM: same compute as H100 SXM, more and faster memory
    ("A100", 312.0),
    ("L4", 121.0),
)


def resolve(device: str) -> torch.device:
    resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                            "cpu" if device == "auto" else device)
    if resolved.type == "cuda":
        # Every benchmark here runs fixed shapes, so cudnn's per-shape autotuning pays off after the
        # warm-up (which is also why each configuration gets an untimed warm-up call).
        torch.backends.cudnn.benchmark = True
    return resolved


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "torch": torch.__version__,
                "cuda": torch.version.cuda, "cudnn_benchmark": torch.backends.cudnn.benchmark,
                # fp32 rows use TF32 where these are on: say so next to their figures
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    return {"type": "cpu", "name": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_flops(device: torch.device, cpu_flops_per_cycle: int = 32) -> tuple[float, str]:
    """(FLOP/s, what it is) for MFU = achieved model FLOP/s / this peak.

    GPU: the data-sheet dense bf16 peak for the part, found by device name (fp32 rows are divided by it
    too: MFU is against the chip's best rate, not the precision a row happens to use). CPU: there is
    no data sheet figure to hand, so this is a *nominal* peak, cores x FLOP per cycle x the clock in
    /proc/cpuinfo; 32 FLOP/cycle is two 256-bit FMA pipes (AMD Zen 2-4, Intel client cores), pass 64
    for cores with two 512-bit FMA units. Boost clocks make the real peak higher and the MFU lower;
    compare against the conv/GEMM references measured in the same run for what torch can reach."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_BF16_DENSE_PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12, f"datasheet: {key} dense bf16 peak, {tflops:g} TFLOP/s ({name})"
        return float("nan"), f"datasheet: unknown GPU {name}, no peak on file (MFU is NaN)"
    mhz = _cpu_mhz()
    cores = torch.get_num_threads()
    rate = cores * cpu_flops_per_cycle * mhz * 1e6
    return rate, (f"nominal, not a datasheet figure: {cores} cores x {cpu_flops_per_cycle} fp32 FLOP/cycle "
                  f"x {mhz:.0f} MHz from /proc/cpuinfo = {rate / 1e9:.0f} GFLOP/s")


def _cpu_mhz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Wall seconds of each of `repeats` calls, after `warmup` untimed ones, device synchronised.
    For one configuration alone; to compare configurations use `alternate`."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def clock(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)  # nothing queued before the clock starts ...
    start = time.perf_counter()
    fn()
    sync(device)  # ... and everything fn queued is inside it
    return time.perf_counter() - start


def alternate(configs: dict[str, Callable[[], object]], device: torch.device, repeats: int = 5,
              warmup: int = 1, log: Callable[[str], None] | None = None) -> dict:
    """Time named zero-argument callables side by side.

    Each gets `warmup` untimed calls first (cudnn autotuning, torch.compile, allocator, caches), then
    repeat r runs all of them in an order rotated by r (A B C, B C A, C A B, ...), so none is always
    first or always follows the same neighbour. Returns {"seconds": {name: [per repeat]}, "warmup_seconds":
    {name: [...]}, "order": [[names of repeat r]]}; seconds[a][r] and seconds[b][r] were measured
    next to each other, which is what `paired_ratios` relies on."""
    names = list(configs)
    out: dict = {"seconds": {n: [] for n in names}, "warmup_seconds": {n: [] for n in names}, "order": []}
    for _ in range(warmup):
        for name in names:
            out["warmup_seconds"][name].append(clock(configs[name], device))
            if log:
                log(f"warm-up {name}: {out['warmup_seconds'][name][-1]:.2f} s")
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        out["order"].append(order)
        for name in order:
            out["seconds"][name].append(clock(configs[name], device))
            if log:
                log(f"repeat {r + 1}/{repeats} {name}: {out['seconds'][name][-1]:.3f} s")
    return out


def spread(values: Sequence[float | None]) -> dict:
    """Median, min and max of the values (None dropped), with the values themselves."""
    kept = [v for v in values if v is not None]
    if not kept:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(kept), "min": min(kept), "max": max(kept), "values": kept}


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> dict:
    """spread of a[r] / b[r]: one ratio per repeat, from two figures measured side by side."""
    if len(a) != len(b):
        raise ValueError(f"unpaired: {len(a)} vs {len(b)} values")
    return spread([x / y for x, y in zip(a, b)])


def median(values: list[float]) -> float:
    return statistics.median(values)


class Take:
    """The first n batches of each pass over `batches` (all of them if n is None), produced lazily so
    augmentation stays inside the timing: a fixed number of steps per repeat."""

    def __init__(self, batches: Iterable, n: int | None) -> None:
        self.batches, self.n = batches, n

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.batches), self.n)


# --- reference rates: what torch reaches on this device for the two op kinds training spends its time in


def gemm_reference(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096,
                   target_seconds: float = 0.2) -> tuple[Callable[[], None], float]:
    """(callable, FLOPs per call): an n x n x n matmul, looped so one call lasts ~target_seconds."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return _looped(lambda: torch.mm(a, b), 2 * n**3, device, target_seconds)


def conv_reference(device: torch.device, dtype: torch.dtype = torch.float32, batch: int = 256,
                   channels: int = 128, size: int = 14, target_seconds: float = 0.2) -> tuple[Callable[[], None], float]:
    """(callable, FLOPs per call): forward + backward (input and weight gradients) of a 3x3 conv,
    channels_last, at the shape of ee_resnet width 64's layer2 on 28x28 crops (128 channels at 14x14;
    layer3's 256 at 7x7 costs the same). FLOPs from torch.utils.flop_counter, as the model's are."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(
        device=device, dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype).to(
        memory_format=torch.channels_last).requires_grad_()

    def step() -> None:
        conv(x).sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    return _looped(step, counter.get_total_flops(), device, target_seconds)


def _looped(fn: Callable[[], object], flops: float, device: torch.device,
            target_seconds: float) -> tuple[Callable[[], None], float]:
    # A bf16 GEMM on an H100 takes ~0.2 ms: too short to time alone, so loop it to ~target_seconds.
    fn()
    once = clock(fn, device)
    iters = max(1, round(target_seconds / max(once, 1e-6)))

    def run() -> None:
        for _ in range(iters):
            fn()

    return run, flops * iters


def references(device: torch.device, dtypes: Sequence[torch.dtype]) -> dict[str, tuple[Callable[[], None], float]]:
    """{"gemm_fp32": (callable, FLOPs per call), "conv_fp32": ..., ...} for `alternate`."""
    out = {}
    for dtype in dtypes:
        tag = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
        out[f"gemm_{tag}"] = gemm_reference(device, dtype)
        out[f"conv_{tag}"] = conv_reference(device, dtype)
    return out


# `--tiny` runs of the benchmarks that search the quick start's data: a few hundred rendered images
# and one epoch, so the test suite's smoke run of every benchmark takes seconds, not minutes.
TINY_QUICKSTART_SETS = ("data.synthetic={train_size: 240, test_size: 120}", "train.max_epochs=1")


def add_tiny_argument(parser) -> None:
    parser.add_argument("--tiny", action="store_true",
                        help="seconds on a CPU: checks that the script runs and writes its JSON (the test suite's smoke run)")


def write_json(path: Path, benchmark: str, device: torch.device, quick: bool, payload: dict,
               tiny: bool = False) -> dict:
    record = {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(device),
        "quick": quick,
        "tiny": tiny,
        # The load average says how far to trust the timings: on a 2-core machine a test suite running
        # beside a benchmark halves its throughput, and the spreads widen accordingly.
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average_1_5_15min_at_write": [round(x, 2) for x in os.getloadavg()]},
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record
