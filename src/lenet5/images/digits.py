"""Finding the digit's ink on the paper, and drawing it into MNIST's 28x28 box."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import ImageError
from .decode import (
    DECODED_SCALE,
    WORK_SIDE,
    Picture,
    array_to_gray,
    decode,
    name_of,
    pil_to_gray,
    resize,
    shrink,
    upright,
)
from .paper import Paper, quantile, read_paper, spread

MODEL_SIDE = 128
"""Longer side of the copy polarity and paper are judged on, and the digit first looked for:
lighting is smooth, and a digit filling a third of the picture already spans 40 px here ..."""
MIN_DIGIT_SIDE = 40
"""... (a digit shorter than this is looked for again at WORK_SIDE: 20 px must be antialiased
from enough pixels)."""
NOISE_SIGMAS = 4.0
"""Background noise floor, in robust standard deviations (one-sided MAD * 1.4826)."""
STRONG = 0.5
"""Blobs of ink must somewhere reach this fraction of the way from paper to the darkest ink."""
INK_PERCENTILE = 90
"""Ink level: this percentile of the digit's pixels maps to full white."""
LO_FRACTION = 0.05
"""The floor is at least this fraction of the ink contrast; small, so clean images keep their
antialiased edges."""
MIN_CONTRAST = 0.06
"""Ink must differ from the paper by this much (about 15 grey levels) to count as a digit ..."""
MIN_SNR = 8.0
"""... and by this many noise standard deviations."""
MIN_EDGE_CONTRAST = 0.2
"""A blob touching the picture's edge must somewhere differ from the paper by this much (about 50
grey levels): fainter, it is taken for the shade at the edge of the sheet or of the light
(vignetting steeper than the paper model follows), not ink. On paper with no ink such shade was
the darkest thing there and read as a 1 (3 of 120 empty papers of two development sets,
0.07-0.12 deep); five seeds of the default recipe on those sets changed nothing else. The price:
a digit so faint (MIN_CONTRAST up to this) that also touches the edge, cropped too tightly, is
not found; with a margin around it, it is. Sparing blobs that touch the edge along less than 0.3
of its side spared such digits, but read the next faint blotch at the edge of one of those
papers as an 8."""
MIN_BLOB = 10
"""Fewest pixels (of the copy searched) in the digit's heaviest blob."""
KEEP_OVERLAPPING = 0.02
"""Blobs overlapping the digit's box are kept if they hold this fraction of the main blob's ink;"""
KEEP_NEAR = 0.08
"""blobs outside it if they hold this fraction ..."""
NEAR_GAP = 0.3
"""... and lie within this fraction of the box's longer side from it (a 5's detached bar)."""
BOX_LEVEL = 0.15
"""The digit's box holds its pixels of at least this ink, so faint fringes (JPEG ringing, blur)
cannot move it; in 99.9% of MNIST's test digits that box (pixels above 48) is 20 px long, like
the box of all their nonzero pixels."""
BOX_SIDE = 20
"""MNIST scaled each digit so its longer side is 20 px ..."""
CANVAS_SIDE = 28
"""... in a 28x28 field ..."""
CENTRE = 14.0
"""... with the centre of mass at pixel (14, 14) (row, col); MNIST test set mean: (13.99, 14.00)."""

def _no_digit(label: str, why: str) -> ImageError:
    return ImageError(
        f"{label} contains no digit: {why}; use an image of a digit or a number that stands out "
        "clearly."
    )


def _gap(a: tuple[slice, slice], b: tuple[slice, slice]) -> int:
    """Chebyshev distance in pixels between two boxes (0 when they touch or overlap)."""
    rows = max(a[0].start - b[0].stop, b[0].start - a[0].stop, -1) + 1
    cols = max(a[1].start - b[1].stop, b[1].start - a[1].stop, -1) + 1
    return max(rows, cols)


def _union(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice]:
    return (
        slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
        slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)),
    )


