"""`lenet5.data.nondigits`: made-up non-digits, drawn as MNIST drew its digits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lenet5.data.nondigits import (
    BREAK,
    FULL_PAIR,
    JUNK,
    MIN_CUT_SHARE,
    NONDIGIT,
    REDRAWN,
    SHARES,
    _cut_out,
    _left_of_cut,
    _marks,
    broken,
    calibration_pictures,
    change_strokes,
    draw,
    make_nondigits,
    merge_span,
    redraw,
    redrawn_digits,
    with_nondigits,
)


def digits_like(n: int, seed: int = 0) -> np.ndarray:
    """(n, 28, 28) uint8 stand-ins for digits: a bright bar of random width in an MNIST box."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, width in enumerate(rng.integers(4, 18, n)):
        left = 14 - width // 2
        images[i, 4:24, left:left + width] = 255
        images[i, 8:20, left + 2:left + width - 2] = 0  # a hole: an 0-like outline
    return images


def test_non_digits_are_drawn_in_mnist_s_frame():
    pictures = make_nondigits(digits_like(100), 700, np.random.default_rng(0))
    assert pictures.shape == (700, 28, 28) and pictures.dtype == np.uint8
    assert (pictures.max(axis=(1, 2)) >= 128).all()  # every one has ink
    centres = np.array([ndimage.center_of_mass(p.astype(float)) for p in pictures])
    assert np.abs(np.median(centres, axis=0) - 14).max() < 1.0
    sides = []
    for picture in pictures:
        rows, cols = np.nonzero(picture >= 38)
        sides.append(max(np.ptp(rows), np.ptp(cols)) + 1)
    assert 17 <= np.median(sides) <= 23  # a longer side of about 20 px


def test_the_same_seed_gives_the_same_pictures():
    digits = digits_like(50)
    first = make_nondigits(digits, 60, np.random.default_rng(3))
    assert np.array_equal(first, make_nondigits(digits, 60, np.random.default_rng(3)))
    assert not np.array_equal(first, make_nondigits(digits, 60, np.random.default_rng(4)))


def test_the_pictures_are_the_same_on_one_thread_and_on_two(compute_threads):
    """Blocks of pictures are drawn and finished on every core (`threads.over_blocks`), their
    random choices drawn first: the cores they ran on change no pixel."""
    digits, labels = digits_like(600), np.arange(600) % 10
    made = []
    for workers in (1, 2):
        with compute_threads(workers):
            segments, pens = _marks("strokes", 600, np.random.default_rng(6))  # 3 blocks
            made.append((draw(segments, pens),
                         with_nondigits(digits, labels, 0.5, np.random.default_rng(7))[0]))
    for one_thread, two_threads in zip(*made, strict=True):
        assert np.array_equal(one_thread, two_threads)


