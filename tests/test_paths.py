"""`lenet5.paths`: the least-ink path through a band of ink, against a plain search."""

from __future__ import annotations

import numpy as np
import pytest

from lenet5.paths import DRIFT, least_ink_paths


def plain_least_ink_path(ink: np.ndarray) -> list[int]:
    """The path `least_ink_paths` finds through one band (h, k), the plain way: every place of
    every row, in Python; ties to the leftmost, at the bottom and going back up."""
    height, size = ink.shape
    middle = (size - 1) / 2
    totals = [[ink[0, i] + DRIFT * abs(i - middle) for i in range(size)]]
    for row in range(1, height):
        above = totals[-1]
        totals.append([ink[row, i] + DRIFT * abs(i - middle) + min(above[max(i - 1, 0):i + 2])
                       for i in range(size)])
    i = int(np.argmin(totals[-1]))
    path = [i]
    for row in range(height - 2, -1, -1):
        options = [(totals[row][j], j) for j in (i - 1, i, i + 1) if 0 <= j < size]
        i = min(options)[1]
        path.append(i)
    return path[::-1]


@pytest.mark.parametrize("seed", range(6))
def test_each_band_gets_the_path_a_plain_search_finds(seed):
    """Random bands, ties included (inks of one decimal), some places barred."""
    rng = np.random.default_rng(seed)
    count, height, size = rng.integers(1, 6), rng.integers(2, 30), 2 * rng.integers(1, 6) + 1
    ink = np.round(rng.random((count, height, size)), 1)
    ink[rng.random(ink.shape) < 0.1] = np.inf
    ink[:, :, size // 2] = np.minimum(ink[:, :, size // 2], 1.0)  # a way through every band
    paths = least_ink_paths(ink)
    assert paths.shape == (count, height) and paths.dtype == np.intp
    assert paths.tolist() == [plain_least_ink_path(band) for band in ink]
    assert (np.abs(np.diff(paths, axis=1)) <= 1).all()


def test_a_path_goes_round_ink_and_stays_in_its_band():
    ink = np.ones((2, 5, 5))
    ink[0, :, 3] = 0.0  # a clear column
    ink[1, :, 0] = 0.0
    ink[1, 2, 0] = np.inf  # ... barred in one row: the path steps round it
    paths = least_ink_paths(ink)
    np.testing.assert_array_equal(paths[0], [3, 3, 3, 3, 3])
    np.testing.assert_array_equal(paths[1], [0, 0, 1, 0, 0])


def test_no_bands_no_paths():
    assert least_ink_paths(np.zeros((0, 7, 3))).shape == (0, 7)
