"""What every benchmark shares: the device description, the peak used for MFU, careful timing, and the
JSON record (device and date included, as benchmarks/results/ wants)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

# Dense bf16 tensor-core peaks from NVIDIA's data sheets (SXM parts; sparsity not counted).
GPU_BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "RTX 2060": 51.6}


def resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "torch": torch.__version__,
                "cuda": torch.version.cuda}
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
    """(FLOP/s, how it was obtained) for MFU.

    GPU: the data-sheet dense bf16 peak. CPU (training runs in fp32 there): the theoretical fp32 FMA
    peak, cores x FLOP per cycle x the nominal clock from /proc/cpuinfo. 32 FLOP/cycle is two 256-bit
    FMA pipes (AMD Zen 2-4, Intel client cores); pass 64 for cores with two 512-bit FMA units. A
    measured GEMM rate is no ceiling: oneDNN's convolutions beat torch.mm on this project's CPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_BF16_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{key} dense bf16 data-sheet peak, {tflops:g} TFLOP/s"
        return float("nan"), f"unknown GPU {name}: no peak on file"
    mhz = _cpu_mhz()
    cores = torch.get_num_threads()
    rate = cores * cpu_flops_per_cycle * mhz * 1e6
    return rate, (f"theoretical fp32 peak: {cores} cores x {cpu_flops_per_cycle} FLOP/cycle x {mhz:.0f} MHz "
                  f"(nominal clock; a boosted clock would lower the MFU) = {rate / 1e9:.0f} GFLOP/s")


def gemm_gflops(device: torch.device, n: int = 4096) -> float:
    """Best fp32 matmul rate torch reaches here: a reference point, not a peak."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n**3 / min(timed(lambda: torch.mm(a, b), device, repeats=3, warmup=1)) / 1e9


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
    """Wall seconds of each of `repeats` calls, after `warmup` untimed ones, device synchronised."""
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


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_json(path: Path, benchmark: str, device: torch.device, quick: bool, payload: dict) -> dict:
    record = {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(device),
        "quick": quick,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record
