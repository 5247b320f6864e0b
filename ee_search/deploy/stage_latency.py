"""What each stage of the exported program costs on a device, and what an operating point is then
expected to cost per call (docs/design.md §4, "Expected latency"): `ee-search pareto --latency`.

Timed on the exported program itself (program.py: one `torch.export` program per stage and its exit
head, run by early_exit_torch.py), on the trial's validation images, at each batch size n asked for
and at 1 (the anchor of the cost curve):
- `stage_ms[k]`: stage k's program (the stage and its head are one program, as deployed) on n samples;
- `exit_ms[k]`: the runner's step after it (`EarlyExitProgram.exit_step`: the score, the exit rule,
  the leavers' outputs, gathering the survivors' features), with the threshold at the median score so
  that half the batch leaves;
- `start_ms`: the runner's setup, once per call.

Every unit is warmed up, then timed in blocks of back-to-back calls (a block lasts at least
`min_block_ms`, so a 50 µs call is not timed alone), the units taking turns, forwards then backwards
on alternate repeats: a machine whose speed drifts slows all of them alike. The median block is kept.

The expected latency of a call on B samples, for an operating point that sends the share f_k of the
samples out at exit k: stage k is reached by r_k = 1 - sum_{j<k} f_j of them; it runs when at least one
of the B reaches it, with probability P_k = 1 - (1 - r_k)^B, on B r_k / P_k samples on average then:

    E[latency_B] = start(B) + sum_k P_k * c_k(B r_k / P_k),   c_k(n) = stage_k(n) + exit_k(n)

with c_k linear between the measured batch sizes. At B = 1 it is start(1) + sum_k r_k c_k(1). Fixed
costs (launching a program, a head on a handful of samples, the gather) count once per call at any
batch size, which is why depth alone under-predicts the cost of early exits.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ee_search.config import StudyConfig
from ee_search.deploy.early_exit_torch import EarlyExitProgram, confidence_score
from ee_search.deploy.model_export import export_programs, validation_inputs
from ee_search.deploy.program import PROGRAM_DIR, Normalise, example_batch, exit_stages, load_program, save_program


@dataclass
class StageCosts:
    """Milliseconds per call of each unit at each measured batch size (`sizes`, ascending, 1 first)."""

    device: str
    sizes: list[int]
    stage_ms: list[list[float]]  # [K][len(sizes)]
    exit_ms: list[list[float]]  # [K][len(sizes)]
    start_ms: list[float]  # [len(sizes)]
    repeats: int
    torch_threads: int

    def step_ms(self, k: int, n: float) -> float:
        """Stage k (0-based), its head and the exit step after it, on n samples (linear in between)."""
        return float(np.interp(n, self.sizes, np.add(self.stage_ms[k], self.exit_ms[k])))

    def expected_ms(self, exit_fractions: Sequence[float], batch: int) -> float:
        """The expected milliseconds of one call on `batch` samples (see the module's docstring)."""
        if len(exit_fractions) != len(self.stage_ms):
            raise ValueError(f"{len(self.stage_ms)} stages but {len(exit_fractions)} exit fractions")
        total = float(np.interp(batch, self.sizes, self.start_ms))
        for k, r in enumerate(reach(exit_fractions)):
            called = 1.0 - (1.0 - r) ** batch
            if called > 0.0:
                total += called * self.step_ms(k, batch * r / called)
        return total

    def as_dict(self) -> dict:
        return asdict(self)


def reach(exit_fractions: Sequence[float]) -> list[float]:
    """The share of samples that reach each stage: 1, then 1 minus those that left before it."""
    left = np.concatenate([[0.0], np.cumsum(np.asarray(exit_fractions, dtype=np.float64))[:-1]])
    return [float(min(1.0, max(0.0, 1.0 - x))) for x in left]


def measured_sizes(batches: Sequence[int]) -> list[int]:
    return sorted({1, *batches})


# ----------------------------------------------------------------------------------- measuring
def stage_costs(payload: dict, config: StudyConfig, device: torch.device, batches: Sequence[int],
                source: str, repeats: int = 15) -> StageCosts:
    """Export the checkpoint's network (`payload`, a best.pt) as export-model does, on `device`, and
    time its stages on the validation images of the trial's `config`."""
    with tempfile.TemporaryDirectory(prefix="ee-search-latency-") as tmp:
        # The thresholds do not matter here: every unit is timed on its own (see `measure`).
        program, images, _ = exported_program(payload, config, device, source, None, Path(tmp) / PROGRAM_DIR)
    return measure(program, images, batches, repeats=repeats)


def exported_program(payload: dict, config: StudyConfig, device: torch.device, source: str,
                     thresholds: Sequence[float] | None, directory: Path) -> tuple[EarlyExitProgram, torch.Tensor, torch.Tensor]:
    """The checkpoint's network (`payload`, a best.pt) exported as export-model exports it, on `device`,
    saved into `directory` with `thresholds` (the checkpoint's own when None) and loaded back: what is
    timed is what users load. Returns it with the validation images (on `device`) and labels."""
    from ee_search.checkpoints import model_from_checkpoint

    meta = payload["metadata"]
    network = model_from_checkpoint(payload).to(device=device, memory_format=torch.channels_last).eval()
    normalise = Normalise(meta["mean"], meta["std"]).to(device).eval()
    images, labels = validation_inputs(config, meta)
    images = images.to(device)
    programs = export_programs(exit_stages(network, normalise), example_batch(images), meta["model"]["name"], source)
    save_program(programs, meta["thresholds"] if thresholds is None else thresholds, meta["criterion"], directory)
    return load_program(directory), images, labels


@torch.no_grad()
def measure(program: EarlyExitProgram, images: torch.Tensor, batches: Sequence[int], repeats: int = 15,
            warmup: int = 3, min_block_ms: float = 5.0) -> StageCosts:
    """Time `program`'s units (see the module's docstring) at batch 1 and at `batches`."""
    sync = torch.cuda.synchronize if images.device.type == "cuda" else (lambda: None)
    sizes = measured_sizes(batches)
    units = []  # (kind, k, size index, call)
    for i, n in enumerate(sizes):
        x = take(images, n)
        outputs, alive = program.start(x)
        units.append(("start", 0, i, partial(program.start, x)))
        for k, stage in enumerate(program.stages):
            out = stage(x)
            half = confidence_score(out[0], program.max_softmax).median()  # half the batch leaves
            units.append(("stage", k, i, partial(stage, x)))
            units.append(("exit", k, i, partial(program.exit_step, k, out, alive, outputs, half)))
            x = out[-1]  # every sample goes on, so each stage is timed on n samples
    counts = [_block_size(call, sync, warmup, min_block_ms) for *_, call in units]
    times: list[list[float]] = [[] for _ in units]
    for r in range(repeats):
        order = range(len(units)) if r % 2 == 0 else reversed(range(len(units)))
        for u in order:
            times[u].append(_block_ms(units[u][3], counts[u], sync))
    k_exits = len(program.stages)
    table = {kind: [[0.0] * len(sizes) for _ in range(k_exits)] for kind in ("stage", "exit", "start")}
    for (kind, k, i, _), samples in zip(units, times):
        table[kind][k][i] = statistics.median(samples)
    return StageCosts(images.device.type, sizes, table["stage"], table["exit"], table["start"][0], repeats,
                      torch.get_num_threads())


def take(images: torch.Tensor, n: int) -> torch.Tensor:
    """The first n images, the split repeated when it is smaller than n."""
    repeats = math.ceil(n / len(images))
    return (images.repeat(repeats, *([1] * (images.dim() - 1))) if repeats > 1 else images)[:n].contiguous()


def _block_ms(call: Callable, count: int, sync: Callable[[], None]) -> float:
    sync()
    started = time.perf_counter()
    for _ in range(count):
        call()
    sync()
    return (time.perf_counter() - started) * 1000.0 / count


def _block_size(call: Callable, sync: Callable[[], None], warmup: int, min_block_ms: float) -> int:
    """How many back-to-back calls make a block of at least `min_block_ms`, after `warmup` calls."""
    for _ in range(warmup):
        call()
    once = _block_ms(call, 1, sync)
    return max(1, min(1000, math.ceil(min_block_ms / max(once, 1e-3))))
