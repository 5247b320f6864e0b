"""Tests for the synthetic SVHN-like house-number generator."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from ee_search.data import synthetic_svhn
from ee_search.data.synthetic_svhn import GENERATOR_VERSION, render_house_numbers


@pytest.fixture(scope="module")
def batch():
    return render_house_numbers(2000, 0, return_difficulty=True)


def _gray(images):
    return images.astype(np.float32).mean(axis=1) / 255.0


def test_shapes_dtypes_and_ranges(batch):
    images, labels, difficulty = batch
    assert images.shape == (2000, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (2000,) and labels.dtype == np.int64
    assert difficulty.shape == (2000,) and difficulty.dtype == np.float32
    assert labels.min() >= 0 and labels.max() <= 9
    assert difficulty.min() >= 0.0 and difficulty.max() <= 1.0
    assert isinstance(GENERATOR_VERSION, int)


def test_labels_balanced(batch):
    counts = np.bincount(batch[1], minlength=10)
    assert counts.min() >= 170 and counts.max() <= 230, counts


def test_difficulty_has_a_spread(batch):
    difficulty = batch[2]
    assert difficulty.min() < 0.05 and difficulty.max() > 0.95
    assert np.mean(difficulty < 1 / 3) > 0.25 and np.mean(difficulty > 2 / 3) > 0.25


def test_without_difficulty_returns_pair():
    out = render_house_numbers(5, 3)
    assert len(out) == 2
    images, labels = out
    np.testing.assert_array_equal(images, render_house_numbers(5, 3, return_difficulty=True)[0])
    assert render_house_numbers(1, 0)[0].shape == (1, 3, 32, 32)


def test_same_seed_same_output_different_seed_different_output():
    a = render_house_numbers(300, 7, return_difficulty=True)
    b = render_house_numbers(300, 7, return_difficulty=True)
    c = render_house_numbers(300, 8, return_difficulty=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


def test_deterministic_across_processes():
    """A fresh interpreter with another hash seed must produce the same bytes (no set/dict-order effects)."""
    # Load the module file directly, so the child skips the package's heavier imports.
    code = (
        "import hashlib, importlib.util, sys; "
        "spec = importlib.util.spec_from_file_location('synth', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "x, y, d = m.render_house_numbers(200, 11, return_difficulty=True); "
        "print(hashlib.sha256(x.tobytes() + y.tobytes() + d.tobytes()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    child = subprocess.run([sys.executable, "-c", code, synthetic_svhn.__file__], env=env, capture_output=True, text=True,
                           check=True)
    x, y, d = render_house_numbers(200, 11, return_difficulty=True)
    assert child.stdout.strip() == hashlib.sha256(x.tobytes() + y.tobytes() + d.tobytes()).hexdigest()


@pytest.mark.parametrize("n", [0, -5])
def test_rejects_non_positive_n(n):
    with pytest.raises(ValueError, match=f"n must be positive but got {n}"):
        render_house_numbers(n, 0)


@pytest.mark.parametrize("n", [2.5, "10", True])
def test_rejects_non_integer_n(n):
    with pytest.raises(TypeError, match="n must be an int"):
        render_house_numbers(n, 0)


def test_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed must be non-negative but got -1"):
        render_house_numbers(4, -1)
    with pytest.raises(TypeError, match="seed must be an int"):
        render_house_numbers(4, 1.5)


def test_variety_of_colours_polarity_and_contrast(batch):
    images, _, difficulty = batch
    gray = _gray(images)
    border = np.concatenate([gray[:, :2].reshape(len(gray), -1), gray[:, -2:].reshape(len(gray), -1)], 1).mean(1)
    centre = gray[:, 10:22, 12:20].mean(axis=(1, 2))
    light_on_dark = np.mean(centre > border)
    assert 0.3 < light_on_dark < 0.7  # measured 0.49
    corner_colour = images[:, :, :2, :2].reshape(len(images), 3, -1).mean(axis=2)
    assert corner_colour.std(axis=0).min() > 40  # measured ~77 per channel
    assert len({tuple(c) for c in (corner_colour // 32).astype(int)}) > 100  # measured 194 of 512 bins
    per_image_std = gray.std(axis=(1, 2))
    assert per_image_std.max() > 3 * per_image_std.min()
    # Harder samples have less contrast: rank correlation measured at -0.86.
    rank = lambda v: np.argsort(np.argsort(v))
    assert np.corrcoef(rank(difficulty), rank(per_image_std))[0, 1] < -0.5


def test_distractor_digits_reach_the_edges(batch):
    """Easy crops often show ink in the outer columns (neighbouring digits), but not always."""
    images, _, difficulty = batch
    gray = _gray(images[difficulty < 0.3])[:, 6:26]
    centre_range = np.ptp(gray[:, :, 11:21].reshape(len(gray), -1), axis=1)
    edge_range = np.maximum(np.ptp(gray[:, :, :3].reshape(len(gray), -1), axis=1),
                            np.ptp(gray[:, :, -3:].reshape(len(gray), -1), axis=1))
    with_edge_ink = np.mean(edge_range > 0.5 * centre_range)
    assert 0.25 < with_edge_ink < 0.85  # measured 0.49


def test_learnable_with_easy_and_hard_samples():
    """A linear model on polarity-normalised pixels beats chance, far more so on easy samples."""
    from sklearn.linear_model import LogisticRegression

    images, labels, difficulty = render_house_numbers(4000, 123, return_difficulty=True)
    gray = _gray(images)
    gray = (gray - gray.mean(axis=(1, 2), keepdims=True)) / (gray.std(axis=(1, 2), keepdims=True) + 1e-3)
    # Make the digit bright in every image, so one linear template fits both polarities.
    gray *= np.where(gray[:, 8:24, 10:22].mean(axis=(1, 2)) < 0, -1.0, 1.0)[:, None, None]
    feats = gray.reshape(-1, 16, 2, 16, 2).mean(axis=(2, 4)).reshape(len(gray), -1)
    model = LogisticRegression(C=0.01, max_iter=300).fit(feats[:3000], labels[:3000])
    correct = model.predict(feats[3000:]) == labels[3000:]
    d = difficulty[3000:]
    lo, hi = np.quantile(d, [1 / 3, 2 / 3])
    easy, hard = correct[d <= lo].mean(), correct[d >= hi].mean()
    # Measured: overall 0.63, easiest third 0.85, hardest third 0.39 (seeds 1-3: 0.61-0.63, 0.82-0.87, 0.35-0.39).
    assert correct.mean() > 0.45
    assert easy > 0.7
    assert hard > 0.2  # hard samples still carry signal
    assert easy - hard > 0.25
