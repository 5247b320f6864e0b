"""Seeded, stratified splits: validation is carved from the train split; the test split stays out."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, val), stratified by label, reproducible for a seed."""
    index = np.arange(len(labels))
    n_val = int(round(val_fraction * len(labels)))
    n_classes = len(np.unique(labels))
    if n_val < n_classes or len(labels) - n_val < n_classes:
        raise ValueError(
            f"val_fraction {val_fraction} of {len(labels)} samples leaves a split smaller than the "
            f"{n_classes} classes"
        )
    train, val = train_test_split(index, test_size=n_val, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(val)


def stratified_subset(index: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most `n` of `index`, keeping the class mix (for `data.train_subset`)."""
    if n >= len(index):
        return index
    keep, _ = train_test_split(index, train_size=n, stratify=labels[index], random_state=seed)
    return np.sort(keep)
