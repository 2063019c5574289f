"""`lenet5.data.glyphs`: letters and signs that no digit looks like, handwritten and printed."""

from __future__ import annotations

import numpy as np

from lenet5.data.glyphs import (
    BOLD,
    GLYPHS,
    PRINT_CANVAS,
    PRINTED,
    PRINTED_LOOKALIKES,
    WIDTH,
    WOBBLE,
    _handwritten,
    _printed_table,
    _table,
    glyph_segments,
    printed_glyphs,
)
from lenet5.data.nondigits import draw

DIGIT_LIKE = set("0123456789ODQIJlijSsZzBGbgq")
"""Marks a handwritten digit can pass for: taught to refuse them, a network would refuse those
digits."""
DIGIT_TWINS = set("0123456789OoIilJj")
"""Marks even a printed one looks like."""


def test_no_glyph_is_a_digit_or_looks_like_one():
    assert not DIGIT_LIKE & set(GLYPHS)
    assert not DIGIT_TWINS & set(PRINTED)
    assert set(PRINTED_LOOKALIKES) <= DIGIT_LIKE
    assert set(GLYPHS) <= set(PRINTED) and len(set(PRINTED)) == len(PRINTED)


def test_every_glyph_fills_its_unit_box_and_draws():
    table = _table()  # (G, S, 4)
    assert table.shape[0] == len(GLYPHS) and not table.flags.writeable
    xs, ys = table[..., 0::2], table[..., 1::2]
    assert np.nanmin(xs) >= -0.01 and np.nanmax(xs) <= 1.01
    assert np.nanmin(ys) >= -0.01 and np.nanmax(ys) <= 1.01
    used = ~np.isnan(table[..., 0])  # (G, S)
    assert used[:, 0].all()  # every glyph has a piece, the pieces first
    assert (used[:, :-1] >= used[:, 1:]).all()
    pictures = draw(table, np.full(len(table), 0.06))
    assert (np.count_nonzero(pictures >= 128, axis=(1, 2)) >= 15).all()


def test_glyphs_are_stretched_and_wobbled_by_at_most_their_limits():
    rng = np.random.default_rng(0)
    segments = glyph_segments(500, rng)  # (500, S, 4)
    assert segments.shape == (500, *_table().shape[1:])
    xs, ys = segments[..., 0::2], segments[..., 1::2]
    reach_x = (1 + WOBBLE) * WIDTH[1]
    assert np.nanmin(xs) >= -WOBBLE * WIDTH[1] - 0.01 and np.nanmax(xs) <= reach_x + 0.01
    assert np.nanmin(ys) >= -WOBBLE - 0.01 and np.nanmax(ys) <= 1 + WOBBLE + 0.01
    widths = np.nanmax(xs, axis=(1, 2)) - np.nanmin(xs, axis=(1, 2))
    assert widths.std() > 0.1  # narrow and wide hands
    again = glyph_segments(500, np.random.default_rng(0))
    assert np.array_equal(segments, again, equal_nan=True)


def test_joined_pieces_stay_joined():
    table = _table()  # (G, S, 4)
    moved = _handwritten(table, np.random.default_rng(1))
    assert not np.allclose(moved, table, equal_nan=True)
    ends, starts = table[..., None, 2:], table[..., None, :, :2]  # (G, S, 1, 2), (G, 1, S, 2)
    meet = np.isclose(ends, starts).all(axis=3)  # (G, S, S): piece i ends where j starts
    moved_meet = np.isclose(moved[..., None, 2:], moved[..., None, :, :2]).all(axis=3)
    assert meet.sum() > len(table)  # polylines: many joints
    assert (moved_meet | ~meet).all()


def test_printed_glyphs_are_whole_centred_and_the_same_everywhere():
    pictures = printed_glyphs(300, np.random.default_rng(2))
    assert pictures.shape == (300, PRINT_CANVAS, PRINT_CANVAS) and pictures.dtype == np.uint8
    assert (pictures.max(axis=(1, 2)) == 255).all()
    table = _printed_table()  # every glyph at every weight
    assert len(table) == len(BOLD) * len(PRINTED) and (table.max(axis=(1, 2)) == 255).all()
    edges = np.concatenate([table[:, 0], table[:, -1], table[:, :, 0], table[:, :, -1]], axis=1)
    assert edges.max() == 0  # nothing cut off
    rows, cols = np.nonzero(pictures.sum(axis=0))
    assert abs((rows.min() + rows.max()) / 2 - PRINT_CANVAS / 2) < 4
    assert abs((cols.min() + cols.max()) / 2 - PRINT_CANVAS / 2) < 4
    assert np.array_equal(pictures, printed_glyphs(300, np.random.default_rng(2)))
