"""Turn a user's photo or drawing into the 28x28 uint8 image MNIST would have made of it.

MNIST's digits were size-normalised to fit a 20x20 box (aspect ratio kept, antialiased) and then
placed in a 28x28 field with their centre of mass at the centre, as white ink on black. A
network trained on MNIST only works on images prepared the same way, so `lenet5 predict`, the
Python API and the web demo all go through `preprocess_image` here.

Photos and canvas drawings need more than MNIST's recipe: the ink may be dark on light paper,
lit unevenly, on a transparent background, JPEG-blurred, or surrounded by specks. The steps:

1. decode safely (size limits before decoding, EXIF orientation), composite transparency onto
   white, convert to grey, and shrink to at most WORK_SIDE px (JPEGs decode at that scale);
2. on a MODEL_SIDE px copy, judge polarity (against a local median, the heavier tail is ink;
   a clean drawing, mostly paper of one exact grey, against that grey) and model the paper: a
   rank filter gives a first estimate strokes cannot pull up; the pixels it shows to be paper
   are fitted with a cubic surface plus a coarse grid of corrections;
3. subtract the paper and measure the noise robustly (histogram mode, one-sided MAD);
4. find blobs of ink above the noise floor that reach halfway to the darkest ink; keep the
   heaviest and those close and heavy enough to be its other strokes (a 5's bar), drop specks;
   a digit under MIN_DIGIT_SIDE px there is looked for again on the WORK_SIDE copy;
5. ramp [noise floor, ink level] to [0, 1], so the background is exactly 0 and antialiased
   edges stay soft; crop, scale the longer side to 20 px, and paste into 28x28 so the centre of
   mass lands on pixel (14, 14), rounded to whole pixels as MNIST did.

All of it is array and image operations on at most 256x256 pixels, with no per-pixel Python.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from lenet5.errors import ImageError

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "open_image", "preprocess_image", "side_by_side"]

MAX_FILE_BYTES = 50 * 1024 * 1024
"""Files larger than this are refused before reading: no digit photo needs more."""
MAX_PIXELS = 40_000_000
"""Images with more pixels are refused from their header, before decoding (decompression bombs)."""
EXIF_ORIENTATION = 0x0112
"""The EXIF tag saying how the camera was held, honoured for files and PIL images alike."""
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
"""The only decoders Pillow may use (JPEG includes the MPO variant many phones write)."""

WORK_SIDE = 256
"""Longer side of the working copy: a digit 15% of a 4:3 photo's height still spans ~30 px,
more than the 20 px it ends up as, and every step stays fast."""
MODEL_SIDE = 128
"""Longer side of the copy polarity and paper are judged on, and the digit first looked for:
lighting is smooth, and a digit filling a third of the picture already spans 40 px here ..."""
MIN_DIGIT_SIDE = 40
"""... (a digit shorter than this is looked for again at WORK_SIDE: 20 px must be antialiased
from enough pixels)."""
BG_SIDE = 16
"""Longer side of the copy the paper is first estimated on: strokes average away, light stays."""
BG_WINDOW = 0.5
"""Rank-filter window there, as a fraction of the shorter side: wider than any stroke."""
BG_PERCENTILE = 20
"""Percentile (ink bright) taken as the paper: right while ink covers under 80% of a window."""
CLEAN_SHARE = 0.5
"""A drawing whose paper is exactly one grey in at least this share of its pixels has its ink's
polarity read directly; photos never have paper that even."""
FLAT_PAPER = 1 / 255
"""Paper whose first estimate varies less than this (one grey level) is taken as flat."""
PAPER_ROUNDS = 2
"""Rounds of: take the pixels the current estimate shows to be paper, fit them (see below)."""
PAPER_SIGMAS = 3.0
"""Pixels less than this many noise deviations above that first estimate are paper ..."""
PAPER_SPLIT = 0.25
"""... or less than this fraction of the way to the darkest ink: lighting the first estimate
missed (strong vignetting) is still paper, and is then followed by ..."""
GRID_SIDE = 32
"""... the local mean of the paper pixels on a grid this fine (longer side) ..."""
CELL_PIXELS = 4
"""... (but no finer than cells of this many pixels: on a 28x28 image a cell is 4x4) ..."""
FILL_SIGMA = 0.5
"""... smoothed by this many grid cells; under thick strokes, where a cell has fewer paper
pixels than FILL_WEIGHT of its area, the correction fades out."""
FILL_WEIGHT = 0.05
MIN_PAPER_CELLS = 20
"""Fewest grid cells showing paper to fit the surface to; fewer, and it is flat."""
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

_Source = str | Path | bytes | BinaryIO


def _label(source: object, name: str | None) -> str:
    """The words error messages use for an image: its name, its path, or what it is."""
    if name:
        return name
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return str(filename) if filename else "the image"
    if isinstance(source, np.ndarray):
        return "the image array"
    return str(getattr(source, "name", "")) or "the uploaded image"


def _read_bytes(source: _Source, label: str) -> bytes:
    """Read a file, bytes or stream, refusing anything over MAX_FILE_BYTES before reading it."""
    limit = f"{label} is larger than {MAX_FILE_BYTES // 2**20} MB; use a smaller image."
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(limit)
        return bytes(source)
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageError(f"{label} is a directory, not an image file.")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ImageError(limit)
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{label} does not exist; check the path.") from None
        except OSError as exc:
            raise ImageError(f"{label} cannot be read ({exc.strerror or exc}).") from exc
    try:
        data = source.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{label} cannot be read ({exc}).") from exc
    if not isinstance(data, bytes | bytearray):
        raise ImageError(f"{label} was opened as text; open it in binary mode ('rb').")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(limit)
    return bytes(data)


def _open(source: _Source, label: str, draft_side: int | None) -> Image.Image:
    """Decode an image fully, or raise ImageError; JPEGs may decode directly at a smaller scale."""
    data = _read_bytes(source, label)
    if not data:
        raise ImageError(
            f"{label} is empty (0 bytes); use a PNG, JPEG, BMP, GIF, TIFF or WebP file."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)  # lazy: reads the header only
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{label} is {width}x{height} pixels, more than the "
                    f"{MAX_PIXELS // 1_000_000} megapixels allowed; use a smaller image."
                )
            if draft_side is not None and img.format in ("JPEG", "MPO"):
                img.draft("L", _fit((width, height), draft_side))  # DCT scaling, >= that size
            img.load()  # full decode here, so truncated files fail inside this try
            ImageOps.exif_transpose(img, in_place=True)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(
                f"{label} is not an image that can be read; "
                "use a PNG, JPEG, BMP, GIF, TIFF or WebP file."
            ) from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageError(
                f"{label} is too large to decode safely; use a smaller image."
            ) from exc
        except Exception as exc:  # Pillow's decoders raise many types for damaged files
            raise ImageError(
                f"{label} is damaged or truncated ({exc}); re-save or re-export it."
            ) from exc
    return img


def _upright(img: Image.Image, label: str) -> Image.Image:
    """A caller's PIL image, decoded (a lazily opened file may turn out damaged) and turned as
    its EXIF orientation says, as `open_image` does."""
    try:
        img.load()
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
    except Exception as exc:  # Pillow's decoders raise many types for damaged files
        raise ImageError(
            f"{label} is damaged or truncated ({exc}); re-save or re-export it."
        ) from exc
    return img


def open_image(source: _Source, *, name: str | None = None) -> Image.Image:
    """Read a user's image file, bytes or stream safely: bounded size, EXIF orientation applied.

    ``name`` is what error messages call the image (e.g. an upload's filename). Raises
    ImageError, with one sentence naming the file, for anything that is not a readable image.
    """
    return _open(source, _label(source, name), None)


def _float_image(gray: np.ndarray) -> Image.Image:
    """A float32 PIL image of a (H, W) array, so resizing stays in float and is antialiased."""
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32))


def _resize(gray: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a (H, W) float array to size = (rows, cols)."""
    return np.asarray(_float_image(gray).resize((size[1], size[0]), resample))


def _has_alpha(img: Image.Image) -> bool:
    """Whether the image has transparency (an alpha channel or a transparent palette entry)."""
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info


def _pil_to_gray(img: Image.Image, label: str) -> np.ndarray:
    """(H, W) float32 in [0, 1] of a PIL image: transparency onto white, at most WORK_SIDE px."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(img, dtype=np.float32)  # (H, W)
        top = float(values.max(initial=0.0))
        scale = 1.0 if img.mode == "F" and top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        return _array_to_gray(np.clip(values / scale, 0.0, 1.0), label)
    try:
        if _has_alpha(img):
            return _array_to_gray(np.asarray(img.convert("LA")), label)
        img = img.convert("L")
    except ValueError as exc:  # e.g. a TIFF in LAB or HSV
        raise ImageError(
            f"{label} is in colour mode {img.mode}, which cannot be read; save it as RGB."
        ) from exc
    size = _fit((img.height, img.width), WORK_SIDE)
    if size != (img.height, img.width):
        img = img.resize(size[::-1], Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def _array_to_gray(array: np.ndarray, label: str) -> np.ndarray:
    """(H, W) float32 in [0, 1] from (H, W), (H, W, 1-4) uint8/bool/float-in-[0, 1] arrays."""
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        channels = array.shape[2]
    elif array.ndim == 2:
        channels = 0
    else:
        raise ImageError(
            f"{label} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)."
        )
    if min(array.shape[:2]) < 1:
        raise ImageError(f"{label} is empty (shape {array.shape}).")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / np.float32(255.0)
    elif array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise ImageError(
                f"{label} holds floats outside [0, 1]; scale it to [0, 1] or pass uint8."
            )
    else:
        raise ImageError(f"{label} has dtype {array.dtype}; pass uint8, or floats in [0, 1].")
    if channels >= 3:  # ITU-R 601 luma, the same weights as Pillow's convert("L")
        gray = 0.299 * values[..., 0] + 0.587 * values[..., 1] + 0.114 * values[..., 2]
    else:
        gray = values[..., 0] if channels else values  # (H, W)
    if channels in (2, 4):  # composite onto white, as a browser shows a transparent canvas
        alpha = values[..., -1]  # (H, W)
        gray = gray * alpha + (1.0 - alpha)
    return _shrink(gray, WORK_SIDE)


def _no_digit(label: str, why: str) -> ImageError:
    return ImageError(
        f"{label} contains no digit: {why}; use an image of one digit that stands out clearly."
    )


def _fit(shape: tuple[int, ...], side: int) -> tuple[int, int]:
    """(rows, cols) with the longer side scaled down to `side` (never up), aspect kept."""
    scale = min(1.0, side / max(shape[0], shape[1]))
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """Box-average a (H, W) array down to a longer side of at most `side`."""
    size = _fit(gray.shape, side)
    return gray if size == gray.shape else _resize(gray, size, Image.Resampling.BOX)


def _sample(values: np.ndarray) -> np.ndarray:
    """Every k-th row and column of a (H, W) array, about 4k pixels: enough for robust
    statistics, and cheap."""
    step = math.ceil(math.sqrt(values.size / 4096))
    return values[::step, ::step]


def _spread(residual: np.ndarray) -> tuple[float, float, float, float]:
    """Paper level of a (H, W) residual, its robust standard deviations below and above, and
    the 99.9th percentile (the darkest ink, roughly).

    The paper is the histogram's mode (the median would land in the ink once strokes cover half
    of a tight crop); the spreads are one-sided MADs around it, so ink inflates only its side.
    """
    values = np.sort(_sample(residual), axis=None)  # (n,) ascending
    width = max(float(values[-1] - values[0]), 1e-9) / 128
    bins = ((values - values[0]) / width).astype(np.intp)  # (n,) ascending bin numbers
    peak = int(np.argmax(np.bincount(bins)))
    first, stop = np.searchsorted(bins, [peak, peak + 1])
    paper = float(values[(first + stop - 1) // 2])  # median of the modal bin
    below = int(np.searchsorted(values, paper, side="right"))  # values[:below] <= paper
    above = int(np.searchsorted(values, paper, side="left"))  # values[above:] >= paper
    return (
        paper,
        1.4826 * (paper - float(values[(below - 1) // 2])),
        1.4826 * (float(values[(above + values.size - 1) // 2]) - paper),
        float(values[int(0.999 * (values.size - 1))]),
    )


def _rank_background(small: np.ndarray, percentile: float) -> np.ndarray:
    """A smooth estimate (h, w) of the paper in the tiny copy (h, w), ignoring the strokes."""
    window = max(3, round(BG_WINDOW * min(small.shape)))
    estimate = ndimage.percentile_filter(small, percentile, size=window, mode="reflect")
    return ndimage.gaussian_filter(estimate, window / 4, mode="nearest")


def _has_dark_ink(coarse: np.ndarray, small: np.ndarray) -> bool:
    """Whether the (H, W) image holds dark ink on light paper, judged against its local median
    (small: the same at (h, w)): whichever tail of the difference carries more mass is ink."""
    residual = coarse - _resize(
        _rank_background(small, 50), coarse.shape, Image.Resampling.BILINEAR
    )
    _, below, above, _ = _spread(residual)  # (H, W): paper ~ 0, ink in one tail
    tail = max(3.0 * min(below, above), 2.0 / 255.0)
    brighter = np.maximum(residual - tail, 0.0).sum()
    darker = np.maximum(-residual - tail, 0.0).sum()
    return bool(darker > brighter)


def _drawn_with_dark_ink(coarse: np.ndarray) -> bool | None:
    """Whether a clean drawing, most of whose pixels are exactly one grey (a canvas, a digital
    image), has dark ink: whichever side of that paper grey holds more ink. None for anything
    else (in a photo or scan, noise leaves no paper that even), which `_has_dark_ink` judges."""
    values = _sample(coarse)
    paper = np.median(values)  # that grey, where it covers over half of the pixels
    if np.count_nonzero(values == paper) < CLEAN_SHARE * values.size:
        return None
    return bool(np.maximum(paper - values, 0.0).sum() > np.maximum(values - paper, 0.0).sum())


def _coordinates(size: int) -> np.ndarray:
    """Centres of `size` pixels in a row or column, normalised to [-1, 1]: (size,)."""
    return ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)


def _monomials(v: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
    """The ten monomials of degree <= 3 in normalised coordinates v (rows) and u (columns):
    1, u, u^2, u^3, then v times 1, u, u^2, then v^2 times 1, u, then v^3."""
    one = np.ones((1,) * v.ndim, dtype=v.dtype)
    return [one, u, u * u, u * u * u, v, v * u, v * u * u, v * v, v * v * u, v * v * v]


def _cubic(surface: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The cubic with coefficients `surface` (10,) (order of _monomials) over an image of
    `shape`, by Horner's rule in v: (H, W)."""
    v, u = _coordinates(shape[0])[:, None], _coordinates(shape[1])  # (H, 1), (W,)
    c = surface.astype(np.float32)
    powers = np.stack([np.ones_like(u), u, u * u, u * u * u])  # (4, W)
    by_v = [c[0:4] @ powers, c[4:7] @ powers[:3], c[7:9] @ powers[:2], c[9] * powers[0]]
    return ((by_v[3] * v + by_v[2]) * v + by_v[1]) * v + by_v[0]  # (H, W)


