"""Where images come from: real SVHN, CIFAR-10, MNIST and Fashion-MNIST through torchvision's own
dataset classes, a folder of your own images (image_folder.py), the offline synthetic house numbers,
and scikit-learn's bundled digits. Each source returns whole splits as uint8 NCHW arrays; nothing here
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

# docs/design.md §8: ImageNet statistics for the colour house-number data.
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


# Published per-channel statistics of each dataset's official train split (pixel / 255). Used rather
# than recomputed so that a study's normalisation, and an exported model's card, do not depend on
# train_subset or on which files happen to be in data.root: every CIFAR-10 network ee-search trains
# sees its inputs scaled the same way as the rest of the literature's.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def load_cifar10(root: str, download: bool) -> SourceData:
    """Real CIFAR-10 via `torchvision.datasets.CIFAR10`: `data.root/cifar-10-batches-py/` (the
    md5-checked python pickle batches), HWC uint8 -> NCHW."""
    from torchvision.datasets import CIFAR10

    splits = {}
    for train in (True, False):
        try:
            ds = CIFAR10(root=root, train=train, download=download)
        except (RuntimeError, OSError):  # missing/corrupt file, or no network for download
            why = "could not be downloaded" if download else "were not found or failed their md5 check"
            raise UserInputError(
                root, "data.root",
                f"CIFAR-10 files {why}: extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                f"into {os.path.abspath(root)} (it makes cifar-10-batches-py/), or set data.download: true on a "
                "machine with internet access",
            ) from None
        images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        splits[train] = ImageArrays(images, np.asarray(ds.targets, dtype=np.int64))
    return SourceData("cifar10", splits[True], splits[False], 10, CIFAR10_MEAN, CIFAR10_STD)


def load_mnist(name: str, root: str, download: bool) -> SourceData:
    """MNIST or Fashion-MNIST via torchvision's classes: the four idx files (uncompressed) under
    `data.root/MNIST/raw/` or `data.root/FashionMNIST/raw/`, as 1-channel uint8."""
    from torchvision.datasets import MNIST, FashionMNIST

    cls, mean, std = (MNIST, MNIST_MEAN, MNIST_STD) if name == "mnist" else (
        FashionMNIST, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    splits = {}
    for train in (True, False):
        try:
            ds = cls(root=root, train=train, download=download)
        # RuntimeError: not found / not downloadable; OSError: unreadable; AssertionError, ValueError,
        # TypeError: torchvision's idx reader on a file that is not an idx file of uint8 images.
        except (RuntimeError, OSError, AssertionError, ValueError, TypeError):
            folder = os.path.join(os.path.abspath(root), cls.__name__, "raw")
            why = "could not be downloaded" if download else "were not found or could not be read"
            raise UserInputError(
                root, "data.root",
                f"{cls.__name__} files {why}: put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (gunzipped) into {folder}, or set "
                "data.download: true on a machine with internet access",
            ) from None
        images = ds.data.numpy()
        if images.ndim == 3:
            images = images[:, None]  # [N, 28, 28] -> [N, 1, 28, 28]
        splits[train] = ImageArrays(np.ascontiguousarray(images, dtype=np.uint8), ds.targets.numpy().astype(np.int64))
    return SourceData(name, splits[True], splits[False], 10, mean, std)


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