def test_calibration_pictures_are_the_redrawn_digits_then_the_non_digits():
    """One search for the digits' ink columns serves both, and the pictures do not change."""
    digits = digits_like(50)
    images, chosen, others = calibration_pictures(digits, 20, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    again, chosen_again = redrawn_digits(digits, 20, rng)
    assert np.array_equal(images, again) and np.array_equal(chosen, chosen_again)
    assert np.array_equal(others, make_nondigits(digits, 10, rng))


def test_no_non_digits_asked_none_made():
    """Calibrating on one digit asks for half as many non-digits: none."""
    made = make_nondigits(digits_like(5), 0, np.random.default_rng(0))
    assert made.shape == (0, 28, 28) and made.dtype == np.uint8


@pytest.mark.parametrize("kind", [k for k in SHARES if k not in (*JUNK, "printed", "glyph cut")])
def test_every_mark_is_drawn(kind):
    segments, pens = _marks(kind, 20, np.random.default_rng(1))
    pictures = draw(segments, pens)
    assert (pictures.max(axis=(1, 2)) >= 200).all()
    assert (np.count_nonzero(pictures >= 128, axis=(1, 2)) >= 15).all()


def test_every_kind_is_in_the_mix():
    counts = {}
    for kind in SHARES:  # each kind's pictures differ from every other's
        shares = dict.fromkeys(SHARES, 0.0) | {kind: 1.0}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("lenet5.data.nondigits.SHARES", shares)
            counts[kind] = make_nondigits(digits_like(40), 10, np.random.default_rng(0))
    assert abs(sum(SHARES.values()) - 1) < 1e-9
    kinds = list(counts)
    for i, a in enumerate(kinds):
        assert counts[a].shape == (10, 28, 28) and (counts[a].max(axis=(1, 2)) >= 128).all()
        for b in kinds[i + 1:]:
            assert not np.array_equal(counts[a], counts[b]), (a, b)


def test_a_cut_needs_no_wide_picture():
    narrow = np.zeros((5, 28, 28), np.uint8)
    narrow[:, 4:24, 12:16] = 255  # 4 px wide: none is wide enough to cut
    for seed in range(3):
        cut = make_nondigits(narrow, 4, np.random.default_rng(seed))
        assert cut.shape == (4, 28, 28)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lenet5.data.nondigits.SHARES", {"cut": 1.0})
        pieces = make_nondigits(narrow, 6, np.random.default_rng(0))
    assert pieces.shape == (6, 28, 28) and (pieces.max(axis=(1, 2)) > 0).all()


def test_redraw_keeps_a_digit_recognisable():
    digits = digits_like(30)
    again = redraw(digits, np.random.default_rng(0))
    correlation = [np.corrcoef(a.ravel(), b.ravel())[0, 1]
                   for a, b in zip(digits, again, strict=True)]
    assert np.median(correlation) > 0.6


def test_with_nondigits_adds_labelled_non_digits_and_redraws_some_digits():
    digits, labels = digits_like(200), np.arange(200) % 10
    images, out_labels = with_nondigits(digits, labels, 0.25, np.random.default_rng(0))
    assert images.shape == (250, 28, 28) and out_labels.dtype == np.int64
    assert (out_labels[:200] == labels).all() and (out_labels[200:] == NONDIGIT).all()
    redrawn = np.count_nonzero((images[:200] != digits).any(axis=(1, 2)))
    assert redrawn == REDRAWN * 50
    same, same_labels = with_nondigits(digits, labels, 0.0, np.random.default_rng(0))
    assert same is digits and (same_labels == labels).all()


def test_a_broken_digit_loses_one_straight_band_of_ink_and_nothing_else():
    digits = digits_like(50, seed=1)
    out = broken(digits, np.random.default_rng(0))
    assert out.dtype == np.uint8 and (out <= digits).all()
    assert np.array_equal(out, broken(digits, np.random.default_rng(0)))
    for digit, after in zip(digits, out, strict=True):
        erased = np.argwhere(after < digit // 2).astype(float)  # (m, 2) fully erased pixels
        assert len(erased)  # the line runs through an inked pixel
        centred = erased - erased.mean(axis=0)
        thinnest = np.linalg.eigvalsh(centred.T @ centred / len(erased))[0]
        assert np.sqrt(thinnest) <= (BREAK[1] + 1.4) / 2  # a band, not a blot
        assert np.count_nonzero(after) > 0.5 * np.count_nonzero(digit)


def test_some_redrawn_training_digits_are_broken(monkeypatch):
    """With BROKEN = 0 the training set's redrawn digits keep their strokes; with it, some
    lose a band of ink across them (checked by the ink they keep)."""
    digits, labels = digits_like(400, seed=2), np.arange(400) % 10
    ink = {}
    for share in (0.0, 1.0):
        monkeypatch.setattr("lenet5.data.nondigits.BROKEN", share)
        images, _ = with_nondigits(digits, labels, 0.25, np.random.default_rng(0))
        changed = (images[:400] != digits).any(axis=(1, 2))
        ink[share] = images[:400][changed].sum(axis=(1, 2)) / digits[changed].sum(axis=(1, 2))
    assert np.median(ink[1.0]) < np.median(ink[0.0]) - 0.05


def test_change_strokes_is_ndimages_grey_dilation_and_erosion():
    """The same values as ndimage.grey_dilation / grey_erosion over a square (mirrored edges),
    for windows larger than the picture too; only pictures that would vanish are kept."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for shape in [(1, 1, 1), (2, 1, 3), (3, 2, 2), (2, 7, 4), (4, 28, 28)]:
        for pixels in (-5, -3, -2, -1, 1, 2, 3, 5):
            ink = (rng.random(shape) * 255).astype(np.uint8)
            morphology = ndimage.grey_erosion if pixels < 0 else ndimage.grey_dilation
            expected = morphology(ink, size=(1, abs(pixels), abs(pixels)))
            erased = expected.max(axis=(1, 2)) < ink.max(axis=(1, 2)) // 2
            expected[erased] = ink[erased]
            np.testing.assert_array_equal(change_strokes(ink, pixels), expected)
    unchanged = change_strokes(ink, 0)
    assert np.array_equal(unchanged, ink) and unchanged is not ink


def test_change_strokes_thickens_thins_and_never_erases():
    """A 3-pixel bar grows to 5 and shrinks to 1 with a 3x3 window; a 1-pixel line, which
    thinning would erase, is kept as it was."""
    bar = np.zeros((2, 28, 28), np.uint8)
    bar[0, 4:24, 10:13] = 255  # 3 pixels wide
    bar[1, 4:24, 14] = 255  # 1 pixel wide
    thicker, thinner = change_strokes(bar, 3), change_strokes(bar, -3)
    assert (thicker[0, 14] > 0).sum() == 5 and (thinner[0, 14] > 0).sum() == 1
    assert np.array_equal(thinner[1], bar[1])


def test_a_digit_cut_out_of_a_pair_keeps_its_side_of_the_least_ink_cut():
    pairs = np.zeros((3, 28, 60), np.uint8)
    pairs[:2, 4:24, 8:12] = pairs[:2, 4:24, 30:34] = 255  # two bars, 18 px apart
    pairs[1, 14, 12:30] = 255  # joined by a hair-line at row 14
    pairs[2] = 255  # ink everywhere but one column inside the digit, left of its margin
    pairs[2, :, 9] = 0
    left = _left_of_cut(pairs, np.array([21, 21, 12]), np.array([8, 8, 11]))
    assert left.shape == pairs.shape and left.dtype == bool
    assert left[0, :, 21].all() and not left[0, :, 22].any()  # the cut's column is the left's
    kept = pairs[1] * left[1]
    np.testing.assert_array_equal(kept[:, :12], pairs[1, :, :12])
    assert not kept[:, 30:34].any()
    assert np.count_nonzero(kept[14, 12:30]) in range(4, 15)  # the hair-line, cut once
    assert left[2, :, 11].all()  # the clear column at 9 is left of the margin: not taken


def test_a_cut_that_takes_part_of_the_digit_leaves_the_window_whole():
    windows = np.zeros((2, 28, 40), np.uint8)
    windows[:, 4:24, 5:15] = 255  # a digit 10 px wide
    left = np.zeros(windows.shape, bool)
    left[:, :, :13] = True  # keeps 8 of its 10 columns
    left[1, :, 10:] = False  # keeps 5 of 10: less than MIN_CUT_SHARE
    assert 0.5 < MIN_CUT_SHARE <= 0.8
    out = _cut_out(windows, left)
    np.testing.assert_array_equal(out[0], windows[0] * left[0])
    np.testing.assert_array_equal(out[1], windows[1])


def test_a_share_of_merge_windows_holds_both_digits_whole(monkeypatch):
    """FULL_PAIR of them span both neighbours' ink (a reader's candidate for two touching
    digits); the others run from inside the left digit (its first 60%) to inside the right
    one (its last 60%)."""
    rng = np.random.default_rng(0)
    n = 4000
    l0 = rng.integers(0, 10, n)
    l1 = l0 + rng.integers(5, 18, n)
    r0 = l1 + rng.integers(-6, 5, n)
    r1 = r0 + rng.integers(5, 18, n)
    x0, x1 = merge_span(l0, l1, r0, r1, np.random.default_rng(1))
    whole = (x0 == l0) & (x1 == r1)
    assert 0 < FULL_PAIR < 1 and abs(whole.mean() - FULL_PAIR) < 0.03
    part = ~whole
    assert (x0[part] >= l0[part]).all() and (x0[part] <= (l0 + 0.6 * (l1 - l0))[part]).all()
    assert (x1[part] >= (r0 + 0.4 * (r1 - r0))[part]).all() and (x1[part] <= r1[part]).all()
    monkeypatch.setattr("lenet5.data.nondigits.FULL_PAIR", 0.0)
    x0, x1 = merge_span(l0, l1, r0, r1, np.random.default_rng(1))
    assert not ((x0 == l0) & (x1 == r1)).any()
