"""Tiny datasets written in each real on-disk format, for the tests to load through torchvision's
own classes: CIFAR-10's python pickle batches, MNIST's idx files, and a folder of PNGs.

torchvision md5-checks CIFAR-10's files against a table of the official ones; `register_cifar10`
puts the md5 of the files written here in that table (data, not behaviour), so the production path
runs unchanged: integrity check, unpickling, the HWC -> NCHW transpose. MNIST's raw files are only
checked for existence (no md5 is given for the uncompressed idx files)."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images [N, C, H, W] and labels 0..9 cycling, so every class is present."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8), np.arange(n) % 10


def write_cifar10(root: Path, per_batch: int = 10, test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """CIFAR-10's layout: data_batch_1..5 and test_batch, each a pickled dict with 'data' (uint8
    [N, 3072], channel-major rows) and 'labels', plus batches.meta. Returns the arrays written."""
    folder = root / CIFAR10_DIR
    folder.mkdir(parents=True)
    written: dict[str, list] = {"train_x": [], "train_y": []}
    for i in range(1, 6):
        x, y = _images(per_batch, 3, 32, seed + i)
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": y.tolist(),
                                              "data": x.reshape(len(x), -1)})
        written["train_x"].append(x)
        written["train_y"].append(y)
    tx, ty = _images(test, 3, 32, seed + 100)
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": ty.tolist(),
                                    "data": tx.reshape(len(tx), -1)})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_LABELS, "num_cases_per_batch": per_batch,
                                      "num_vis": 3072})
    return {"train_x": np.concatenate(written["train_x"]), "train_y": np.concatenate(written["train_y"]),
            "test_x": tx, "test_y": ty}


def _pickle(path: Path, entry: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=2)  # the official files are Python 2 pickles


def register_cifar10(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    from torchvision.datasets import CIFAR10

    def md5(name: str) -> str:
        return hashlib.md5((root / CIFAR10_DIR / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[name, md5(name)] for name, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[name, md5(name)] for name, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(CIFAR10.meta["filename"])})


def write_mnist(root: Path, folder: str = "MNIST", train: int = 60, test: int = 20, size: int = 28,
                seed: int = 0) -> dict[str, np.ndarray]:
    """MNIST's (and Fashion-MNIST's, folder='FashionMNIST') raw idx files, uncompressed, big-endian:
    images magic 0x00000803 + [N, H, W], labels magic 0x00000801 + [N]."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, n, prefix in (("train", train, "train"), ("test", test, "t10k")):
        x, y = _images(n, 1, size, seed + len(split))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, size, size) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + y.astype(np.uint8).tobytes())
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def write_image_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 8, size: int = 40,
                       seed: int = 0, modes=("RGB", "L", "RGBA", "P")) -> None:
    """data.root/train/<class>/*.png and data.root/test/<class>/*.png. Images mix PIL modes (colour,
    grayscale, alpha, palette) and are not square, as real folders do; each class has its own mean
    brightness so a network can tell them apart."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                base = 40 + 80 * c
                pixels = np.clip(rng.normal(base, 20, size=(size, size + 8, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels, "RGB").convert(modes[i % len(modes)])
                image.save(folder / f"{i:03d}.png")
