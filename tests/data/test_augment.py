"""The batched augmentation against torchvision's per-sample transforms, with the same seeded draws:
crop offsets, rotation angles, output shapes and value ranges must agree."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ee_search.data.augment import BatchTransform
from ee_search.data.sources import IMAGENET_MEAN, IMAGENET_STD


def _images(n=24, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)  # NHWC store


def _reference(img_hwc: torch.Tensor, top: int, left: int, angle: float, crop: int) -> torch.Tensor:
    """torchvision, one image at a time: RandomCrop's crop, RandomRotation's rotate, Normalize."""
    chw = img_hwc.permute(2, 0, 1)
    out = TF.crop(chw, top, left, crop, crop)
    if angle:
        out = TF.rotate(out, angle, interpolation=InterpolationMode.NEAREST, fill=0)
    return TF.normalize(out.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def test_crop_only_matches_torchvision_exactly():
    images = _images()
    t = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 0.0, train=True)
    index = torch.arange(len(images))
    params = t.draw(len(index), torch.Generator().manual_seed(7))
    out = t.apply(images, index, params)
    assert out.shape == (24, 3, 28, 28)
    for i in range(len(images)):
        ref = _reference(images[i], int(params.top[i]), int(params.left[i]), 0.0, 28)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)


def test_crop_and_rotation_match_torchvision_per_sample():
    images = _images(n=32, seed=1)
    t = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 30.0, train=True)
    index = torch.arange(len(images))
    params = t.draw(len(index), torch.Generator().manual_seed(11))
    out = t.apply(images, index, params)
    assert params.angle.abs().max() <= 30.0 and params.angle.abs().max() > 5.0
    mismatched = 0
    for i in range(len(images)):
        ref = _reference(images[i], int(params.top[i]), int(params.left[i]), float(params.angle[i]), 28)
        mismatched += int((~torch.isclose(out[i], ref, atol=1e-5)).any(dim=0).sum())
    # Measured: 0 of 25,088 pixels differ (a sign error in the angle gives 82%). The slack allows only
    # for a source coordinate within float rounding of a pixel boundary on another platform.
    assert mismatched / (32 * 28 * 28) < 0.001


def test_offsets_cover_the_whole_range_and_eval_is_torchvision_center_crop():
    t = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 0.0, train=True)
    params = t.draw(4000, torch.Generator().manual_seed(0))
    assert set(params.top.tolist()) == set(range(5)) and set(params.left.tolist()) == set(range(5))
    images = _images(n=4)
    ev = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 30.0, train=False)
    out = ev(images, torch.arange(4))
    for i in range(4):
        ref = TF.normalize(TF.center_crop(images[i].permute(2, 0, 1), [28, 28]).float() / 255.0,
                           IMAGENET_MEAN, IMAGENET_STD)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)


def test_value_range_is_normalised_pixels_and_fill_is_black():
    t = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 45.0, train=True)
    white = torch.full((8, 32, 32, 3), 255, dtype=torch.uint8)
    out = t(white, torch.arange(8), torch.Generator().manual_seed(3))
    lo = torch.tensor([(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    assert ((out >= lo - 1e-5) & (out <= hi + 1e-5)).all()
    is_fill = torch.isclose(out, lo.expand_as(out), atol=1e-5).all(dim=1)
    assert is_fill.any() and (~is_fill).any()  # rotated corners are filled, the middle is not
    assert not is_fill[:, 12:16, 12:16].any()


def test_channels_last_output_is_the_same_tensor_values():
    images = _images(n=6)
    a = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 20.0, train=True, channels_last=True)
    b = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 20.0, train=True, channels_last=False)
    xa = a(images, torch.arange(6), torch.Generator().manual_seed(5))
    xb = b(images, torch.arange(6), torch.Generator().manual_seed(5))
    assert xa.is_contiguous(memory_format=torch.channels_last) and xb.is_contiguous()
    torch.testing.assert_close(xa, xb, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [{"crop": 40}, {"rotation": -1.0}, {"padding": -3}])
def test_bad_arguments_fail_at_once(bad):
    kwargs = {"crop": 28, "rotation": 0.0} | bad
    with pytest.raises(ValueError, match=str(list(bad.values())[0])):
        BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, train=True, **kwargs)


def test_padded_crop_matches_torchvision_random_crop_with_padding():
    """RandomCrop(16, padding=2) with fill 0: pad, then crop at the drawn offset (shifted by the padding)."""
    images = _images(n=32, size=16, seed=2)
    t = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 16, 16, 0.0, train=True, padding=2)
    index = torch.arange(len(images))
    params = t.draw(len(index), torch.Generator().manual_seed(4))
    out = t.apply(images, index, params)
    assert out.shape == (32, 3, 16, 16)
    for i in range(len(images)):
        padded = TF.pad(images[i].permute(2, 0, 1), [2], fill=0)
        ref = TF.normalize(TF.crop(padded, int(params.top[i]) + 2, int(params.left[i]) + 2, 16, 16).float() / 255.0,
                           IMAGENET_MEAN, IMAGENET_STD)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)
    many = t.draw(4000, torch.Generator().manual_seed(0))
    assert set(many.top.tolist()) == set(range(-2, 3)) and set(many.left.tolist()) == set(range(-2, 3))


def test_padding_is_for_training_only_and_changes_nothing_when_zero():
    images = _images(n=8, seed=3)
    ev = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 32, 0.0, train=False, padding=4)
    expected = TF.normalize(images.permute(0, 3, 1, 2).float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(ev(images, torch.arange(8)), expected, rtol=0, atol=1e-5)
    # padding=0 is today's transform: the same draws from the same generator, the same batch.
    today = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 10.0, train=True)
    unpadded = BatchTransform(IMAGENET_MEAN, IMAGENET_STD, 32, 28, 10.0, train=True, padding=0)
    a = today(images, torch.arange(8), torch.Generator().manual_seed(9))
    b = unpadded(images, torch.arange(8), torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
