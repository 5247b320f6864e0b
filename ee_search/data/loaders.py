"""Each dataset's loader as the dataset registry (`config/datasets.py`) names it: the study's data
section and seed in, whole splits out. These only pick the arguments each source takes; the reading
itself is in sources.py and image_folder.py."""

from __future__ import annotations

from ee_search.config import DataConfig
from ee_search.data.image_folder import load_image_folder
from ee_search.data.sources import (
    SourceData,
    load_cifar10,
    load_digits,
    load_mnist,
    load_svhn,
    load_synthetic_svhn,
)


def svhn(cfg: DataConfig, seed: int) -> SourceData:
    return load_svhn(cfg.root, cfg.download)


def synthetic_svhn(cfg: DataConfig, seed: int) -> SourceData:
    return load_synthetic_svhn(cfg.root, seed, cfg.synthetic.train_size, cfg.synthetic.test_size)


def digits(cfg: DataConfig, seed: int) -> SourceData:
    return load_digits()


def cifar10(cfg: DataConfig, seed: int) -> SourceData:
    return load_cifar10(cfg.root, cfg.download)


def mnist(cfg: DataConfig, seed: int) -> SourceData:
    return load_mnist("mnist", cfg.root, cfg.download)


def fashion_mnist(cfg: DataConfig, seed: int) -> SourceData:
    return load_mnist("fashion_mnist", cfg.root, cfg.download)


def image_folder(cfg: DataConfig, seed: int) -> SourceData:
    return load_image_folder(cfg.root, cfg.image_size)
