"""Indices of mirrored edges, as ndimage's "reflect" mode pads (d c b a | a b c d).

The paper's rank filter (`images.paper`) and the stroke changes (`data.nondigits`) index their
small arrays with them instead of calling np.pad, which costs more than the work on those
arrays; both import them from here, as `images` and `data` may not import each other.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def mirrored(n: int, before: int, after: int) -> np.ndarray:
    """Indices (before + n + after,) into n places padded by `before` and `after` mirrored
    ones, any number of times over where a pad is wider than n; kept (read-only), as the same
    few are asked for again."""
    index = np.arange(-before, n + after) % (2 * n)
    index = np.where(index < n, index, 2 * n - 1 - index)
    index.flags.writeable = False
    return index
