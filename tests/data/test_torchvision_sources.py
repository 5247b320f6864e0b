"""CIFAR-10, MNIST, Fashion-MNIST and image folders through torchvision's own dataset classes, on tiny
files the tests write in each real format (tests/data/dataset_files.py): what comes back is exactly
what was written, as uint8 NCHW with the dataset's channels; missing or malformed files are one line
naming data.root; the schema checks crops and fields against each dataset's shape."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from ee_search.config import DataConfig, load_study_file
from ee_search.config.datasets import DATASETS
from ee_search.data import build_batches
from ee_search.data.prepare import _prepare
from ee_search.data.image_folder import load_image_folder
from ee_search.data.sources import CIFAR10_MEAN, MNIST_MEAN, load_cifar10, load_mnist
from ee_search.errors import UserInputError
from tests.conftest import write_study
from tests.data.dataset_files import register_cifar10, write_cifar10, write_image_folder, write_mnist


def test_cifar10_reads_the_pickle_batches_through_torchvision(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, per_batch=6, test=10)
    register_cifar10(monkeypatch, tmp_path)
    data = load_cifar10(str(tmp_path), download=False)
    assert data.train.images.shape == (30, 3, 32, 32) and data.train.images.dtype == np.uint8
    np.testing.assert_array_equal(data.train.images, written["train_x"])  # batches 1..5 in order
    np.testing.assert_array_equal(data.train.labels, written["train_y"])
    np.testing.assert_array_equal(data.test.images, written["test_x"])
    assert data.num_classes == 10 and data.channels == 3 and data.mean == CIFAR10_MEAN


def test_cifar10_files_that_fail_their_md5_are_reported(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    register_cifar10(monkeypatch, tmp_path)
    with (tmp_path / "cifar-10-batches-py" / "data_batch_3").open("ab") as f:
        f.write(b"corruption")
    with pytest.raises(UserInputError) as info:
        load_cifar10(str(tmp_path), download=False)
    assert info.value.field == "data.root" and "md5" in info.value.message
    assert "cifar-10-batches-py" in info.value.message and str(tmp_path) in info.value.message


@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_reads_the_idx_files_as_one_channel(tmp_path, dataset, folder):
    written = write_mnist(tmp_path, folder, train=30, test=12)
    data = load_mnist(dataset, str(tmp_path), download=False)
    assert data.train.images.shape == (30, 1, 28, 28) and data.test.images.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(data.train.images, written["train_x"])
    np.testing.assert_array_equal(data.test.labels, written["test_y"])
    assert data.name == dataset and data.channels == 1 and len(data.mean) == len(data.std) == 1
    assert (data.mean == MNIST_MEAN) == (dataset == "mnist")  # each its own standard statistics


def test_mnist_missing_files_say_which_and_where(tmp_path):
    write_mnist(tmp_path, "FashionMNIST")  # the other dataset's folder does not count
    with pytest.raises(UserInputError) as info:
        load_mnist("mnist", str(tmp_path), download=False)
    assert info.value.field == "data.root"
    assert "t10k-images-idx3-ubyte" in info.value.message and str(tmp_path / "MNIST" / "raw") in info.value.message


def test_mnist_of_the_wrong_size_is_one_line_on_data_root(tmp_path):
    write_mnist(tmp_path, "MNIST", size=32)
    with pytest.raises(UserInputError) as info:
        _prepare(DataConfig(dataset="mnist", root=str(tmp_path)), seed=0)
    assert info.value.field == "data.root" and "should be 1x28x28" in info.value.message and "1x32x32" in info.value.message


def test_image_folder_resizes_crops_and_converts_every_mode_to_rgb(tmp_path):
    write_image_folder(tmp_path, per_class=8, size=40)  # 40x48 images in RGB, L, RGBA and P modes
    data = load_image_folder(str(tmp_path), 24)
    assert data.train.images.shape == (24, 3, 24, 24) and data.test.images.shape == (12, 3, 24, 24)
    assert data.num_classes == 3 and data.train.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8  # sorted names
    # The written classes differ in brightness (40, 120, 200): the loaded images keep that order.
    means = [data.train.images[data.train.labels == c].mean() for c in range(3)]
    assert means[0] < means[1] < means[2] and abs(means[1] - 120) < 10
    # mean/std are the train split's, per channel.
    pixels = data.train.images.astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)))


def test_image_folder_centre_crops_after_resizing_the_short_side(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        pixels = np.zeros((20, 40, 3), dtype=np.uint8)
        pixels[:, 8:32] = 255  # white in the middle of a black 20x40 image, black at both ends
        Image.fromarray(pixels).save(tmp_path / split / "a" / "x.png")
    data = load_image_folder(str(tmp_path), 10)  # 20x40 -> 10x20 -> centre 10x10: black ends cut off
    assert data.train.images.shape == (1, 3, 10, 10) and data.train.images.min() == 255


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda root: (root / "test" / "owl").rename(root / "test" / "bat"), "only in train/: ['owl'], only in test/: ['bat']"),
        (lambda root: [p.unlink() for p in (root / "train" / "dog").iterdir()], "Found no valid file for the classes dog"),
        (lambda root: (root / "test" / "cat" / "000.png").write_bytes(b"not a png"), "cannot read"),
        (lambda root: shutil.rmtree(root / "test"), "test/ is missing"),
    ],
    ids=["different_classes", "empty_class", "unreadable_file", "no_test_split"],
)
def test_image_folder_mistakes_are_one_line_on_data_root(tmp_path, damage, words):
    root = tmp_path / "imgs"
    write_image_folder(root, per_class=4)
    damage(root)
    with pytest.raises(UserInputError) as info:
        load_image_folder(str(root), 16)
    assert info.value.field == "data.root" and words in info.value.message


def test_every_dataset_declares_the_shape_its_loader_gives(tmp_path, monkeypatch):
    """config/datasets.py is what load time checks crops and user models against: it must be true."""
    write_cifar10(tmp_path)
    register_cifar10(monkeypatch, tmp_path)
    write_mnist(tmp_path, "MNIST")
    write_mnist(tmp_path, "FashionMNIST")
    write_image_folder(tmp_path / "folder")
    for dataset in ("cifar10", "mnist", "fashion_mnist", "digits", "image_folder"):
        root = tmp_path / "folder" if dataset == "image_folder" else tmp_path
        prepared = _prepare(DataConfig(dataset=dataset, root=str(root), val_fraction=0.25), seed=1)
        spec = DATASETS[dataset]
        assert prepared.source.channels == spec.channels, dataset
        assert prepared.source.image_size == (spec.image_size or 32), dataset
        assert prepared.source.num_classes == (spec.num_classes or 3), dataset


def test_mnist_batches_take_the_default_crop_of_28(tmp_path):
    """The SVHN recipe's crop 28 is the whole of a 28x28 digit: training still rotates, evaluation is
    the image itself, normalised with MNIST's statistics."""
    import torch

    write_mnist(tmp_path, "MNIST", train=40, test=10)
    cfg = DataConfig(dataset="mnist", root=str(tmp_path), val_fraction=0.25, augment={"crop": 28, "rotation": 15})
    prepared = _prepare(cfg, seed=0)
    bundle = build_batches(prepared, cfg.augment, torch.device("cpu"), 10, 100, seed=0)
    assert bundle.input_size == 28 and bundle.channels == 1
    x, _ = next(iter(bundle.test))
    expected = (torch.from_numpy(prepared.test.images).float() / 255 - MNIST_MEAN[0]) / 0.3081
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ("{dataset: mnist, augment: {crop: 32}}", "data.augment.crop", "larger than the 28px mnist images"),
        ("{dataset: image_folder, image_size: 24, augment: {crop: 28}}", "data.augment.crop",
         "larger than the 24px image_folder images"),
        ("{dataset: cifar10, image_size: 64}", "data.image_size", "applies to image_folder only"),
        ("{dataset: image_folder, download: true}", "data.download", "nothing to download"),
        ("{dataset: cifar100}", "data.dataset", "image_folder"),
    ],
)
def test_data_fields_are_checked_against_the_dataset_at_load(workdir, data, field, words):
    study = write_study(workdir, f"name: s\ndata: {data}\n")
    with pytest.raises(UserInputError) as info:
        load_study_file(study)
    assert info.value.field == field and words in info.value.message
