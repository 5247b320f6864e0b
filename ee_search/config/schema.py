"""The study file's schema (docs/design.md §2): pydantic models only, no I/O. The `search` section is in
`search_schema.py`.

Loading, `--set` overrides and the search-space checks live in `load.py`; turning a validation error
into one line for the user lives in `messages.py`. Facts owned elsewhere are read, never restated:
model depths, side heads and default loss weights from `models.registry`, monitor names from
`ee_search.metrics`. Every named choice comes from its registry's keys: datasets (with their shapes
and default augmentation) from `config/datasets.py`, objectives and their directions from
`config/objectives.py`, samplers and pruners from `config/search_registry.py`, optimizers from
`ee_search/optimizers.py`, weight averaging from `ee_search/averaging_methods.py`.

One validator does more than compare fields: a user's model (`model.name: package.module:function`)
declares no exit count, so it is imported and built once, on the CPU, to learn K (`config/user_model.py`,
cached), because one loss weight per exit and one threshold per side exit are checked here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    field_validator,
    model_validator,
)

from ee_search.config.search_schema import SearchConfig
from ee_search.config.strict import Strict
from ee_search.config.datasets import DATASETS, default_augment, image_size
from ee_search.config.objectives import DIRECTIONS
from ee_search.config.search_registry import OPTUNA_PRUNERS
from ee_search.config.user_model import user_model_exits
from ee_search.errors import FieldError, quote
from ee_search.metrics import MONITOR_PATTERN, monitored_exit
from ee_search.models.registry import MODELS, default_loss_weights, is_user_model, num_exits, valid_user_model_name
from ee_search.averaging_methods import AVERAGING_METHODS
from ee_search.optimizers import OPTIMIZERS


# ---------------------------------------------------------------------------------------- data
class AugmentConfig(Strict):
    """In a study file, each field left out takes its dataset's default (`config/datasets.py`): SVHN's
    28px crop, or for image_folder a crop at the image's own size with an eighth of it as padding."""

    crop: PositiveInt | None = 28  # random crop for training, centre crop for evaluation; null = none
    padding: NonNegativeInt = 0  # training only: zero padding on each side before the random crop
    rotation: NonNegativeFloat = 0.0  # degrees, uniform in [-rotation, +rotation]


class SyntheticConfig(Strict):
    train_size: PositiveInt = 20000
    test_size: PositiveInt = 4000


class DataConfig(Strict):
    dataset: Literal[tuple(DATASETS)] = "synthetic_svhn"
    root: str = "data"
    download: bool = False
    image_size: PositiveInt = 32  # image_folder: images resized and centre-cropped to this once, at load
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    train_subset: PositiveInt | None = None
    augment: AugmentConfig = AugmentConfig()
    synthetic: SyntheticConfig = SyntheticConfig()  # used by synthetic_svhn only

    @model_validator(mode="after")
    def _dataset_fields(self) -> DataConfig:
        if "image_size" in self.model_fields_set and DATASETS[self.dataset].image_size is not None:
            raise FieldError("data.image_size", f"applies to image_folder only ({self.dataset} images are "
                             f"{DATASETS[self.dataset].image_size}px): remove it")
        if self.dataset == "image_folder" and self.download:
            raise FieldError("data.download", "image_folder reads your own files, there is nothing to download: "
                             "set download: false")
        left_out = {k: v for k, v in default_augment(self).items() if k not in self.augment.model_fields_set}
        if left_out:
            self.augment = self.augment.model_copy(update=left_out)
        size = image_size(self)
        if self.augment.crop is not None and self.augment.crop > size:
            raise FieldError("data.augment.crop", f"{self.augment.crop} is larger than the {size}px {self.dataset} "
                             f"images: use at most {size}, or null for no crop")
        return self