def _digit_ink(
    residual: np.ndarray, paper: float, sigma: float, top: float, label: str
) -> np.ndarray:
    """The digit's ink in [0, 1] from a (H, W) residual of bright ink, cropped to its box.

    Blobs are the connected pixels above the noise floor; only blobs reaching halfway to the
    darkest ink (`top`) count, which drops faint smudges and paper blotches whatever their size
    (hysteresis thresholding). The digit is the heaviest blob plus those big and close enough
    to be its other strokes. Its own pixels then set the ink level that maps to 1; the floor
    maps to 0, so the background is exactly black while antialiased edges stay soft.
    """
    labels, boxes, share = heaviest_blobs(residual, paper, sigma, top, label)
    kept, box = {0}, boxes[0]
    grown = True
    while grown:  # adding a stroke can bring the next one within reach
        grown = False
        for index in set(range(1, len(boxes))) - kept:
            gap = _gap(box, boxes[index])
            reach = NEAR_GAP * max(box[0].stop - box[0].start, box[1].stop - box[1].start)
            if (gap == 0 and share[index] >= KEEP_OVERLAPPING) or (
                gap <= reach and share[index] >= KEEP_NEAR
            ):
                kept.add(index)
                box = _union(box, boxes[index])
                grown = True
    keep = np.zeros(len(boxes) + 1, dtype=bool)
    keep[[index + 1 for index in kept]] = True
    keep = keep[labels[box]]  # (h, w) pixels of the digit
    return ink_box(residual[box], keep, paper, sigma, label)[0]


def heaviest_blobs(residual: np.ndarray, paper: float, sigma: float, top: float, label: str,
                   most: int | None = None) -> tuple[np.ndarray, list, np.ndarray]:
    """The blobs heavy enough to be (part of) a digit, at most `most`: labels (H, W) numbering
    them 1..n heaviest first, their n boxes, and each one's mass as a share of the heaviest's
    (n,). Raises ImageError where nothing stands out."""
    labels, mass = find_blobs(residual, paper, sigma, top)
    main = int(np.argmax(mass))
    if mass[main] <= 0.0:
        raise _no_digit(label, "nothing stands out from the background")
    if np.count_nonzero(labels == main) < MIN_BLOB:
        raise _no_digit(label, "only specks or noise were found")
    candidates = np.flatnonzero(mass >= KEEP_OVERLAPPING * mass[main])  # includes main
    candidates = candidates[np.argsort(-mass[candidates])][:most]  # heaviest first
    relabel = np.zeros(len(mass), dtype=np.int32)
    relabel[candidates] = np.arange(1, candidates.size + 1)
    labels = relabel[labels]  # (H, W)
    return labels, ndimage.find_objects(labels), mass[candidates] / mass[main]


def find_blobs(
    residual: np.ndarray, paper: float, sigma: float, top: float
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (H, W), mass (count + 1,)) of the 8-connected blobs of ink above the noise
    floor in a (H, W) residual of bright ink; blobs that never reach STRONG of the way to
    the darkest ink (`top`), and shade at the picture's edge (MIN_EDGE_CONTRAST), get
    mass 0, as does the background (label 0)."""
    floor = paper + max(NOISE_SIGMAS * sigma, 2.0 / 255.0)
    inked = residual > floor  # (H, W)
    labels, count = ndimage.label(inked, structure=np.ones((3, 3), dtype=bool))  # 8-connected
    strong = np.zeros(count + 1, dtype=bool)  # (count + 1,) blob reaches STRONG?
    strong[labels[residual > paper + STRONG * (top - paper)]] = True
    edge = np.zeros(count + 1, dtype=bool)  # (count + 1,) blob touches the picture's edge?
    edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    faint = np.ones(count + 1, dtype=bool)  # (count + 1,) never MIN_EDGE_CONTRAST deep?
    faint[labels[residual >= paper + MIN_EDGE_CONTRAST]] = False
    strong &= ~(edge & faint)  # shade
    strong[0] = False  # label 0 is the background
    mass = np.bincount(labels[inked], weights=residual[inked] - floor, minlength=count + 1)
    mass = mass.astype(np.float64, copy=False)  # (count + 1,), summed over the ink alone:
    mass[~strong] = 0.0  # the same sums, for less (and float where there is no ink at all)
    return labels, mass


def ink_box(
    residual: np.ndarray, keep: np.ndarray, paper: float, sigma: float, label: str
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The ink in [0, 1] of the pixels `keep` (h, w) of a (h, w) residual, cropped to the
    box of its pixels of at least BOX_LEVEL, and that box within the (h, w) array.

    Its own pixels set the ink level that maps to 1 and the noise floor maps to 0, so the
    background is exactly black while antialiased edges stay soft.
    """
    level = quantile(residual[keep], INK_PERCENTILE / 100)
    contrast = level - paper
    if contrast < MIN_CONTRAST or contrast < MIN_SNR * sigma:
        raise _no_digit(label, "its marks are too faint for the noise around them")
    low = paper + max(NOISE_SIGMAS * sigma, LO_FRACTION * contrast)
    ink = np.clip((residual - low) / (level - low), 0.0, 1.0) * keep  # (h, w)
    core = ink >= BOX_LEVEL  # (h, w)
    if not core.any():
        raise _no_digit(label, "its marks are too faint for the noise around them")
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    return ink[box], box


