"""Mirrored-edge indices: what np.pad's "symmetric" mode (ndimage's "reflect") pads."""

from __future__ import annotations

import numpy as np
import pytest

from lenet5.reflect import mirrored


@pytest.mark.parametrize(("n", "before", "after"),
                         [(1, 0, 0), (1, 3, 2), (5, 2, 1), (11, 3, 2), (28, 1, 0), (28, 0, 1),
                          (4, 9, 13)])  # the last: pads wider than the array, twice over
def test_mirrored_indexes_as_symmetric_padding(n, before, after):
    values = np.arange(10, 10 + n)
    np.testing.assert_array_equal(values[mirrored(n, before, after)],
                                  np.pad(values, (before, after), mode="symmetric"))


def test_mirrored_is_kept_read_only():
    index = mirrored(7, 2, 3)
    assert mirrored(7, 2, 3) is index and not index.flags.writeable
