"""The paper behind the ink: which way round the ink is, and how the paper is lit.

Judged on a small copy of the picture (the caller's MODEL_SIDE): against a local median the
heavier tail is ink (a clean drawing, mostly paper of one exact grey, against that grey); the
paper's brightness under bright ink is a cubic surface plus a coarse grid of corrections,
fitted to the pixels a rank filter shows to be paper.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from ..reflect import mirrored
from .decode import fit, resize, shrink

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

def quantile(values: np.ndarray, q: float) -> float:
    """np.quantile(values, q) (linear interpolation, to within rounding: this computes in
    float64) of any non-empty array, without np.quantile's Python overhead: on the few
    hundred values a picture's statistics take, a tenth of the time (a reading takes several)."""
    flat = np.ravel(values)
    position = q * (flat.size - 1)
    below = math.floor(position)
    above = min(below + 1, flat.size - 1)
    low, high = np.partition(flat, (below, above))[[below, above]].astype(np.float64)
    return float(low + (high - low) * (position - below))


def _sample(values: np.ndarray) -> np.ndarray:
    """Every k-th row and column of a (H, W) array, about 4k pixels: enough for robust
    statistics, and cheap."""
    step = math.ceil(math.sqrt(values.size / 4096))
    return values[::step, ::step]


def spread(residual: np.ndarray) -> tuple[float, float, float, float]:
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
    estimate = percentile_filter(small, percentile, window)
    if not np.ptp(estimate):  # one level everywhere (a canvas): smoothing would give that
        return estimate  # level again, to a rounding unit
    return ndimage.gaussian_filter(estimate, window / 4, mode="nearest")


def percentile_filter(small: np.ndarray, percentile: float, size: int) -> np.ndarray:
    """ndimage.percentile_filter(small, percentile, size=size, mode="reflect") of a tiny
    (h, w) image, the same values in a quarter of the time: every window at once, each
    partitioned (a few hundred windows of a few dozen pixels)."""
    rank = int(size * size * percentile / 100.0)  # as ndimage ranks
    before, after = size // 2, size - 1 - size // 2  # ndimage's origin for an even size
    rows, columns = (mirrored(n, before, after) for n in small.shape)
    padded = small[np.ix_(rows, columns)]  # (h + size - 1, w + size - 1)
    down, across = padded.strides  # windows: a view, as sliding_window_view makes, for less
    windows = np.ndarray((*small.shape, size, size), padded.dtype, padded, 0,
                         (down, across, down, across)).reshape(*small.shape, size * size)
    return np.partition(windows, rank, axis=-1)[..., rank]  # (h, w)


def _has_dark_ink(coarse: np.ndarray, small: np.ndarray) -> bool:
    """Whether the (H, W) image holds dark ink on light paper, judged against its local median
    (small: the same at (h, w)): whichever tail of the difference carries more mass is ink."""
    residual = coarse - resize(
        _rank_background(small, 50), coarse.shape, Image.Resampling.BILINEAR
    )
    _, below, above, _ = spread(residual)  # (H, W): paper ~ 0, ink in one tail
    tail = max(3.0 * min(below, above), 2.0 / 255.0)
    brighter = np.maximum(residual - tail, 0.0).sum()
    darker = np.maximum(-residual - tail, 0.0).sum()
    return bool(darker > brighter)


def drawn_with_dark_ink(coarse: np.ndarray) -> bool | None:
    """Whether a clean drawing, most of whose pixels are exactly one grey (a canvas, a digital
    image), has dark ink: whichever side of that paper grey holds more ink. None for anything
    else (in a photo or scan, noise leaves no paper that even), which `_has_dark_ink` judges."""
    values = _sample(coarse)
    paper = quantile(values, 0.5)  # that grey, where it covers over half of the pixels
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


class Paper(NamedTuple):
    """The paper's brightness under bright ink: a cubic surface, which follows shading and
    vignetting right to the image's edges, plus a coarse grid of local corrections (g, g')."""

    surface: np.ndarray  # (10,) coefficients of _monomials
    correction: np.ndarray  # (g, g') over the whole image

    def over(self, shape: tuple[int, int]) -> np.ndarray | np.float32:
        """The paper under an image of `shape` (any resolution): (H, W), or a scalar (its one
        level) where it is flat."""
        if not self.surface[1:].any() and not self.correction.any():
            return np.float32(self.surface[0])
        correction = resize(self.correction, shape, Image.Resampling.BILINEAR)
        return _cubic(self.surface, shape) + correction


def _fit_paper(coarse: np.ndarray, weight: np.ndarray, fallback: float) -> Paper:
    """Fit the paper to the pixels of the (H, W) image where `weight` (H, W) is 1: a cubic
    surface by least squares on grid cells, then the cells' local misfit as corrections."""
    grid = fit(coarse.shape, min(GRID_SIDE, max(coarse.shape) // CELL_PIXELS))
    count = resize(weight, grid, Image.Resampling.BOX)  # (g, g') paper share of each cell
    mean = resize(coarse * weight, grid, Image.Resampling.BOX) / np.maximum(count, 1e-6)
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
    return Paper(surface, total / (count + FILL_WEIGHT))  # (g, g')


def _paper_model(coarse: np.ndarray, small: np.ndarray) -> Paper:
    """Model the paper under the (H, W) image of bright ink.

    A rank filter on the tiny copy `small` (h, w) gives a first estimate that strokes cannot
    pull up. The pixels an estimate shows to be paper are fitted (`_fit_paper`), and the fit
    is the next estimate: the second round also fits shading the first estimate missed (dark
    corners), which the first round took for ink.
    """
    first = _rank_background(small, BG_PERCENTILE)  # (h, w)
    if np.ptp(first) <= FLAT_PAPER:  # blank paper or a canvas: nothing to model
        return Paper(np.eye(10)[0] * quantile(first, 0.5), np.zeros((1, 1), np.float32))
    estimate = resize(first, coarse.shape, Image.Resampling.BILINEAR)
    fallback = quantile(estimate, 0.5)
    model = _refit_paper(coarse, estimate, fallback)
    for _ in range(PAPER_ROUNDS - 1):  # the caller evaluates the last fit itself
        model = _refit_paper(coarse, model.over(coarse.shape), fallback)
    return model


def _refit_paper(coarse: np.ndarray, estimate: np.ndarray, fallback: float) -> Paper:
    """One round of `_paper_model`: fit the pixels that `estimate` (H, W) shows to be paper."""
    residual = coarse - estimate  # (H, W)
    paper, sigma, _, top = spread(residual)
    split = paper + max(PAPER_SIGMAS * sigma, PAPER_SPLIT * (top - paper))
    near_ink = ndimage.maximum_filter(residual, size=3) > split  # (H, W) ink and fringe
    return _fit_paper(coarse, (~near_ink).astype(np.float32), fallback)




def read_paper(coarse: np.ndarray) -> tuple[bool, Paper]:
    """Whether the (H, W) image has dark ink, and the paper under its ink made bright."""
    small = shrink(coarse, BG_SIDE)  # (h, w)
    dark_ink = drawn_with_dark_ink(coarse)
    if dark_ink is None:
        dark_ink = _has_dark_ink(coarse, small)
    if dark_ink:
        coarse, small = 1.0 - coarse, 1.0 - small
    return dark_ink, _paper_model(coarse, small)
