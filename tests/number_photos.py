"""Synthetic photographed numbers: 2-6 MNIST digits written in a row, on paper, as JPEG.

What `lenet5.images.numbers` has to read: digits of mixed sizes under one slant and a slight
rotation, some far apart, some touching or overlapping their neighbour, some with a stroke
broken in two, a few specks around, on the unevenly lit paper of `photo_digits.photograph`.
Each photo comes with its digits' boxes, in the photo's pixels, for the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from photo_digits import add_specks, ink_patch, photograph, to_jpeg
from PIL import Image

__all__ = ["HARD", "make_number", "make_number_set"]

DIGIT_HEIGHT = (28, 110)
"""The nominal digit's height in photo pixels."""
SIZE_SPREAD = (0.8, 1.2)
"""Each digit's size, times the nominal one (mixed sizes)."""
TOUCHING = 0.15
"""Chance that a digit is pushed against, or into, its left neighbour ..."""
OVERLAP = (-0.3, 0.0)
"""... by this fraction of the nominal height (the boxes then overlap); otherwise the gap is ..."""
GAP = (0.08, 0.6)
"""... this fraction of it."""
BROKEN = 0.05
"""Chance that a digit has a stroke broken: a thin band across it is erased. With these two
chances a plain connected-components reader (one blob, one digit) reads 66% of 150 numbers
exactly, as issue 15 measured on its held-out numbers (64%); HARD doubles and triples them."""
HARD = {"touching": 0.3, "broken": 0.15}
MAX_SLANT = 0.25
"""Horizontal shear of the whole number, either way (the writer's slant) ..."""
MAX_ROTATION = 5.0
"""... and its rotation in degrees, on top of each digit's own of up to DIGIT_ROTATION."""
DIGIT_ROTATION = 4.0
MARGIN = (0.1, 0.6)
"""Paper around the number, as a fraction of its width (each side)."""


def _broken(digit28: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of the (28, 28) digit with a 1.5-2.5 px band erased along a line through one of
    its ink pixels: a stroke drawn in two, or a bar lifted off."""
    rows, cols = np.nonzero(digit28 > 128)
    pick = int(rng.integers(rows.size))
    angle = rng.uniform(0.0, np.pi)
    y, x = np.mgrid[0:28, 0:28]  # (28, 28) each
    distance = np.abs((y - rows[pick]) * np.cos(angle) - (x - cols[pick]) * np.sin(angle))
    keep = np.clip((distance - rng.uniform(0.75, 1.25)) / 0.7, 0.0, 1.0)  # (28, 28) soft band
    return np.rint(digit28 * keep).astype(np.uint8)


def _affine(layer: np.ndarray, matrix: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """The (H, W) layer under the linear map `matrix` (2, 2) on (x, y) about `centre`."""
    inverse = np.linalg.inv(matrix)
    cx, cy = centre
    offset = np.array([cx, cy]) - inverse @ np.array([cx, cy])
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1],
                    offset[1])
    image = Image.fromarray(layer).transform(layer.shape[::-1], Image.Transform.AFFINE,
                                             coefficients, Image.Resampling.BILINEAR)
    return np.asarray(image)


def make_number(
    digits28: Sequence[np.ndarray], rng: np.random.Generator, touching: float = TOUCHING,
    broken: float = BROKEN,
) -> tuple[np.ndarray, list[list[int]]]:
    """A (H, W, 3) uint8 photo of the (28, 28) digits written left to right, and each digit's
    box [x0, y0, x1, y1] (ink of at least 0.2, x1 and y1 exclusive) in the photo's pixels;
    `touching` and `broken` are the chances of a digit touching its left neighbour and of a
    digit's stroke being broken."""
    nominal = rng.uniform(*DIGIT_HEIGHT)
    patches = []
    for digit in digits28:
        if rng.random() < broken:
            digit = _broken(digit, rng)
        size = nominal * rng.uniform(*SIZE_SPREAD)
        patches.append(ink_patch(digit, size, rng, max_rotation=DIGIT_ROTATION))  # (h, w)
    lefts, x = [], 0.0
    for i, patch in enumerate(patches):
        if i:
            spacing = OVERLAP if rng.random() < touching else GAP
            x += rng.uniform(*spacing) * nominal
        lefts.append(x)
        x += patch.shape[1]
    width_of_number = x
    tallest = max(p.shape[0] for p in patches)
    margin_x = rng.uniform(*MARGIN, size=2) * width_of_number + 0.3 * nominal
    margin_y = rng.uniform(0.5, 2.5, size=2) * tallest
    width = int(width_of_number + margin_x.sum())
    height = int(tallest + margin_y.sum())
    baseline = margin_y[0] + tallest  # digits sit on a line, a little up or down each

    slant = rng.uniform(-MAX_SLANT, MAX_SLANT)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotate @ np.array([[1.0, -slant], [0.0, 1.0]])  # on (x, y): shear, then rotate
    centre = (margin_x[0] + width_of_number / 2, baseline - tallest / 2)

    ink = np.zeros((height, width), dtype=np.float32)  # (H, W) ink coverage in [0, 1]
    boxes = []
    for left, patch in zip(lefts, patches, strict=True):
        layer = np.zeros_like(ink)  # (H, W)
        top = int(baseline - patch.shape[0] + rng.uniform(-0.06, 0.06) * nominal)
        col = int(margin_x[0] + left)
        layer[top : top + patch.shape[0], col : col + patch.shape[1]] = patch
        layer = _affine(layer, matrix, centre)
        rows, cols = np.nonzero(layer >= 0.2)
        boxes.append([int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1])
        np.maximum(ink, layer, out=ink)
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    add_specks(ink, (y0, x0, y1, x1), rng)
    return photograph(ink, rng), boxes


def make_number_set(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, lengths: tuple[int, int] = (2, 6),
    touching: float = TOUCHING, broken: float = BROKEN,
) -> list[tuple[bytes, str, list[list[int]]]]:
    """`n` (JPEG bytes, the number's text, digit boxes) of numbers whose lengths are drawn
    from `lengths` (inclusive), their digits from `images` (N, 28, 28) uint8 without
    replacement (see `make_number` for `touching` and `broken`); the same seed always gives
    the same set."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(lengths[0], lengths[1] + 1, size=n)  # (n,)
    if counts.sum() > len(images):
        raise ValueError(f"{n} numbers need {counts.sum()} digits; only {len(images)} given")
    order = rng.permutation(len(images))[: counts.sum()]
    numbers, start = [], 0
    for count in counts:
        chosen = order[start : start + count]
        start += count
        photo, boxes = make_number([images[i] for i in chosen], rng, touching, broken)
        text = "".join(str(int(labels[i])) for i in chosen)
        numbers.append((to_jpeg(photo, rng), text, boxes))
    return numbers
