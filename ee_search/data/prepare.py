"""Preparing a study's data: load the dataset its registry entry names (`config/datasets.py`), check
it has the declared shape, split it (train / val carved from train / held-out test), upload each split
to the training device once, and hand every trial its own seeded, augmented batch iterators.

Trials in one process share the uploaded tensors, so a study pays the load and the host-to-device
copy once, not once per trial.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from importlib import import_module

import numpy as np
import torch

from ee_search.config import AugmentConfig, DataConfig
from ee_search.config.datasets import DATASETS, image_size
from ee_search.data.augment import BatchTransform
from ee_search.data.batches import DeviceBatches
from ee_search.data.download_root import download_root
from ee_search.data.sources import ImageArrays, SourceData, fingerprint
from ee_search.data.splits import split_train_val, stratified_subset
from ee_search.errors import UserInputError


@dataclass(frozen=True)
class PreparedData:
    source: SourceData
    train: ImageArrays
    val: ImageArrays
    test: ImageArrays

    @cached_property  # hashes every image once per process: seconds on SVHN, not per trial
    def fingerprint(self) -> str:
        """Content hash of the train and validation splits: each trial logs it as its MLflow dataset
        digest, so a result is tied to its exact data."""
        return fingerprint(self.train) + "-" + fingerprint(self.val)

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class DataBundle:
    train: DeviceBatches
    val: DeviceBatches
    test: DeviceBatches
    num_classes: int
    channels: int
    input_size: int  # after cropping: what the model sees
    mean: tuple[float, ...]
    std: tuple[float, ...]


_lock = threading.Lock()
_prepared: dict[tuple, PreparedData] = {}
_uploaded: dict[tuple, tuple[torch.Tensor, ...]] = {}


def prepare_data(cfg: DataConfig, seed: int) -> PreparedData:
    # Keyed by the whole data config (augmentation applies per batch, so it is left out) and the
    # study's seed: a field added to DataConfig can never be missed by the key.
    key = (cfg.model_dump_json(exclude={"augment"}), seed)
    with _lock:
        if key not in _prepared:
            _prepared.clear()  # one dataset per process at a time: keep memory bounded
            _uploaded.clear()
            _prepared[key] = _prepare(cfg, seed)
        return _prepared[key]


def load_source(cfg: DataConfig, seed: int) -> SourceData:
    """The dataset `cfg` names, checked against the shape the study file was validated for."""
    module, function = DATASETS[cfg.dataset].loader.split(":")
    # A download that fails leaves data.root as it was found (download_root.py).
    with download_root(cfg.root) if cfg.download else nullcontext():
        source = getattr(import_module(module), function)(cfg, seed)
    check_shape(source, cfg)
    return source


def check_shape(source: SourceData, cfg: DataConfig) -> None:
    """Load time checked the crop and built a user's model for `config/datasets.py`'s shape of this
    dataset; files that hold something else (another image size, labels out of range) stop here, in
    one line, before any store exists."""
    spec = DATASETS[cfg.dataset]
    expected = (spec.channels, image_size(cfg), image_size(cfg))
    for split, arrays in (("train", source.train), ("test", source.test)):
        found = tuple(arrays.images.shape[1:])
        if arrays.images.ndim != 4 or found != expected:
            raise UserInputError(cfg.root, "data.root", f"{cfg.dataset} {split} images should be "
                                 f"{'x'.join(map(str, expected))} (channels x height x width) but the files hold "
                                 f"{'x'.join(map(str, found))}: check that data.root holds {cfg.dataset}")
        if len(arrays) == 0 or len(arrays.images) != len(arrays.labels):
            raise UserInputError(cfg.root, "data.root", f"{cfg.dataset} {split} split has {len(arrays.images)} "
                                 f"images and {len(arrays.labels)} labels: the files are incomplete")
        if arrays.labels.min() < 0 or arrays.labels.max() >= source.num_classes:
            raise UserInputError(cfg.root, "data.root", f"{cfg.dataset} {split} labels lie in "
                                 f"[{arrays.labels.min()}, {arrays.labels.max()}], not in 0..{source.num_classes - 1}: "
                                 "check that data.root holds this dataset")


def _prepare(cfg: DataConfig, seed: int) -> PreparedData:
    source = load_source(cfg, seed)
    labels = source.train.labels
    try:
        train_idx, val_idx = split_train_val(labels, cfg.val_fraction, seed)
    except ValueError as exc:
        raise UserInputError(cfg.dataset, "data.val_fraction", str(exc)) from None
    if cfg.train_subset is not None:
        if cfg.train_subset < source.num_classes:
            raise UserInputError(
                cfg.dataset, "data.train_subset",
                f"{cfg.train_subset} samples cannot hold all {source.num_classes} classes: raise it",
            )
        train_idx = stratified_subset(train_idx, labels, cfg.train_subset, seed)
    return PreparedData(source, source.train.take(train_idx), source.train.take(val_idx), source.test)


def _upload(prepared: PreparedData, device: torch.device) -> tuple[torch.Tensor, ...]:
    key = (id(prepared), str(device))
    with _lock:
        if key not in _uploaded:
            tensors = []
            for split in (prepared.train, prepared.val, prepared.test):
                # NCHW uint8 -> NHWC on the device (see augment.py for why NHWC).
                nhwc = np.ascontiguousarray(split.images.transpose(0, 2, 3, 1))
                tensors.append(torch.from_numpy(nhwc).to(device))
                tensors.append(torch.from_numpy(split.labels).to(device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # trials on other streams read these next
            _uploaded[key] = tuple(tensors)
        return _uploaded[key]


def build_batches(
    prepared: PreparedData,
    augment: AugmentConfig,
    device: torch.device,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    channels_last: bool = False,
) -> DataBundle:
    source = prepared.source
    tr_x, tr_y, va_x, va_y, te_x, te_y = _upload(prepared, device)
    if augment.crop is not None and augment.crop > source.image_size:
        raise UserInputError(
            source.name, "data.augment.crop",
            f"{augment.crop} is larger than the {source.image_size}px images: use at most {source.image_size}",
        )

    def transform(train: bool) -> BatchTransform:
        return BatchTransform(source.mean, source.std, source.image_size, augment.crop,
                              augment.rotation, train, device, channels_last, augment.padding)

    evaluate = transform(False)
    return DataBundle(
        train=DeviceBatches(tr_x, tr_y, batch_size, transform(True), shuffle=True, seed=seed, drop_last=True),
        val=DeviceBatches(va_x, va_y, eval_batch_size, evaluate, shuffle=False),
        test=DeviceBatches(te_x, te_y, eval_batch_size, evaluate, shuffle=False),
        num_classes=source.num_classes,
        channels=source.channels,
        input_size=evaluate.output_size,
        mean=source.mean,
        std=source.std,
    )