# ---------------------------------------------------------------------------------------- model
class ModelConfig(Strict):
    # A built-in family, or your own network as "package.module:function" (docs/design.md §11, models/user.py).
    name: str = "ee_resnet"
    width: PositiveInt = 64  # built-in families: channel scale; your own function reads it if it likes
    depth: PositiveInt | None = None  # number of stages (= exits); ee_resnet 4 is MyResNet2
    side_head: Literal["conv", "linear"] | None = None  # families with their own heads: leave unset; else conv
    exit_loss_weights: list[NonNegativeFloat] | None = None  # one per exit; default 0.3.., 1.0
    # Your own model only: free-form settings for your function, which receives this whole section as
    # a dict (options included). Kept in one mapping so the rest of the section stays strictly checked.
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known_or_importable(cls, name: str) -> str:
        if name in MODELS or valid_user_model_name(name):
            return name
        raise ValueError(f"use one of {', '.join(MODELS)}, or 'package.module:function' for your own network "
                         f"(got {quote(name)})")

    @model_validator(mode="after")
    def _fields_of_the_family(self) -> ModelConfig:
        if is_user_model(self.name):
            for field in ("depth", "side_head"):
                if getattr(self, field) is not None:
                    raise FieldError(f"model.{field}", f"applies to the built-in models only: {self.name} "
                                     "decides its own stages and heads; remove it (use model.options for settings "
                                     "of your function)")
        elif self.options:
            raise FieldError("model.options", f"is for your own model's function; {self.name} takes width, depth "
                             "and side_head: remove it")
        return self


# ---------------------------------------------------------------------------------------- train
class EarlyStoppingConfig(Strict):
    # val_loss | val_accuracy | val_accuracy_exit_<k>. In multi-objective studies prefer val_loss or an
    # exit's accuracy: val_accuracy depends on each trial's thresholds, so the pruner would compare
    # trade-off points rather than training progress.
    monitor: str = Field("val_loss", pattern=MONITOR_PATTERN)
    patience: PositiveInt = 5
    tol: NonNegativeFloat = 1.0e-4


class AveragingConfig(Strict):
    method: Literal[tuple(AVERAGING_METHODS)] = "none"
    decay: float = Field(0.999, gt=0.0, lt=1.0)  # EMA decay; T-ADEMA's alpha
    update_every: PositiveInt = 1  # optimizer steps between averaging updates
    swa_start_epoch: PositiveInt = 1  # SWA averages from this epoch (1-based) on
    # EMA's warm-up: decay min(decay, (1 + n) / (warmup + n)) after n updates; 0 turns it off.
    warmup: NonNegativeInt = 10


class LrScheduleConfig(Strict):
    """The learning rate over a fit (ee_search/train/lr_schedule.py): a linear warm-up from
    `lr * warmup_start_factor` to `lr` over the first `warmup_epochs`, then `lr` (decay none) or a
    cosine down to `lr * min_factor` at `max_epochs`; stepped after every optimizer step."""

    warmup_epochs: NonNegativeFloat = 0.0
    warmup_start_factor: float = Field(0.1, gt=0.0, le=1.0)
    decay: Literal["none", "cosine"] = "none"
    min_factor: float = Field(0.0, ge=0.0, le=1.0)


class ResumeConfig(Strict):
    """`checkpoints/last.pt` (docs/design.md §9): written every `every_epochs` epochs; a killed trial
    redoes at most that many epochs when it is resumed."""

    every_epochs: PositiveInt = 1


class TrainConfig(Strict):
    max_epochs: PositiveInt = 30
    optimizer: Literal[tuple(OPTIMIZERS)] = "sgd"
    lr: PositiveFloat = 0.01
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD and RMSprop
    alpha: float = Field(0.99, gt=0.0, lt=1.0)  # RMSprop smoothing constant
    weight_decay: NonNegativeFloat = 5.0e-4
    batch_size: PositiveInt = 256
    eval_batch_size: PositiveInt = 1024
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    lr_schedule: LrScheduleConfig = LrScheduleConfig()
    averaging: AveragingConfig = AveragingConfig()
    resume: ResumeConfig = ResumeConfig()


# ---------------------------------------------------------------------------------------- exits
class ExitsConfig(Strict):
    criterion: Literal["max_softmax", "entropy"] = "max_softmax"
    thresholds: list[float] = [0.9, 0.9]
    sweep_points: int = Field(101, ge=2, le=10001)  # thresholds in the trade-off curve


