"""The dataset registry: what the study file needs to know about each dataset before any of it is
loaded (image channels, size, number of classes, default augmentation) and which function loads it.

Load time needs the shapes to check a file without reading the data: `data.augment.crop` must fit in
the images, and a user's model (`model.name: module:function`) is built and run once on a dummy batch
of the data's shape to learn its exits. The data layer checks every loaded dataset against the same
table, so a file in the wrong shape fails there with one line instead of deep inside a trial.

Adding a dataset is one entry here plus its loader, `(DataConfig, seed) -> SourceData`, named as
"module:function" and imported only when a trial loads the data (as `models/registry.py` does for
networks). The schema's `data.dataset` choices are this table's keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ee_search.errors import FieldError


@dataclass(frozen=True)
class AugmentDefaults:
    """The training augmentation of a dataset, used for each `data.augment` field the file leaves out."""

    crop: int | None  # side of the random crop; None: the image's own side (with padding, CIFAR-style)
    padding_ratio: float = 0.0  # zero padding on each side before the random crop, as a share of the side

    def resolve(self, size: int) -> dict[str, int]:
        """The `data.augment` crop and padding for `size`px images."""
        return {"crop": self.crop or size, "padding": int(size * self.padding_ratio)}


# The seed's SVHN recipe: a random 28px crop of the 32px digit (centre crop for evaluation), no
# padding. Kept for every dataset that had it before the defaults followed the dataset, so no
# existing study changes (on MNIST's 28px images it is no crop at all).
SVHN_CROP = AugmentDefaults(crop=28)
# The CIFAR recipe (RandomCrop(32, padding=4)) scaled to any side: the model sees the whole image,
# shifted by up to an eighth of it. Used where the image size is the user's (image_folder), so a
# 16px or 64px folder is neither refused nor cropped away.
OWN_SIZE_PADDED = AugmentDefaults(crop=None, padding_ratio=1 / 8)


@dataclass(frozen=True)
class DatasetSpec:
    loader: str  # "module:function" taking (DataConfig, seed), imported when a trial loads the data
    channels: int
    image_size: int | None  # None: data.image_size decides (image_folder)
    num_classes: int | None  # None: one class per folder under data.root/train (image_folder)
    augment: AugmentDefaults = SVHN_CROP


_LOADERS = "ee_search.data.loaders"

DATASETS: dict[str, DatasetSpec] = {
    "svhn": DatasetSpec(f"{_LOADERS}:svhn", 3, 32, 10),
    "synthetic_svhn": DatasetSpec(f"{_LOADERS}:synthetic_svhn", 3, 32, 10),
    # 8x8 scikit-learn digits, upsampled to 32 (data/sources.py)
    "digits": DatasetSpec(f"{_LOADERS}:digits", 1, 32, 10),
    "cifar10": DatasetSpec(f"{_LOADERS}:cifar10", 3, 32, 10),
    "mnist": DatasetSpec(f"{_LOADERS}:mnist", 1, 28, 10),
    "fashion_mnist": DatasetSpec(f"{_LOADERS}:fashion_mnist", 1, 28, 10),
    # Every image is converted to RGB (torchvision's loader does), so a folder mixing grayscale,
    # palette and RGBA files still gives one consistent 3-channel array.
    "image_folder": DatasetSpec(f"{_LOADERS}:image_folder", 3, None, None, OWN_SIZE_PADDED),
}


def image_size(data_cfg) -> int:
    """Side of the square images a dataset is held at, before any crop."""
    return DATASETS[data_cfg.dataset].image_size or data_cfg.image_size


def default_augment(data_cfg) -> dict[str, int]:
    """The crop and padding the dataset's images get when the file does not set them."""
    return DATASETS[data_cfg.dataset].augment.resolve(image_size(data_cfg))


def class_folders(directory: str | Path) -> list[str]:
    """The class names of an ImageFolder split: its sub-folders, sorted (torchvision's `find_classes`
    rule, so labels here and in the loaded dataset agree)."""
    with os.scandir(directory) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def num_classes(data_cfg) -> int:
    """The dataset's number of classes; for image_folder the class folders under data.root/train are
    counted (a directory listing, no image is read)."""
    fixed = DATASETS[data_cfg.dataset].num_classes
    if fixed is not None:
        return fixed
    train = Path(data_cfg.root) / "train"
    try:
        classes = class_folders(train)
    except OSError:
        classes = []
    if not classes:
        raise FieldError("data.root", missing_image_folder(data_cfg.root))
    return len(classes)


def missing_image_folder(root: str | Path) -> str:
    return (f"image_folder reads {os.path.abspath(root)}/train/<class>/* and {os.path.abspath(root)}/test/<class>/*, "
            "and found no class folders there: make one folder per class in train/ and test/, or point data.root "
            "at the folder that holds them")
