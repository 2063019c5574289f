"""`lenet5.paths`: the least-ink path through a band of ink, checked against every path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lenet5.paths import DRIFT, least_ink_paths


def every_path_cost(ink: np.ndarray) -> tuple[float, list[tuple[int, ...]]]:
    """The least cost of any path through one band (h, k), and every path that has it."""
    height, size = ink.shape
    middle = (size - 1) / 2
    costs = {}
    for start in range(size):
        for moves in itertools.product((-1, 0, 1), repeat=height - 1):
            path = tuple(np.cumsum((start, *moves)))
            if min(path) < 0 or max(path) >= size:
                continue
            costs[path] = sum(ink[row, c] + DRIFT * abs(c - middle) for row, c in enumerate(path))
    least = min(costs.values())
    return least, [p for p, c in costs.items() if np.isclose(c, least)]


@pytest.mark.parametrize("seed", range(5))
def test_each_band_gets_a_least_ink_path_the_leftmost_of_ties(seed):
    rng = np.random.default_rng(seed)
    ink = rng.integers(0, 3, (3, 6, 4)) / 2.0  # (c, h, k): few values, so ties happen
    ink[0, 2, :2] = np.inf  # barred places
    paths = least_ink_paths(ink)
    assert paths.shape == (3, 6) and paths.dtype == np.intp
    for band, path in zip(ink, paths, strict=True):
        least, best = every_path_cost(band)
        cost = sum(band[row, c] + DRIFT * abs(c - 1.5) for row, c in enumerate(path))
        assert np.isclose(cost, least) and tuple(path) in best
        assert (np.abs(np.diff(path)) <= 1).all()


def test_a_path_goes_round_ink_and_stays_in_its_band():
    ink = np.ones((2, 5, 5))
    ink[0, :, 3] = 0.0  # a clear column
    ink[1, :, 0] = 0.0
    ink[1, 2, 0] = np.inf  # ... barred in one row: the path steps round it
    paths = least_ink_paths(ink)
    np.testing.assert_array_equal(paths[0], [3, 3, 3, 3, 3])
    assert paths[1, 2] == 1 and paths[1, 0] == 0 and paths[1, -1] == 0