# ---------------------------------------------------------------------------------------- tracking
class TrackingConfig(Strict):
    uri: str = "sqlite:///mlflow.db"
    artifact_location: str | None = None  # for a new experiment; default: the store's own
    # Over an HTTP server (docs/design.md §5, "Tracking outages"): where unsent writes wait, and how long
    # an outage may last before the running trial stops, resumable.
    spool_dir: str | None = Field(None, min_length=1, max_length=4096)  # default .ee-search/spool
    max_outage_s: float = Field(1800.0, gt=0)


# ---------------------------------------------------------------------------------------- study
class StudyConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    exits: ExitsConfig = ExitsConfig()
    search: SearchConfig = SearchConfig()
    tracking: TrackingConfig = TrackingConfig()
    # K of a user's model, learnt by building it while validating (a built-in family declares its own).
    _user_exits: int | None = PrivateAttr(None)

    @property
    def num_exits(self) -> int:
        if is_user_model(self.model.name):
            if self._user_exits is None:
                self._user_exits = user_model_exits(self.model, self.data)
            return self._user_exits
        return num_exits(self.model.name, self.model.depth)

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[o] for o in self.search.objectives]

    @property
    def loss_weights(self) -> list[float]:
        if self.model.exit_loss_weights is not None:
            return list(self.model.exit_loss_weights)
        return default_loss_weights(self.num_exits)

    @model_validator(mode="after")
    def _cross_field(self) -> StudyConfig:
        try:
            k = self.num_exits  # a user's model: imported, built and run once here (FieldError on model.name)
        except ValueError as exc:
            raise FieldError("model.depth", str(exc)) from None
        if self.model.side_head is not None and not MODELS[self.model.name].side_heads:
            raise FieldError(
                "model.side_head",
                f"{self.model.name} has BranchyNet's own side heads, so side_head does not apply: remove it",
            )
        weights = self.model.exit_loss_weights
        if weights is not None and len(weights) != k:
            raise FieldError(
                "model.exit_loss_weights",
                f"{self.model.name} has {k} exits, so give {k} weights (last = final classifier), "
                f"got {len(weights)}",
            )
        if weights is not None and sum(weights) <= 0:
            raise FieldError("model.exit_loss_weights", "at least one weight must be positive")
        monitor = self.train.early_stopping.monitor
        if (monitored_exit(monitor) or 0) > k:
            raise FieldError(
                "train.early_stopping.monitor",
                f"{self.model.name} has exits 1..{k}, so {monitor} names nothing: use val_accuracy_exit_{k} "
                "for the final exit",
            )
        if len(self.exits.thresholds) != k - 1:
            raise FieldError(
                "exits.thresholds",
                f"{self.model.name} has {k - 1} side exits, so give {k - 1} thresholds "
                f"(the final exit takes everything left), got {len(self.exits.thresholds)}",
            )
        for t in self.exits.thresholds:
            if self.exits.criterion == "max_softmax" and not 0.0 <= t <= 1.0:
                raise FieldError("exits.thresholds", f"max_softmax thresholds lie in [0, 1], got {t}")
            if self.exits.criterion == "entropy" and t < 0.0:
                raise FieldError("exits.thresholds", f"entropy thresholds are >= 0, got {t}")
        objectives = self.search.objectives
        if len(set(objectives)) != len(objectives):
            raise FieldError("search.objectives", f"each objective at most once, got {objectives}")
        if self.search.storage.startswith("journal:") and "retries" not in self.search.model_fields_set:
            self.search.retries = 0  # the default 2 is for RDB storages; journal: cannot detect a dead worker
        elif self.search.retries > 0 and self.search.storage.startswith("journal:"):
            raise FieldError(
                "search.retries",
                f"journal: storages have no heartbeat, so a killed trial cannot be detected and retried "
                f"(got {self.search.retries}): set search.retries: 0, or use a sqlite:/// or postgresql:// storage",
            )
        if self.search.pruner.type in OPTUNA_PRUNERS and len(objectives) > 1:
            raise FieldError(
                "search.pruner.type",
                f"Optuna's '{self.search.pruner.type}' pruner needs a single objective "
                f"(got {len(objectives)}): use early_stopping, which works with several",
            )
        return self