class _Paper(NamedTuple):
    """The paper's brightness under bright ink: a cubic surface, which follows shading and
    vignetting right to the image's edges, plus a coarse grid of local corrections (g, g')."""

    surface: np.ndarray  # (10,) coefficients of _monomials
    correction: np.ndarray  # (g, g') over the whole image

    def over(self, shape: tuple[int, int]) -> np.ndarray | np.float32:
        """The paper under an image of `shape` (any resolution): (H, W), or a scalar (its one
        level) where it is flat."""
        if not self.surface[1:].any() and not self.correction.any():
            return np.float32(self.surface[0])
        correction = _resize(self.correction, shape, Image.Resampling.BILINEAR)
        return _cubic(self.surface, shape) + correction


def _fit_paper(coarse: np.ndarray, weight: np.ndarray, fallback: float) -> _Paper:
    """Fit the paper to the pixels of the (H, W) image where `weight` (H, W) is 1: a cubic
    surface by least squares on grid cells, then the cells' local misfit as corrections."""
    grid = _fit(coarse.shape, min(GRID_SIDE, max(coarse.shape) // CELL_PIXELS))
    count = _resize(weight, grid, Image.Resampling.BOX)  # (g, g') paper share of each cell
    mean = _resize(coarse * weight, grid, Image.Resampling.BOX) / np.maximum(count, 1e-6)
    if np.count_nonzero(count) < MIN_PAPER_CELLS:
        surface = np.zeros(10)
        surface[0] = fallback
    else:  # weighted least squares on the cells, by their share of paper
        v, u = _coordinates(grid[0])[:, None], _coordinates(grid[1])[None, :]
        terms = np.broadcast_arrays(*_monomials(v.astype(np.float64), u.astype(np.float64)))
        design = np.stack(terms, axis=-1).reshape(-1, 10)  # (g * g', 10)
        weighted = design * count.reshape(-1, 1)  # (g * g', 10)
        normal = weighted.T @ design + 1e-6 * np.eye(10)  # (10, 10)
        surface = np.linalg.solve(normal, weighted.T @ mean.reshape(-1))  # (10,)
    misfit = (mean - _cubic(surface, grid)) * count  # (g, g')
    total = ndimage.gaussian_filter(misfit, FILL_SIGMA)
    count = ndimage.gaussian_filter(count, FILL_SIGMA)
    return _Paper(surface, total / (count + FILL_WEIGHT))  # (g, g')


def _paper_model(coarse: np.ndarray, small: np.ndarray) -> _Paper:
    """Model the paper under the (H, W) image of bright ink.

    A rank filter on the tiny copy `small` (h, w) gives a first estimate that strokes cannot
    pull up. The pixels an estimate shows to be paper are fitted (`_fit_paper`), and the fit
    is the next estimate: the second round also fits shading the first estimate missed (dark
    corners), which the first round took for ink.
    """
    first = _rank_background(small, BG_PERCENTILE)  # (h, w)
    if np.ptp(first) <= FLAT_PAPER:  # blank paper or a canvas: nothing to model
        return _Paper(np.eye(10)[0] * float(np.median(first)), np.zeros((1, 1), np.float32))
    estimate = _resize(first, coarse.shape, Image.Resampling.BILINEAR)
    fallback = float(np.median(estimate))
    model = _refit_paper(coarse, estimate, fallback)
    for _ in range(PAPER_ROUNDS - 1):  # the caller evaluates the last fit itself
        model = _refit_paper(coarse, model.over(coarse.shape), fallback)
    return model


def _refit_paper(coarse: np.ndarray, estimate: np.ndarray, fallback: float) -> _Paper:
    """One round of `_paper_model`: fit the pixels that `estimate` (H, W) shows to be paper."""
    residual = coarse - estimate  # (H, W)
    paper, sigma, _, top = _spread(residual)
    split = paper + max(PAPER_SIGMAS * sigma, PAPER_SPLIT * (top - paper))
    near_ink = ndimage.maximum_filter(residual, size=3) > split  # (H, W) ink and fringe
    return _fit_paper(coarse, (~near_ink).astype(np.float32), fallback)


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
    floor = paper + max(NOISE_SIGMAS * sigma, 2.0 / 255.0)
    structure = np.ones((3, 3), dtype=bool)  # 8-connected
    labels, count = ndimage.label(residual > floor, structure=structure)  # (H, W)
    strong = np.zeros(count + 1, dtype=bool)  # (count + 1,) blob reaches STRONG?
    strong[labels[residual > paper + STRONG * (top - paper)]] = True
    strong[0] = False  # label 0 is the background
    mass = np.bincount(labels.ravel(), weights=(residual - floor).ravel())  # (count + 1,)
    mass[~strong] = 0.0
    main = int(np.argmax(mass))
    if mass[main] <= 0.0:
        raise _no_digit(label, "nothing stands out from the background")
    if np.count_nonzero(labels == main) < MIN_BLOB:
        raise _no_digit(label, "only specks or noise were found")

    candidates = np.flatnonzero(mass >= KEEP_OVERLAPPING * mass[main])  # includes main
    candidates = candidates[np.argsort(-mass[candidates])]  # heaviest first, main at [0]
    share = mass[candidates] / mass[main]  # (n,)
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[candidates] = np.arange(1, candidates.size + 1)
    labels = relabel[labels]  # (H, W): candidates numbered 1.. by decreasing mass
    boxes = ndimage.find_objects(labels)
    kept, box = {0}, boxes[0]
    grown = True
    while grown:  # adding a stroke can bring the next one within reach
        grown = False
        for index in set(range(1, candidates.size)) - kept:
            gap = _gap(box, boxes[index])
            reach = NEAR_GAP * max(box[0].stop - box[0].start, box[1].stop - box[1].start)
            if (gap == 0 and share[index] >= KEEP_OVERLAPPING) or (
                gap <= reach and share[index] >= KEEP_NEAR
            ):
                kept.add(index)
                box = _union(box, boxes[index])
                grown = True
    keep = np.zeros(candidates.size + 1, dtype=bool)
    keep[[index + 1 for index in kept]] = True
    keep = keep[labels[box]]  # (h, w) pixels of the digit
    residual = residual[box]  # (h, w)

    level = float(np.percentile(residual[keep], INK_PERCENTILE))
    contrast = level - paper
    if contrast < MIN_CONTRAST or contrast < MIN_SNR * sigma:
        raise _no_digit(label, "its marks are too faint for the noise around them")
    low = paper + max(NOISE_SIGMAS * sigma, LO_FRACTION * contrast)
    ink = np.clip((residual - low) / (level - low), 0.0, 1.0) * keep  # (h, w)
    core = ink >= BOX_LEVEL  # (h, w)
    rows, cols = np.flatnonzero(core.any(axis=1)), np.flatnonzero(core.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _to_mnist(ink: np.ndarray) -> np.ndarray:
    """Scale cropped ink (h, w) so its longer side is 20 px; centre its mass in 28x28 uint8."""
    scale = BOX_SIDE / max(ink.shape)
    size = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    digit = np.clip(_resize(ink, size, Image.Resampling.BILINEAR), 0.0, 1.0)  # (h', w')
    digit /= digit.max()
    com_row, com_col = ndimage.center_of_mass(digit)
    top = min(max(round(CENTRE - com_row), 0), CANVAS_SIDE - size[0])
    left = min(max(round(CENTRE - com_col), 0), CANVAS_SIDE - size[1])
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE), dtype=np.float32)  # (28, 28)
    canvas[top : top + size[0], left : left + size[1]] = digit
    return np.rint(canvas * 255.0).astype(np.uint8)


def _find_ink(gray: np.ndarray, paper: _Paper, label: str) -> np.ndarray:
    """The digit's ink, cropped, in a (H, W) grey image of bright ink on `paper`."""
    residual = gray - paper.over(gray.shape)  # (H, W): paper ~ 0
    level, sigma, _, top = _spread(residual)
    return _digit_ink(residual, level, sigma, top, label)


def _mnist_digit(gray: np.ndarray, label: str) -> np.ndarray:
    """The (28, 28) uint8 MNIST rendering of the digit in a (H, W) grey image in [0, 1]."""
    coarse = _shrink(gray, MODEL_SIDE)  # (h, w)
    small = _shrink(coarse, BG_SIDE)  # (h', w')
    dark_ink = _drawn_with_dark_ink(coarse)
    if dark_ink is None:
        dark_ink = _has_dark_ink(coarse, small)
    if dark_ink:
        gray, coarse, small = 1.0 - gray, 1.0 - coarse, 1.0 - small
    paper = _paper_model(coarse, small)
    ink = _find_ink(coarse, paper, label)
    if max(ink.shape) < MIN_DIGIT_SIDE and coarse.shape != gray.shape:
        ink = _find_ink(gray, paper, label)  # a small digit: look again, closer
    return _to_mnist(ink)


def preprocess_image(
    source: str | Path | bytes | BinaryIO | np.ndarray | Image.Image, *, name: str | None = None
) -> np.ndarray:
    """A (28, 28) uint8 image of the digit in `source`, white ink on black, as MNIST made them.

    Accepts a path, encoded bytes, a stream, a PIL image, or an array: (H, W), (H, W, 3) or
    (H, W, 4), uint8 or floats in [0, 1]. Dark-on-light and light-on-dark both work; an image
    that is already MNIST-like comes back nearly unchanged. Raises ImageError when the image
    cannot be read or holds no digit; ``name`` is what that message calls the image.
    """
    label = _label(source, name)
    if isinstance(source, np.ndarray):
        gray = _array_to_gray(source, label)  # (H, W)
    elif isinstance(source, Image.Image):
        gray = _pil_to_gray(_upright(source, label), label)
    else:
        gray = _pil_to_gray(_open(source, label, WORK_SIDE), label)
    return _mnist_digit(gray, label)


def side_by_side(original: Image.Image, processed: np.ndarray, *, height: int = 224) -> Image.Image:
    """The original next to what the network sees (28x28 blown up with sharp pixels), to check
    that preprocessing found the digit; what `lenet5 predict --save-input` writes."""
    if _has_alpha(original):
        rgba = original.convert("RGBA")
        original = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    left = original.convert("RGB")
    scale = min(height / left.height, 4 * height / left.width)
    left = left.resize(
        (max(1, round(left.width * scale)), max(1, round(left.height * scale))),
        Image.Resampling.LANCZOS,
        reducing_gap=3.0,
    )
    right = Image.fromarray(np.asarray(processed, dtype=np.uint8))
    right = right.resize((height, height), Image.Resampling.NEAREST).convert("RGB")
    gap = max(4, height // 28)
    picture = Image.new("RGB", (left.width + gap + height, height), (128, 128, 128))
    picture.paste(left, (0, (height - left.height) // 2))
    picture.paste(right, (left.width + gap, 0))
    return picture
