"""The augmentation a study gets when its file has no `augment` section follows the dataset
(`config/datasets.py`): image_folder is cropped at the image's own size with an eighth of it as
padding (CIFAR's RandomCrop(32, padding=4), scaled), whatever data.image_size; every other dataset keeps
the seed's 28px crop without padding, so no existing study changes. An explicit crop still wins, and
one larger than the images is still refused in one line."""

from __future__ import annotations

import pytest
import torch

from ee_search.config import AugmentConfig, DataConfig, load_study_file
from ee_search.data import build_batches
from ee_search.data.augment import BatchTransform
from ee_search.data.prepare import _prepare
from ee_search.errors import UserInputError
from tests.conftest import write_study
from tests.data.dataset_files import write_image_folder


@pytest.mark.parametrize(("size", "padding"), [(16, 2), (64, 8)])
def test_a_minimal_image_folder_study_trains_on_padded_crops_of_its_own_size(workdir, size, padding):
    write_image_folder(workdir / "folder", per_class=12, size=size)
    study = write_study(workdir, f"name: s\ndata: {{dataset: image_folder, root: folder, image_size: {size}}}\n")
    data = load_study_file(study).config.data
    assert data.augment == AugmentConfig(crop=size, padding=padding, rotation=0.0)
    bundle = build_batches(_prepare(data, seed=0), data.augment, torch.device("cpu"), 4, 100, seed=0)
    x, _ = next(iter(bundle.train))
    assert x.shape == (4, 3, size, size) and bundle.input_size == size
    draws = bundle.train.transform.draw(2000, torch.Generator().manual_seed(0))
    assert set(draws.top.tolist()) == set(range(-padding, padding + 1))  # shifted by up to the padding
    x_test, _ = next(iter(bundle.test))
    assert x_test.shape[-2:] == (size, size)


@pytest.mark.parametrize("dataset", ["svhn", "synthetic_svhn", "digits", "cifar10", "mnist", "fashion_mnist"])
def test_every_other_dataset_keeps_the_seed_recipe(dataset):
    assert DataConfig(dataset=dataset).augment == AugmentConfig(crop=28, padding=0, rotation=0.0)


def test_synthetic_svhn_batches_are_the_ones_of_before(workdir):
    """Before the defaults followed the dataset, the train transform was BatchTransform(32, crop 28, no
    rotation, no padding): the same generator must give the same batch, bit for bit."""
    data = DataConfig(val_fraction=0.25, synthetic={"train_size": 120, "test_size": 20})
    prepared = _prepare(data, seed=0)
    bundle = build_batches(prepared, data.augment, torch.device("cpu"), 8, 100, seed=0)
    src = prepared.source
    before = BatchTransform(src.mean, src.std, 32, 28, 0.0, train=True)
    images = torch.from_numpy(prepared.train.images.transpose(0, 2, 3, 1).copy())
    index = torch.arange(8)
    now = bundle.train.transform(images, index, torch.Generator().manual_seed(1))
    torch.testing.assert_close(now, before(images, index, torch.Generator().manual_seed(1)), rtol=0, atol=0)


def test_the_file_overrides_each_default_field_on_its_own(workdir):
    write_image_folder(workdir / "folder", per_class=4, size=16)
    study = write_study(workdir, "name: s\ndata: {dataset: image_folder, root: folder, image_size: 16,\n"
                                 "       augment: {crop: 12, rotation: 5}}\n")
    assert load_study_file(study).config.data.augment == AugmentConfig(crop=12, padding=2, rotation=5.0)
    study = write_study(workdir, "name: s\ndata: {dataset: svhn, augment: {padding: 4}}\n")
    assert load_study_file(study).config.data.augment == AugmentConfig(crop=28, padding=4, rotation=0.0)


def test_an_explicit_crop_larger_than_the_images_is_refused_in_the_same_line(workdir):
    write_image_folder(workdir / "folder", per_class=4, size=16)
    study = write_study(workdir, "name: s\ndata: {dataset: image_folder, root: folder, image_size: 16, "
                                 "augment: {crop: 20}}\n")
    with pytest.raises(UserInputError) as info:
        load_study_file(study)
    assert str(info.value) == (f"{study}: data.augment.crop: 20 is larger than the 16px image_folder images: "
                               "use at most 16, or null for no crop")
