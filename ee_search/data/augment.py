"""Batched crop + rotation + normalisation, done with tensor ops on the device that holds the data.

Semantics are torchvision's, per sample: `RandomCrop(crop, padding)` (zero padding) then `RandomRotation(rotation)` with
nearest interpolation and fill 0, then `Normalize(mean, std)`; evaluation is `CenterCrop(crop)` then
`Normalize` (no padding). Written by hand because torchvision's transforms work one image (or one shared random
draw) at a time. With nearest interpolation, crop-then-rotate is pure index arithmetic: for every
output pixel we compute torchvision's inverse rotation, round to the source pixel, and gather it from
the uint8 images. So there is no float copy of the full-size batch and no grid_sample, and normalising
fuses into the one conversion to float.

Images are stored NHWC (SVHN's own HWC layout), so the gathered batch is channels_last for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentParams:
    top: torch.Tensor  # int64 [B] crop offsets
    left: torch.Tensor  # int64 [B]
    angle: torch.Tensor  # float32 [B] degrees, counter-clockwise as in torchvision


class BatchTransform:
    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        image_size: int,
        crop: int | None,
        rotation: float,
        train: bool,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        padding: int = 0,
    ) -> None:
        if crop is not None and not 0 < crop <= image_size:
            raise ValueError(f"crop must be in (0, {image_size}] but got {crop}")
        if padding < 0:
            raise ValueError(f"padding cannot be negative but got {padding}")
        if rotation < 0:
            raise ValueError(f"rotation cannot be negative but got {rotation}")
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {mean} vs {std}")
        self.image_size = image_size
        self.size = crop or image_size
        self.rotation = float(rotation) if train else 0.0
        self.padding = int(padding) if train else 0  # torchvision's recipes pad the random crop only
        self.train = train
        self.channels_last = channels_last
        device = torch.device(device)
        std_t = torch.tensor(std, dtype=torch.float32, device=device)
        # x_norm = (u8 / 255 - mean) / std = u8 * scale + shift: one fused multiply-add per pixel.
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32, device=device) / std_t
        # Output pixel centres relative to the crop centre, as torchvision's _affine_grid lays them out.
        half = (self.size - 1) / 2.0
        coords = torch.arange(self.size, dtype=torch.float32, device=device) - half
        self._yo = coords.view(1, -1, 1)
        self._xo = coords.view(1, 1, -1)
        self._centre = (image_size - self.size) / 2.0

    @property
    def output_size(self) -> int:
        return self.size

    def draw(self, n: int, generator: torch.Generator | None) -> AugmentParams:
        device = self.scale.device
        span = self.image_size + 2 * self.padding - self.size + 1
        if self.train:
            # Offsets into the padded image, shifted back to the unpadded one (negative: in the padding).
            top = torch.randint(0, span, (n,), device=device, generator=generator) - self.padding
            left = torch.randint(0, span, (n,), device=device, generator=generator) - self.padding
        else:
            # torchvision's CenterCrop rounds the offset: int(round((32 - 28) / 2)) = 2.
            offset = int(round(self._centre))
            top = torch.full((n,), offset, dtype=torch.int64, device=device)
            left = top.clone()
        if self.rotation > 0:
            u = torch.rand(n, device=device, generator=generator)
            angle = (2.0 * u - 1.0) * self.rotation
        else:
            angle = torch.zeros(n, device=device)
        return AugmentParams(top, left, angle)

    def __call__(
        self, images: torch.Tensor, index: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """`images`: uint8 [N, H, W, C] on the device; `index`: which samples form the batch."""
        return self.apply(images, index, self.draw(len(index), generator))

    def apply(self, images: torch.Tensor, index: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        n, h, w, c = images.shape
        b, size = len(index), self.size
        if self.rotation > 0:
            rows, cols, valid = self._rotated_source(params.angle)
        else:
            rows = torch.arange(size, device=images.device).view(1, -1, 1).expand(b, size, size)
            cols = torch.arange(size, device=images.device).view(1, 1, -1).expand(b, size, size)
            valid = None
        rows = rows + params.top.view(-1, 1, 1)
        cols = cols + params.left.view(-1, 1, 1)
        if self.padding > 0:  # pixels of the zero padding: gather any pixel, then zero them as fill
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            valid = inside if valid is None else valid & inside
            rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        flat = (index.view(-1, 1, 1) * (h * w) + rows * w + cols).reshape(-1)
        pixels = images.reshape(n * h * w, c).index_select(0, flat).view(b, size, size, c)
        if valid is not None:
            pixels = pixels * valid.unsqueeze(-1).to(pixels.dtype)  # fill 0, as torchvision's default
        x = torch.addcmul(self.shift, pixels.to(torch.float32), self.scale)  # [B, S, S, C]
        x = x.permute(0, 3, 1, 2)  # NCHW view of channels_last memory
        return x if self.channels_last else x.contiguous()

    def _rotated_source(self, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # torchvision.rotate samples output (x, y) from R(-angle)^-1 (x, y) about the centre:
        # xs = cos(r) x + sin(r) y, ys = -sin(r) x + cos(r) y, with r = radians(-angle).
        r = torch.deg2rad(-angle).view(-1, 1, 1)
        cos, sin = torch.cos(r), torch.sin(r)
        half = (self.size - 1) / 2.0
        xs = cos * self._xo + sin * self._yo + half
        ys = -sin * self._xo + cos * self._yo + half
        # grid_sample's nearest mode rounds half to even; torch.round does the same.
        cols = torch.round(xs).to(torch.int64)
        rows = torch.round(ys).to(torch.int64)
        valid = (cols >= 0) & (cols < self.size) & (rows >= 0) & (rows < self.size)
        return rows.clamp_(0, self.size - 1), cols.clamp_(0, self.size - 1), valid

