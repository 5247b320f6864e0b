"""Offline, deterministic generator of SVHN-like 32x32 house-number crops.

The real SVHN cannot be downloaded in every environment where demos, tests and
benchmarks run, so this module renders a stand-in with the same layout as
``torchvision.datasets.SVHN`` (uint8 CHW images, labels 0..9): one centred
digit, neighbouring digits cut off at the edges, random colours and
backgrounds, blur and noise.

Early-exit networks only have something to decide when some samples are easy
and some hard, so every sample gets a difficulty in [0, 1] that scales all of
its nuisances together (contrast, blur, noise, digit size, distractor
proximity, rotation, clutter).  Glyphs come from Pillow's bundled FreeType font
(never system fonts, which differ between machines) plus two hand-defined
families (seven-segment and rounded pen strokes), all then sheared, stretched
and rotated per sample.
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

GENERATOR_VERSION = 1

_SIZE = 32
_SS = 2  # glyphs are rasterised at 2x and box-filtered down, for anti-aliasing
_CANVAS = _SIZE * _SS
# Chunking bounds the float64 working set to tens of MB; the noise stream is drawn per chunk, so
# changing _CHUNK changes the output (bump GENERATOR_VERSION).
_CHUNK = 512
_REF_H = 64  # ink height of the hand-drawn glyphs; font glyphs are rendered at their own size

# (kind, variant) pairs; each variant looks different enough to count as a font.
_STYLES = (
    ("font", (56, 0)), ("font", (56, 3)), ("font", (28, 1)), ("font", (14, 0)),
    ("seg", 6), ("seg", 9), ("seg", 12),
    ("pen", 5), ("pen", 8), ("pen", 11),
)
# Seven-segment lit segments per digit (a=top, then clockwise, g=middle).
_SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg")


def _arc(cx, cy, rx, ry, t0, t1, steps=24):
    t = np.radians(np.linspace(t0, t1, steps))  # image coords: y grows downwards
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def _pen_strokes(digit):
    """Strokes of a rounded hand-drawn digit in a unit box (x right, y down)."""
    if digit == 9:  # a 6 turned upside down
        return [[(1 - x, 1 - y) for x, y in s] for s in _pen_strokes(6)]
    return {
        0: [_arc(0.5, 0.5, 0.4, 0.5, 0, 360, 40)],
        1: [[(0.22, 0.22), (0.55, 0.0), (0.55, 1.0)]],
        2: [_arc(0.5, 0.28, 0.38, 0.28, 195, 375) + [(0.08, 1.0), (0.95, 1.0)]],
        3: [_arc(0.5, 0.25, 0.36, 0.25, 200, 450), _arc(0.5, 0.73, 0.42, 0.27, 270, 520)],
        4: [[(0.72, 1.0), (0.72, 0.0), (0.05, 0.68), (0.98, 0.68)]],
        5: [[(0.88, 0.0), (0.22, 0.0), (0.16, 0.44)] + _arc(0.5, 0.68, 0.4, 0.32, 225, 500)],
        6: [_arc(0.72, 0.7, 0.6, 0.7, 265, 180), _arc(0.5, 0.7, 0.38, 0.3, 0, 360, 32)],
        7: [[(0.05, 0.0), (0.95, 0.0), (0.35, 1.0)]],
        8: [_arc(0.5, 0.24, 0.33, 0.24, 0, 360, 32), _arc(0.5, 0.73, 0.41, 0.27, 0, 360, 32)],
    }[digit]


def _draw_seg(draw, digit, t):
    w, h = 26 + t, _REF_H
    o = 2 + t // 2  # margin so thick strokes stay inside the image
    xl, xr, yt, ym, yb = o, o + w, o, o + h // 2, o + h
    g = 1 + t * 0.15  # gaps between segments make the look unmistakably digital
    spans = {
        "a": ((xl + g, yt), (xr - g, yt)), "g": ((xl + g, ym), (xr - g, ym)), "d": ((xl + g, yb), (xr - g, yb)),
        "f": ((xl, yt + g), (xl, ym - g)), "b": ((xr, yt + g), (xr, ym - g)),
        "e": ((xl, ym + g), (xl, yb - g)), "c": ((xr, ym + g), (xr, yb - g)),
    }
    for s in _SEGMENTS[digit]:
        (x0, y0), (x1, y1) = spans[s]
        if y0 == y1:  # hexagonal segment ends, like a real display
            pts = [(x0, y0), (x0 + t / 2, y0 - t / 2), (x1 - t / 2, y0 - t / 2), (x1, y0),
                   (x1 - t / 2, y0 + t / 2), (x0 + t / 2, y0 + t / 2)]
        else:
            pts = [(x0, y0), (x0 + t / 2, y0 + t / 2), (x0 + t / 2, y1 - t / 2), (x1, y1),
                   (x0 - t / 2, y1 - t / 2), (x0 - t / 2, y0 + t / 2)]
        draw.polygon(pts, fill=255)


@functools.cache
def _glyph(style: int, digit: int) -> Image.Image:
    """Ink-cropped 'L' image of one digit; rendering is deterministic, so caching is safe."""
    kind, var = _STYLES[style]
    im = Image.new("L", (160, 160))
    draw = ImageDraw.Draw(im)
    if kind == "font":
        size, stroke = var
        font = ImageFont.load_default(size=size)
        draw.text((80, 80), str(digit), font=font, fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255)
    elif kind == "seg":
        _draw_seg(draw, digit, var)
    else:
        for stroke in _pen_strokes(digit):
            pts = [(10 + x * 40, 10 + y * _REF_H) for x, y in stroke]
            draw.line(pts, fill=255, width=var, joint="curve")
            for x, y in (pts[0], pts[-1]):  # round caps, as a pen leaves them
                draw.ellipse((x - var / 2, y - var / 2, x + var / 2, y + var / 2), fill=255)
    return im.crop(im.getbbox())


def _check_args(n, seed):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int but got {n!r}")
    if n <= 0:
        raise ValueError(f"n must be positive but got {n}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int but got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative but got {seed}")


def _place(glyph, height, xscale, shear, rot, cx, cy, dx):
    """`glyph` at ink height `height` on a blank canvas, sheared, stretched, rotated about (cx, cy).

    Forward map: canvas = (cx, cy) + R(rot) @ ([dx, 0] + s * [[xscale, -shear], [0, 1]] @ (g - g_c)).
    PIL wants its inverse, written out by hand because numpy is slow for 2x2 matrices.
    PIL's affine coordinates are continuous (pixel centres at +0.5) on both sides, so no offsets.
    """
    gw, gh = glyph.size
    s = gh / height
    cr, sr = math.cos(rot), math.sin(rot)
    a, b = s * (cr - shear * sr) / xscale, s * (sr + shear * cr) / xscale
    d, e = -s * sr, s * cr
    ox, oy = cx + cr * dx, cy + sr * dx
    data = (a, b, gw / 2 - a * ox - b * oy, d, e, gh / 2 - d * ox - e * oy)
    return glyph.transform((_CANVAS, _CANVAS), Image.AFFINE, data, resample=Image.BILINEAR)


def _blur_matrices(sigma):
    """Per-sample 1-D Gaussian blur as (k, 32, 32) matrices, so blurring is two batched matmuls."""
    idx = np.arange(_SIZE, dtype=np.float64)
    d2 = (idx[:, None] - idx[None, :]) ** 2
    b = np.exp(-d2[None] / (2 * sigma[:, None, None] ** 2))
    return b / b.sum(axis=2, keepdims=True)  # renormalised rows keep borders from darkening


def _backgrounds(rng, k, kind, amp):
    """Zero-centred luminance textures (k, 32, 32): flat, gradient, low-frequency blotches, bricks."""
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE] / (_SIZE - 1) - 0.5
    phi = rng.uniform(0, 2 * np.pi, k)
    tex = (np.cos(phi)[:, None, None] * xx + np.sin(phi)[:, None, None] * yy) * 2
    tex *= (kind == 1)[:, None, None]
    # Low-frequency noise: a random 5x5 grid bilinearly upsampled.
    grid = rng.standard_normal((k, 5, 5))
    up = np.maximum(0, 1 - np.abs(np.linspace(0, 4, _SIZE)[:, None] - np.arange(5)[None]))
    tex += np.where((kind == 2)[:, None, None], up @ grid @ up.T * 0.7, 0)
    # Bricks: dark mortar lines plus a random shade per brick.
    bh = rng.integers(5, 11, k)[:, None, None]
    bw = bh * rng.uniform(1.8, 3.0, k)[:, None, None]
    y = np.arange(_SIZE)[None, :, None] + rng.integers(0, 10, k)[:, None, None]
    x = np.arange(_SIZE)[None, None, :] + rng.integers(0, 30, k)[:, None, None]
    row = y // bh
    xs = x + (row % 2) * bw / 2
    col = (xs // bw).astype(np.int64) % 8
    shade = rng.uniform(-0.4, 0.4, (k, 8 * 8))
    brick = np.take_along_axis(shade, ((row % 8) * 8 + col).reshape(k, -1), axis=1).reshape(k, _SIZE, _SIZE)
    mortar = ((y % bh) == 0) | ((xs % bw) < 1)
    tex += np.where((kind == 3)[:, None, None], np.where(mortar, -1.2, brick), 0)
    return tex * amp[:, None, None]


def _draw_parameters(rng: np.random.Generator, n: int) -> SimpleNamespace:
    """Every per-sample parameter, drawn up front in a fixed order, so the output depends only on
    (n, seed); the glyph ones as plain Python lists (the per-glyph loop is much faster without numpy
    scalars)."""
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)  # exactly balanced
    diff = rng.random(n).astype(np.float32)

    def jit(lo, hi):  # independent spread on top of difficulty, so samples of equal difficulty differ
        return rng.uniform(lo, hi, n)

    style = rng.integers(0, len(_STYLES), n)
    height = np.clip(26.0 - 11.0 * diff + rng.normal(0, 2.0, n), 14, 28) * _SS
    xscale = rng.uniform(0.75, 1.3, n)
    shear = np.where(rng.random(n) < 0.35, rng.uniform(0.1, 0.3, n), 0.0)
    rot = np.radians(rng.normal(0, 1, n) * (2 + 8 * diff))
    centre = _CANVAS / 2 + rng.normal(0, 1, (n, 2)) * (0.5 + 2.0 * diff)[:, None] * _SS
    has_nb = rng.random((n, 2)) < (0.35 + 0.5 * diff)[:, None]
    nb_digit = rng.integers(0, 10, (n, 2))
    gap = np.clip(0.32 - 0.3 * diff + rng.normal(0, 0.06, n), 0.0, 0.5)
    contrast = np.clip(0.75 - 0.5 * diff + jit(-0.07, 0.07), 0.2, 0.9)
    dark_on_light = rng.random(n) < 0.5
    bg_level = rng.uniform(0, 1, n)
    tints = rng.uniform(-0.2, 0.2, (n, 2, 3))
    tints -= tints.mean(axis=2, keepdims=True)  # hue only: luminance contrast stays as drawn
    blur = np.clip(0.25 + 1.0 * diff * jit(0.6, 1.4), 0.25, 1.3)
    noise = 0.01 + 0.045 * diff * jit(0.6, 1.4)
    bg_kind = rng.choice(4, n, p=[0.3, 0.25, 0.25, 0.2])
    bg_amp = contrast * (0.1 + 0.3 * diff * jit(0.5, 1.5))
    light = rng.uniform(-0.15, 0.15, (n, 2))

    # Foreground/background luminances at the requested contrast, kept inside [0, 1].
    lo = bg_level * (1 - contrast)
    lum = np.stack([lo + contrast, lo], 1)  # (light, dark)
    fg_l = np.where(dark_on_light, lum[:, 1], lum[:, 0])
    bg_l = np.where(dark_on_light, lum[:, 0], lum[:, 1])
    cols = np.clip(np.stack([bg_l, fg_l], 1)[:, :, None] + tints, 0, 1)

    glyphs = {name: value.tolist() for name, value in (
        ("labels_l", labels), ("style", style), ("height", height), ("xscale", xscale), ("shear", shear),
        ("rot", rot), ("centre", centre), ("has_nb", has_nb), ("nb_digit", nb_digit), ("gap", gap))}
    return SimpleNamespace(labels=labels, diff=diff, cols=cols, blur=blur, noise=noise, bg_kind=bg_kind,
                           bg_amp=bg_amp, light=light, **glyphs)


def _glyph_sheet(p: SimpleNamespace, sl: slice) -> np.ndarray:
    """The chunk's digits (centre and neighbours) as coverage masks in [0, 1], (k, 32, 32)."""
    k = sl.stop - sl.start
    sheet = Image.new("L", (_CANVAS, _CANVAS * k))  # one array conversion per chunk, not per glyph
    for j, i in enumerate(range(sl.start, sl.stop)):
        glyph = _glyph(p.style[i], p.labels_l[i])
        h, xs, args = p.height[i], p.xscale[i], (p.shear[i], p.rot[i], p.centre[i][0], p.centre[i][1])
        out = _place(glyph, h, xs, *args, 0.0)
        half = 0.5 * glyph.size[0] * h / glyph.size[1] * xs
        for side, sign in ((0, -1.0), (1, 1.0)):
            if p.has_nb[i][side]:
                nb = _glyph(p.style[i], p.nb_digit[i][side])
                dx = sign * (half + 0.5 * nb.size[0] * h / nb.size[1] * xs + p.gap[i] * h)
                out = ImageChops.lighter(out, _place(nb, h, xs, *args, dx))
        sheet.paste(out, (0, j * _CANVAS))
    return np.asarray(sheet.reduce(_SS), dtype=np.float64).reshape(k, _SIZE, _SIZE) / 255.0


