"""Where images come from: real SVHN through torchvision, the offline synthetic house numbers, and
scikit-learn's bundled digits. Each source returns whole splits as uint8 NCHW arrays; nothing here
knows about batches, devices or augmentation.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ee_search.errors import UserInputError

# DESIGN.md §8: ImageNet statistics for the colour house-number data.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageArrays:
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> ImageArrays:
        return ImageArrays(self.images[index], self.labels[index])


@dataclass(frozen=True)
class SourceData:
    name: str
    train: ImageArrays  # the official train split; validation is carved from it later
    test: ImageArrays  # held out: touched only to report the final front
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def load_svhn(root: str, download: bool) -> SourceData:
    """Real SVHN via `torchvision.datasets.SVHN` (md5-checked `.mat` files, label 10 -> 0)."""
    from torchvision.datasets import SVHN

    splits = {}
    for split in ("train", "test"):
        try:
            ds = SVHN(root=root, split=split, download=download)
        except (RuntimeError, OSError):  # missing/corrupt file, or no network for download
            why = "could not be downloaded" if download else "were not found or failed their md5 check"
            raise UserInputError(
                root,
                "data.root",
                f"SVHN files {why}: put train_32x32.mat and test_32x32.mat "
                f"from http://ufldl.stanford.edu/housenumbers/ into {os.path.abspath(root)}, or set "
                "data.download: true on a machine with internet access",
            ) from None
        splits[split] = ImageArrays(np.ascontiguousarray(ds.data), ds.labels.astype(np.int64))
    return SourceData("svhn", splits["train"], splits["test"], 10, IMAGENET_MEAN, IMAGENET_STD)


def load_synthetic_svhn(root: str, seed: int, train_size: int, test_size: int) -> SourceData:
    """The project's own house numbers; cached on disk because rendering takes seconds per 10k."""
    from ee_search.data.synthetic_svhn import GENERATOR_VERSION, render_house_numbers

    def cached(split: str, n: int, split_seed: int) -> ImageArrays:
        path = Path(root) / "synthetic_svhn" / f"v{GENERATOR_VERSION}-{split}-{n}-seed{split_seed}.npz"
        if path.is_file():
            with np.load(path) as f:  # npz of plain arrays: no pickle involved
                return ImageArrays(f["images"], f["labels"])
        images, labels = render_house_numbers(n, split_seed)
        _atomic_save(path, images=images, labels=labels)
        return ImageArrays(images, labels)

    # Distinct seeds per split so the test images are not the train images' twins.
    train = cached("train", train_size, seed)
    test = cached("test", test_size, seed + 1_000_003)
    return SourceData("synthetic_svhn", train, test, 10, IMAGENET_MEAN, IMAGENET_STD)


def load_digits(image_size: int = 32) -> SourceData:
    """scikit-learn's bundled 8x8 digits, upsampled to `image_size` (bilinear) as 1-channel uint8.

    There is no official test split, so a fixed 20% is held out with a constant seed: every study on
    `digits` reports its front on the same test images, whatever the study's own seed."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N,1,8,8] in [0,1]
    big = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0
    )
    train = ImageArrays(images[train_idx], labels[train_idx])
    mean = float(train.images.mean() / 255.0)
    std = float(train.images.std() / 255.0)
    return SourceData("digits", train, ImageArrays(images[test_idx], labels[test_idx]), 10, (mean,), (std,))


def _atomic_save(path: Path, **arrays: np.ndarray) -> None:
    # Write-then-rename: two workers rendering the same cache never leave a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fingerprint(arrays: ImageArrays) -> str:
    """Short content hash, logged with each trial so a result can be tied to its exact data."""
    h = hashlib.sha1()
    h.update(arrays.images.tobytes())
    h.update(arrays.labels.tobytes())
    return h.hexdigest()[:12]
