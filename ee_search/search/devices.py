"""Where each local worker process runs (`search.workers`, `search.devices`, `search.trials_per_device`).

Workers go round-robin over the devices, so N workers on D GPUs put ceil(N/D) on each; a GPU takes
at most `trials_per_device` of them (each holds its own CUDA context and copy of the dataset, so
sharing a GPU is a choice the study file makes). A GPU worker sees only its own GPU
(`CUDA_VISIBLE_DEVICES`) and trains on `cuda`. CPU workers share the cores instead: each gets
max(1, cores // CPU workers) intra-op threads, so N workers do not oversubscribe the machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ee_search.config import StudyConfig
from ee_search.errors import UserInputError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class WorkerSlot:
    index: int
    device: str  # as the worker names it: "cpu", or "cuda" (its only visible GPU)
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for it; None on the CPU
    threads: int | None = None  # intra-op threads on the CPU

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """The worker's environment: `base` plus its device's share of the machine."""
        env = dict(base)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        elif self.threads is not None:
            for name in THREAD_VARIABLES:  # a value the user exported wins: they asked for it
                env.setdefault(name, str(self.threads))
        return env

    def describe(self) -> str:
        return f"GPU {self.gpu}" if self.gpu is not None else f"cpu ({self.threads} thread(s))"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a container or taskset may allow fewer than cpu_count
    except AttributeError:
        return os.cpu_count() or 1


def _device_names(config: StudyConfig, source: str, cuda_count: int) -> list[str]:
    devices = config.search.devices
    if devices == "cpu" or (devices == "all" and config.device == "cpu"):
        return ["cpu"]
    if devices == "all":
        if cuda_count == 0 and config.device == "auto":
            return ["cpu"]
        if cuda_count == 0:
            raise UserInputError(source, "device", f"'{config.device}' was asked for but torch sees no CUDA "
                                 "device: use --device cpu or auto")
        return [f"cuda:{i}" for i in range(cuda_count)]
    for name in devices:
        if name.startswith("cuda") and int(name.split(":")[1]) >= cuda_count:
            seen = f"cuda:0..cuda:{cuda_count - 1}" if cuda_count else "no CUDA device"
            raise UserInputError(source, "search.devices", f"{name} is not on this machine (torch sees {seen}): "
                                 "list the GPUs it has, or use all or cpu")
    return list(devices)


def plan_workers(config: StudyConfig, source: str, cuda_count: int | None = None, cores: int | None = None,
                 visible: str | None = None) -> list[WorkerSlot]:
    """One slot per worker; the defaults are this machine's (GPU count, usable cores and the
    CUDA_VISIBLE_DEVICES this process was started with, whose entries the workers' indices name)."""
    cuda_count = torch.cuda.device_count() if cuda_count is None else cuda_count
    cores = usable_cores() if cores is None else cores
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    physical = [v.strip() for v in visible.split(",")] if visible else None
    names = _device_names(config, source, cuda_count)
    n = config.search.workers
    placed = [names[i % len(names)] for i in range(n)]
    gpus = [d for d in names if d != "cpu"]
    most = max((placed.count(d) for d in gpus), default=0)
    if most > config.search.trials_per_device:
        raise UserInputError(source, "search.workers", f"{n} workers on {len(gpus)} GPU(s) put {most} on one, more "
                             f"than search.trials_per_device ({config.search.trials_per_device}): raise it to "
                             f"{math.ceil(n / len(gpus))}, list more devices, or start fewer workers")
    threads = max(1, cores // max(1, placed.count("cpu")))
    slots = []
    for i, name in enumerate(placed):
        if name == "cpu":
            slots.append(WorkerSlot(i, "cpu", threads=threads))
        else:
            index = int(name.split(":")[1])
            slots.append(WorkerSlot(i, "cuda", gpu=physical[index] if physical else str(index)))
    return slots

