"""Your own images: `data.root/train/<class>/*` and `data.root/test/<class>/*`, read with
`torchvision.datasets.ImageFolder` (its class-folder rule, its extensions, its loader).

Every image is converted to RGB by torchvision's loader (so grayscale, palette and RGBA files mix
safely), resized so its shorter side is `image_size` and centre-cropped to a square, once, at load;
then it is held as uint8 NCHW like every other source, and the rest of the pipeline cannot tell the
difference. There are no standard statistics for a user's images, so the per-channel mean and std
are computed from the train split (as for `digits`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ee_search.data.sources import ImageArrays, SourceData
from ee_search.errors import UserInputError

SPLITS = ("train", "test")


def load_image_folder(root: str, image_size: int) -> SourceData:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    # Resize's default (bilinear with antialias) on the shorter side, then the central square.
    shape = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])
    classes: dict[str, list[str]] = {}
    arrays: dict[str, ImageArrays] = {}
    for split in SPLITS:
        folder = Path(root) / split
        if not folder.is_dir():
            raise UserInputError(root, "data.root", f"image_folder needs {os.path.abspath(folder)}/<class>/* "
                                 f"(one folder per class, in both train/ and test/), and {split}/ is missing")
        try:
            ds = ImageFolder(str(folder), transform=shape)
        except FileNotFoundError as exc:  # no class folders, or a class folder without a single image
            raise UserInputError(root, "data.root", f"{os.path.abspath(folder)}: {exc} Every class folder needs "
                                 "at least one image, in both train/ and test/") from None
        classes[split] = list(ds.classes)
        arrays[split] = _read(ds, root, image_size)
    if classes["train"] != classes["test"]:
        only_train = sorted(set(classes["train"]) - set(classes["test"]))
        only_test = sorted(set(classes["test"]) - set(classes["train"]))
        raise UserInputError(root, "data.root", f"train/ and test/ must hold the same class folders (labels "
                             f"are their sorted names); only in train/: {only_train or 'none'}, only in test/: "
                             f"{only_test or 'none'}")
    train = arrays["train"]
    pixels = train.images.astype(np.float64) / 255.0
    mean = tuple(float(m) for m in pixels.mean(axis=(0, 2, 3)))
    # A channel that never varies would divide by zero when normalising: fall back to 1.
    std = tuple(float(s) if s > 0 else 1.0 for s in pixels.std(axis=(0, 2, 3)))
    return SourceData("image_folder", train, arrays["test"], len(classes["train"]), mean, std)


def _read(ds, root: str, image_size: int) -> ImageArrays:
    images = np.empty((len(ds), 3, image_size, image_size), dtype=np.uint8)
    for i, (path, _) in enumerate(ds.samples):
        try:
            image, _ = ds[i]
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: unreadable, truncated or not an image
            raise UserInputError(root, "data.root", f"cannot read {path} as an image ({type(exc).__name__}): "
                                 "remove or replace it") from None
        images[i] = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    return ImageArrays(images, np.asarray(ds.targets, dtype=np.int64))