def _render_chunk(rng: np.random.Generator, p: SimpleNamespace, sl: slice) -> np.ndarray:
    """One chunk's images: glyphs over textured backgrounds, blurred, unevenly lit, noisy; uint8."""
    k = sl.stop - sl.start
    m = _glyph_sheet(p, sl)
    tex = _backgrounds(rng, k, p.bg_kind[sl], p.bg_amp[sl])
    bg = p.cols[sl, 0, :, None, None] + tex[:, None]
    img = bg + (p.cols[sl, 1, :, None, None] - bg) * m[:, None]
    bmat = _blur_matrices(p.blur[sl])[:, None]
    # float64 keeps BLAS/SIMD rounding differences between machines far from the uint8 rounding step.
    img = bmat @ img @ bmat.swapaxes(-1, -2)
    # Uneven lighting across the whole crop, as on a photographed facade.
    ramp = np.linspace(-1, 1, _SIZE)
    lx, ly = p.light[sl, 0, None, None, None], p.light[sl, 1, None, None, None]
    img *= 1 + lx * ramp[None, None, None, :] + ly * ramp[None, None, :, None]
    img += rng.standard_normal(img.shape) * p.noise[sl, None, None, None]
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_house_numbers(n: int, seed: int, *, return_difficulty: bool = False):
    """Return (images, labels) or (images, labels, difficulty).

    images: np.ndarray uint8, shape (n, 3, 32, 32) (CHW, like torchvision.datasets.SVHN.data)
    labels: np.ndarray int64, shape (n,), values 0..9 (the centre digit; SVHN's '10' is 0 as in torchvision)
    difficulty: np.ndarray float32, shape (n,), in [0, 1], the generator's own nuisance level for each sample
    """
    _check_args(n, seed)
    rng = np.random.default_rng(seed)
    p = _draw_parameters(rng, n)
    images = np.empty((n, 3, _SIZE, _SIZE), np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        images[sl] = _render_chunk(rng, p, sl)
    labels, diff = p.labels, p.diff
    if return_difficulty:
        return images, labels, diff
    return images, labels
