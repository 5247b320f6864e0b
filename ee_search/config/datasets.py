"""What the study file needs to know about each dataset before any of it is loaded: image channels,
size and number of classes.

Load time needs them to check a file without reading the data: `data.augment.crop` must fit in the
images, and a user's model (`model.name: module:function`) is built and run once on a dummy batch of
the data's shape to learn its exits. The data layer checks every loaded dataset against the same
table, so a file in the wrong shape fails there with one line instead of deep inside a trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ee_search.errors import FieldError


@dataclass(frozen=True)
class DatasetShape:
    channels: int
    image_size: int | None  # None: data.image_size decides (image_folder)
    num_classes: int | None  # None: one class per folder under data.root/train (image_folder)


DATASETS: dict[str, DatasetShape] = {
    "svhn": DatasetShape(3, 32, 10),
    "synthetic_svhn": DatasetShape(3, 32, 10),
    "digits": DatasetShape(1, 32, 10),  # 8x8 scikit-learn digits, upsampled to 32 (data/sources.py)
    "cifar10": DatasetShape(3, 32, 10),
    "mnist": DatasetShape(1, 28, 10),
    "fashion_mnist": DatasetShape(1, 28, 10),
    # Every image is converted to RGB (torchvision's loader does), so a folder mixing grayscale,
    # palette and RGBA files still gives one consistent 3-channel array.
    "image_folder": DatasetShape(3, None, None),
}


def image_size(data_cfg) -> int:
    """Side of the square images a dataset is held at, before any crop."""
    return DATASETS[data_cfg.dataset].image_size or data_cfg.image_size


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
