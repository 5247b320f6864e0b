"""Real SVHN loading through `torchvision.datasets.SVHN`, on tiny files in SVHN's own `.mat` layout
(X: 32x32x3xN uint8, y: Nx1 with label 10 for the digit 0) written by the test with scipy.

torchvision checks every file's md5 against its table; the test registers the md5 of the file it
wrote there (data, not behaviour), so the production path runs unchanged: integrity check, loadmat,
the 10 -> 0 relabelling and the HWCN -> NCHW transpose."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from torchvision.datasets import SVHN

from ee_search.config import DataConfig
from ee_search.data.prepare import _prepare
from ee_search.data.sources import load_svhn
from ee_search.errors import UserInputError


def _write_mat(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)  # what we expect back
    digits = np.arange(n) % 10
    scipy.io.savemat(path, {"X": images.transpose(2, 3, 1, 0), "y": np.where(digits == 0, 10, digits).reshape(-1, 1)})
    return images, digits


def _register(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    table = {k: list(v) for k, v in SVHN.split_list.items()}
    for split in ("train", "test"):
        table[split][2] = hashlib.md5((root / table[split][1]).read_bytes()).hexdigest()
    monkeypatch.setattr(SVHN, "split_list", table)


@pytest.fixture
def svhn_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "svhn"
    root.mkdir()
    train = _write_mat(root / "train_32x32.mat", 60, seed=0)
    test = _write_mat(root / "test_32x32.mat", 20, seed=1)
    _register(monkeypatch, root)
    return root, train, test


def test_loads_through_torchvision_with_zero_relabelled(svhn_root):
    root, (train_x, train_y), (test_x, test_y) = svhn_root
    data = load_svhn(str(root), download=False)
    assert data.train.images.shape == (60, 3, 32, 32) and data.train.images.dtype == np.uint8
    np.testing.assert_array_equal(data.train.images, train_x)
    np.testing.assert_array_equal(data.train.labels, train_y)
    np.testing.assert_array_equal(data.test.images, test_x)
    assert set(data.train.labels) == set(range(10))  # SVHN's 10 became 0
    assert data.num_classes == 10 and data.channels == 3


def test_train_val_split_is_stratified_and_test_untouched(svhn_root):
    root, _, (test_x, _) = svhn_root
    prepared = _prepare(DataConfig(dataset="svhn", root=str(root), val_fraction=1 / 3), seed=5)
    assert len(prepared.train) == 40 and len(prepared.val) == 20
    assert np.bincount(prepared.val.labels, minlength=10).tolist() == [2] * 10
    np.testing.assert_array_equal(prepared.test.images, test_x)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(UserInputError) as info:
        load_svhn(str(tmp_path / "nowhere"), download=False)
    assert info.value.field == "data.root"
    assert "train_32x32.mat" in info.value.message and "test_32x32.mat" in info.value.message
    assert str(tmp_path / "nowhere") in info.value.message


def test_a_file_that_fails_its_md5_is_reported(svhn_root, monkeypatch):
    root, _, _ = svhn_root
    with (root / "train_32x32.mat").open("ab") as f:
        f.write(b"corruption")
    with pytest.raises(UserInputError, match="md5"):
        load_svhn(str(root), download=False)
