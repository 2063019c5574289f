"""Synthetic "photographed digits": MNIST test digits as a phone would see them on paper.

Accuracy on MNIST says little about a user's photo. These photos put each digit through what
`lenet5.images.preprocess_image` has to undo: dark ink of a random colour on light, unevenly lit
paper with texture, at a random size and place, slightly rotated and blurred, with a few specks,
then JPEG-compressed. Classifying `make_photo_set` gates real-world accuracy.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["add_specks", "ink_patch", "make_photo", "make_photo_set", "photograph", "to_jpeg"]

SIDE_RANGE = (150, 600)
"""Photo sides in pixels."""
DIGIT_FRACTION = (0.15, 0.60)
"""The digit's longer side as a fraction of the photo's shorter side."""
MAX_ROTATION = 12.0
"""Degrees either way."""
JPEG_QUALITY = (60, 90)


def ink_patch(
    digit28: np.ndarray, size: float, rng: np.random.Generator, max_rotation: float = MAX_ROTATION
) -> np.ndarray:
    """The digit's ink (h, w) in [0, 1], longer side ~`size` px, rotated up to `max_rotation`
    degrees either way and slightly blurred."""
    ink = np.asarray(digit28, dtype=np.float32) / np.float32(255.0)  # (28, 28)
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        raise ValueError("digit28 is blank: there is no ink to photograph")
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # (h, w) ink box
    scale = size / max(ink.shape)
    shape = max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale))  # (w, h)
    patch = Image.fromarray(ink).resize(shape, Image.Resampling.BICUBIC)
    patch = patch.rotate(
        rng.uniform(-max_rotation, max_rotation), Image.Resampling.BILINEAR, expand=True
    )
    blurred = ndimage.gaussian_filter(np.asarray(patch), rng.uniform(0.3, 1.5))  # (h', w')
    return np.clip(blurred, 0.0, 1.0)


def _lighting(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) multiplicative light: a linear gradient times an off-centre vignette."""
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]  # (H, 1)
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]  # (1, W)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    gradient = 1.0 + rng.uniform(0.0, 0.2) * (np.cos(angle) * x + np.sin(angle) * y)  # (H, W)
    cy, cx = rng.uniform(-0.5, 0.5, size=2)
    vignette = 1.0 - rng.uniform(0.0, 0.3) * ((y - cy) ** 2 + (x - cx) ** 2) / 2.0  # (H, W)
    return rng.uniform(0.75, 1.0) * gradient * vignette


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) paper texture: fine grain plus soft blotches, around 0."""
    grain = rng.normal(0.0, rng.uniform(0.005, 0.025), size=(height, width))  # (H, W)
    coarse = rng.normal(0.0, 1.0, size=(max(2, height // 16), max(2, width // 16)))  # (h, w)
    coarse = ndimage.gaussian_filter(coarse, 1.0)
    blotches = np.asarray(
        Image.fromarray(coarse.astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC)
    )  # (H, W)
    return (grain + rng.uniform(0.0, 0.03) * blotches / max(coarse.std(), 1e-6)).astype(np.float32)


def add_specks(ink: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """Draw up to four small dots on `ink` (H, W) in place, well away from the digit's box."""
    height, width = ink.shape
    top, left, bottom, right = box
    margin = 0.5 * max(bottom - top, right - left)
    for _ in range(rng.integers(0, 5)):
        row, col = rng.integers(0, height), rng.integers(0, width)
        gap = max(top - row, row - bottom, left - col, col - right)
        if gap < margin:
            continue  # landed on or near the digit: skip rather than bias the layout
        radius = rng.uniform(1.0, 3.0)
        r = int(np.ceil(radius))
        dy, dx = np.ogrid[-r : r + 1, -r : r + 1]  # (2r+1, 1), (1, 2r+1)
        dot = np.clip(radius + 0.5 - np.hypot(dy, dx), 0.0, 1.0)  # (2r+1, 2r+1), soft edge
        r0, c0 = max(row - r, 0), max(col - r, 0)
        r1, c1 = min(row + r + 1, height), min(col + r + 1, width)
        patch = dot[r0 - (row - r) : r1 - (row - r), c0 - (col - r) : c1 - (col - r)]
        ink[r0:r1, c0:c1] = np.maximum(ink[r0:r1, c0:c1], patch)


def make_photo(digit28: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (H, W, 3) uint8 "photo" of an MNIST digit (28, 28) written in dark ink on paper.

    Sides are 150-600 px; the digit spans 15-60% of the shorter side, off-centre, rotated up to
    12 degrees, slightly blurred, under uneven light, with paper grain and a few specks.
    Encode it with `to_jpeg` to add compression artefacts as a phone would.
    """
    short = int(rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1))
    long = int(rng.integers(short, min(SIDE_RANGE[1], round(1.5 * short)) + 1))
    height, width = (short, long) if rng.random() < 0.5 else (long, short)

    patch = ink_patch(digit28, rng.uniform(*DIGIT_FRACTION) * short, rng)  # (h, w)
    top = int(rng.integers(0, height - patch.shape[0] + 1))
    left = int(rng.integers(0, width - patch.shape[1] + 1))
    ink = np.zeros((height, width), dtype=np.float32)  # (H, W) ink coverage in [0, 1]
    ink[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    add_specks(ink, (top, left, top + patch.shape[0], left + patch.shape[1]), rng)
    return photograph(ink, rng)


def photograph(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (H, W, 3) uint8 photo of ink coverage (H, W) in [0, 1]: a dark pen of a random colour
    on slightly tinted paper, under uneven light, with paper grain and blotches."""
    height, width = ink.shape
    ink = ink * rng.uniform(0.8, 1.0)  # pens rarely cover the paper completely

    paper = rng.uniform(0.82, 1.0, size=3).astype(np.float32)  # (3,) slightly tinted
    pen = rng.uniform(0.0, 0.3, size=3).astype(np.float32)  # (3,) dark, any hue
    alpha = ink[..., None]  # (H, W, 1)
    colour = paper * (1.0 - alpha) + pen * alpha  # (H, W, 3)
    light = _lighting(height, width, rng)[..., None]  # (H, W, 1)
    photo = colour * light + _texture(height, width, rng)[..., None]  # (H, W, 3)
    return np.clip(np.rint(photo * 255.0), 0, 255).astype(np.uint8)


def to_jpeg(photo: np.ndarray, rng: np.random.Generator) -> bytes:
    """JPEG bytes of a (H, W, 3) uint8 photo at a random quality of 60-90, as phones save them."""
    buffer = io.BytesIO()
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    Image.fromarray(photo).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_photo_set(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int
) -> list[tuple[bytes, int]]:
    """`n` (JPEG bytes, label) photos of digits drawn without replacement from `images`
    (N, 28, 28) uint8; the same seed always gives the same set."""
    if not 0 < n <= len(images):
        raise ValueError(f"n must be between 1 and {len(images)}, got {n}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), size=n, replace=False)  # (n,)
    return [(to_jpeg(make_photo(images[i], rng), rng), int(labels[i])) for i in chosen]
