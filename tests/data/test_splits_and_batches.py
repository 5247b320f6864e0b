"""Splits are stratified, disjoint and seeded; device batches visit every sample once per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ee_search.config import AugmentConfig, DataConfig
from ee_search.data import build_batches, prepare_data
from ee_search.data.augment import BatchTransform
from ee_search.data.batches import DeviceBatches
from ee_search.data.splits import split_train_val, stratified_subset


def test_split_is_stratified_disjoint_and_reproducible():
    labels = np.repeat(np.arange(5), 40)
    train, val = split_train_val(labels, 0.25, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 200
    assert np.bincount(labels[val]).tolist() == [10] * 5
    again = split_train_val(labels, 0.25, seed=3)
    np.testing.assert_array_equal(val, again[1])
    assert not np.array_equal(val, split_train_val(labels, 0.25, seed=4)[1])


def test_split_too_small_for_the_classes_is_refused():
    with pytest.raises(ValueError, match="classes"):
        split_train_val(np.repeat(np.arange(10), 3), 0.1, seed=0)


def test_subset_keeps_class_mix():
    labels = np.repeat(np.arange(4), 50)
    keep = stratified_subset(np.arange(200), labels, 40, seed=0)
    assert np.bincount(labels[keep]).tolist() == [10] * 4


def _batches(n=10, batch=4, shuffle=True, drop_last=False, seed=0):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 2, 2, 1).contiguous()
    labels = torch.arange(n)
    transform = BatchTransform((0.0,), (1 / 255,), 2, None, 0.0, train=False)  # x = pixel value
    return DeviceBatches(images, labels, batch, transform, shuffle=shuffle, seed=seed, drop_last=drop_last)


def test_every_sample_once_per_epoch_with_labels_aligned():
    batches = _batches()
    for _ in range(2):
        seen = []
        for x, y in batches:
            assert torch.equal(x[:, 0, 0, 0].long(), y)  # image and label travel together
            seen += y.tolist()
        assert sorted(seen) == list(range(10))
    assert len(batches) == 3


def test_shuffle_is_seeded_and_epochs_differ():
    first = [y.tolist() for _, y in _batches(seed=1)]
    assert first == [y.tolist() for _, y in _batches(seed=1)]
    batches = _batches(seed=1)
    epoch1 = [y.tolist() for _, y in batches]
    epoch2 = [y.tolist() for _, y in batches]
    assert epoch1 != epoch2


def test_drop_last_drops_only_the_ragged_batch():
    batches = _batches(n=10, batch=4, drop_last=True)
    assert len(batches) == 2 and [len(y) for _, y in batches] == [4, 4]
    assert len(_batches(n=3, batch=4, drop_last=True)) == 1  # too few samples: keep what there is


def test_digits_bundle_has_one_channel_and_the_crop_size():
    data_cfg = DataConfig(dataset="digits", augment=AugmentConfig(crop=28, rotation=0))
    prepared = prepare_data(data_cfg, seed=0)
    bundle = build_batches(prepared, data_cfg.augment, torch.device("cpu"), 32, 64, seed=0)
    x, y = next(iter(bundle.train))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert bundle.channels == 1 and bundle.num_classes == 10 and bundle.input_size == 28
    assert len(prepared.test) == 360 and len(prepared.train) + len(prepared.val) == 1437
