"""The study file's `search` section (docs/design.md §2): the space's dimensions, the sampler, the
pruner, the heartbeat, the workers and devices, a Ray cluster. Pydantic models only, no I/O; the choices are the
registries' keys (`config/search_registry.py`, `config/objectives.py`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from ee_search.config.objectives import ObjectiveName
from ee_search.config.search_registry import PRUNERS, SAMPLERS
from ee_search.config.strict import Strict


class _Dimension(Strict):
    per_item: bool = False
    when: dict[str, list[Any]] | None = None


class FloatDimension(_Dimension):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: PositiveFloat | None = None

    @model_validator(mode="after")
    def _bounds(self) -> FloatDimension:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: drop one of them")
        return self


class IntDimension(_Dimension):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _bounds(self) -> IntDimension:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step cannot be combined with log: drop one of them")
        return self


Choice = Union[None, bool, int, float, str]  # what Optuna can store as a categorical choice


class CategoricalDimension(_Dimension):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) > high ({high}): swap them")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 but got low={low}: raise low or set log: false")


Dimension = Annotated[
    FloatDimension | IntDimension | CategoricalDimension, Field(discriminator="type")
]

class SamplerConfig(Strict):
    type: Literal[tuple(SAMPLERS)] = "tpe"
    seed: int | None = None
    options: dict[str, Any] = {}  # extra keyword arguments for the Optuna sampler


class PrunerConfig(Strict):
    type: Literal[tuple(PRUNERS)] = "early_stopping"
    n_startup_trials: int = Field(4, ge=0)  # completed trials before anything is pruned
    n_warmup_epochs: int = Field(1, ge=0)  # epochs a trial always gets
    min_stale_epochs: NonNegativeInt = 1  # early_stopping: epochs without improvement before a prune
    percentile: float = Field(50.0, ge=0.0, le=100.0)  # early_stopping: worse than this of the others
    # early_stopping: whose records a trial is judged against: the completed trials, or every trial
    # that reached the epoch (successive halving's rule); and, with a rung factor, only at the rungs
    # n_warmup_epochs+1 times rung_factor^k (docs/design.md §8).
    compare_with: Literal["completed", "reached"] = "completed"
    rung_factor: float | None = Field(None, gt=1.0)
    options: dict[str, Any] = {}  # extra keyword arguments for one of Optuna's own pruners


class HeartbeatConfig(Strict):
    """RDB storages only. Each running trial writes a heartbeat every `interval_s`; a RUNNING trial
    whose heartbeat is older than `grace_period_s` (its worker was killed) is marked FAIL, and its
    MLflow run FAILED, by the next worker that starts a trial."""

    interval_s: PositiveInt = 60
    grace_period_s: PositiveInt = 180

    @model_validator(mode="after")
    def _grace_outlasts_interval(self) -> HeartbeatConfig:
        if self.grace_period_s <= self.interval_s:
            raise ValueError(
                f"grace_period_s ({self.grace_period_s}) must be longer than interval_s ({self.interval_s}), "
                "or live trials would be failed between two heartbeats"
            )
        return self


class SearchConfig(Strict):
    n_trials: PositiveInt | None = 50
    timeout_s: PositiveFloat | None = None
    objectives: list[ObjectiveName] = Field(["accuracy", "avg_exit_depth"], min_length=1)
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    storage: str = "sqlite:///optuna.db"
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    # RDB storages: a lost database connection is retried, with backoff, for this long before the
    # worker stops resumably (docs/design.md §9, "Storage outages").
    storage_outage_s: PositiveFloat = 600.0
    # RDB storages: a trial whose heartbeat went stale (worker killed) is resumed from its last.pt
    # by up to this many retries. journal: storages have no heartbeat: 0 there (the default), and
    # a value > 0 is refused.
    retries: NonNegativeInt = 2
    n_jobs: PositiveInt = 1  # trials run at once in this process (share one device)
    # Worker processes on this machine, each a whole `ee-search run` on this study (search/workers.py);
    # spread round-robin over `devices`, at most `trials_per_device` on one GPU.
    workers: PositiveInt = 1
    devices: str | list[str] = "all"
    trials_per_device: PositiveInt = 1
    # A Ray cluster instead (search/ray_workers.py, `run --ray`): `auto` (the cluster this machine is
    # part of) or its address; each of the `workers` asks Ray for these per trial it runs (`n_jobs`).
    # Fractional GPUs let several trials share one.
    ray: str | None = None
    gpus_per_trial: NonNegativeFloat = 0.0
    cpus_per_trial: PositiveFloat = 1.0
    space: dict[str, Dimension] = {}
    # A trial whose sampled values equal an earlier trial's (finished or running) is not trained again:
    # it ends PRUNED at once, untrained, with `duplicate_of` (search/duplicates.py). TPE proposes the
    # same point of a categorical or stepped space again and again; false trains such replicates.
    skip_duplicates: bool = True

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, devices: str | list[str]) -> str | list[str]:
        wanted = "all, cpu, or a list such as [cuda:0, cuda:1]"
        if isinstance(devices, str) and ("," in devices or devices.startswith("[")):  # --devices cuda:0,cuda:1
            devices = [d.strip() for d in devices.strip("[]").split(",") if d.strip()]
        if isinstance(devices, str):
            if devices not in ("all", "cpu"):
                raise ValueError(f"must be {wanted}, got {devices!r}")
            return devices
        if not devices:
            raise ValueError(f"the list is empty: give {wanted}")
        for name in devices:
            if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
                raise ValueError(f"{name!r} is not a device: give {wanted}")
        named = ["cuda:0" if d == "cuda" else d for d in devices]
        if len(set(named)) != len(named):
            raise ValueError(f"{devices} names a device twice: use search.trials_per_device to put several "
                             "workers on one")
        return named