def to_mnist(ink: np.ndarray) -> np.ndarray:
    """Scale cropped ink (h, w) so its longer side is 20 px; centre its mass in 28x28 uint8."""
    scale = BOX_SIDE / max(ink.shape)
    size = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    digit = np.clip(resize(ink, size, Image.Resampling.BILINEAR), 0.0, 1.0)  # (h', w')
    digit /= digit.max()
    weights = digit.astype(np.float64)  # (h', w'): its centre of mass as ndimage finds it
    mass = float(digit.sum())  # (to the bit), in a fifth of the time
    com_row = weights.sum(axis=1) @ np.arange(size[0]) / mass
    com_col = weights.sum(axis=0) @ np.arange(size[1]) / mass
    top = min(max(round(CENTRE - com_row), 0), CANVAS_SIDE - size[0])
    left = min(max(round(CENTRE - com_col), 0), CANVAS_SIDE - size[1])
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE), dtype=np.float32)  # (28, 28)
    canvas[top : top + size[0], left : left + size[1]] = digit
    return np.rint(canvas * 255.0).astype(np.uint8)


def ink_residual(gray: np.ndarray, paper: Paper) -> tuple[np.ndarray, float, float, float]:
    """(residual (H, W), its paper level, noise sigma, darkest ink) of a grey image of bright
    ink on `paper`: the ink over the paper, which sits near 0."""
    residual = gray - paper.over(gray.shape)  # (H, W)
    level, sigma, _, top = spread(residual)
    return residual, level, sigma, top


def _find_ink(gray: np.ndarray, paper: Paper, label: str) -> np.ndarray:
    """The digit's ink, cropped, in a (H, W) grey image of bright ink on `paper`."""
    return _digit_ink(*ink_residual(gray, paper), label)


def _mnist_digit(gray: np.ndarray, label: str) -> np.ndarray:
    """The (28, 28) uint8 MNIST rendering of the digit in a (H, W) grey image in [0, 1]."""
    coarse = shrink(gray, MODEL_SIDE)  # (h, w)
    dark_ink, paper = read_paper(coarse)
    if dark_ink:
        gray, coarse = 1.0 - gray, 1.0 - coarse
    ink = _find_ink(coarse, paper, label)
    if max(ink.shape) < MIN_DIGIT_SIDE and coarse.shape != gray.shape:
        ink = _find_ink(gray, paper, label)  # a small digit: look again, closer
    return to_mnist(ink)


def preprocess_image(
    source: Picture, *, name: str | None = None
) -> np.ndarray:
    """A (28, 28) uint8 image of the digit in `source`, white ink on black, as MNIST made them.

    Accepts a path, encoded bytes, a stream, a PIL image, or an array: (H, W), (H, W, 3) or
    (H, W, 4), uint8 or floats in [0, 1]. Dark-on-light and light-on-dark both work; an image
    that is already MNIST-like comes back nearly unchanged. Raises ImageError when the image
    cannot be read or holds no digit; ``name`` is what that message calls the image.
    """
    label = name_of(source, name)
    return _mnist_digit(load_gray(source, label)[0], label)


def load_gray(source: Picture, label: str, side: int = WORK_SIDE) -> tuple[np.ndarray, float]:
    """(H, W) grey copy of `source` (any `preprocess_image` takes) of at most `side` px, and
    the file's pixels per pixel of it."""
    if isinstance(source, np.ndarray):
        gray = array_to_gray(source, label, side)
        return gray, source.shape[1] / gray.shape[1]
    if isinstance(source, Image.Image):
        img = upright(source, label)
        decoded = 1.0
    else:
        img = decode(source, label, side)
        decoded = img.info.get(DECODED_SCALE, 1.0)
    gray = pil_to_gray(img, label, side)
    return gray, decoded * img.width / gray.shape[1]


