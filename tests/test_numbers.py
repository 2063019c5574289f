"""`lenet5.images.numbers`: candidate digits cut from pictures of numbers, and the best path.

Layouts are made from MNIST test digits written dark on light paper at known places, so each
digit's true box is known: separated, touching, a stroke broken in two, mixed sizes, specks.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from test_paths import plain_least_ink_path

from lenet5.images.numbers import (
    CUT_SPACING,
    MAX_ATOMS,
    ROW_CUT_SPACING,
    Segmentation,
    as_one_digit,
    best_path,
    find_writing,
    leaning_apart,
    segment,
    slants,
)

pytestmark = pytest.mark.mnist  # real handwriting, from the mnist_test_digits fixture

SCALE = 4
"""Digits are drawn SCALE times MNIST's size: 28 px become 112."""


def ink_box(digit: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a 28x28 digit's ink of at least 0.15 (the reader's box level)."""
    rows, cols = np.nonzero(digit >= 38)
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


def layout(digits: list[np.ndarray], gaps: list[int], sizes: list[float] | None = None,
           height: int = 200) -> tuple[np.ndarray, list[list[int]]]:
    """Dark digits on light paper (H, W) uint8, left to right with `gaps` px between their
    inks (negative: overlapping), each `sizes` times SCALE; and their boxes [x0, y0, x1, y1]."""
    sizes = sizes or [1.0] * len(digits)
    patches = []
    for digit, size in zip(digits, sizes, strict=True):
        x0, y0, x1, y1 = ink_box(digit)
        crop = Image.fromarray(digit[y0:y1, x0:x1])
        side = SCALE * size
        patches.append(np.asarray(crop.resize((round((x1 - x0) * side), round((y1 - y0) * side)),
                                              Image.Resampling.BICUBIC), dtype=np.float32))
    width = sum(p.shape[1] for p in patches) + sum(gaps) + 80
    ink = np.zeros((height, width), np.float32)
    boxes, x = [], 40
    for i, patch in enumerate(patches):
        top = height - 40 - patch.shape[0]
        ink[top:top + patch.shape[0], x:x + patch.shape[1]] = np.maximum(
            ink[top:top + patch.shape[0], x:x + patch.shape[1]], patch)
        boxes.append([x, top, x + patch.shape[1], top + patch.shape[0]])
        x += patch.shape[1] + (gaps[i] if i < len(gaps) else 0)
    return np.clip(235 - ink * (200 / 255), 0, 255).astype(np.uint8), boxes


def iou(a: list[int], b: list[int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def best_match(segmentation: Segmentation, box: list[int]) -> float:
    return max(iou(candidate, box) for candidate in segmentation.boxes)


def path_of_true_digits(segmentation: Segmentation, boxes: list[list[int]]) -> np.ndarray:
    """Scores (C,) that favour the candidates matching the true boxes: 0 for those, -5 else."""
    scores = np.full(len(segmentation.spans), -5.0)
    for box in boxes:
        scores[int(np.argmax([iou(c, box) for c in segmentation.boxes]))] = 0.0
    return scores


@pytest.fixture(scope="module")
def digits(mnist_test_digits):
    """Ten MNIST test digits, 0-9, wide enough to touch their neighbours."""
    images, labels = mnist_test_digits
    chosen = [next(i for i in range(len(labels)) if labels[i] == d and
                   ink_box(images[i])[2] - ink_box(images[i])[0] >= (6 if d == 1 else 14))
              for d in range(10)]
    return images[chosen]


def test_separated_digits_are_candidates_in_reading_order(digits):
    picture, boxes = layout([digits[2], digits[0], digits[5], digits[7]], [30, 45, 25])
    segmentation = segment(find_writing(picture))
    assert all(best_match(segmentation, box) > 0.9 for box in boxes)
    path = best_path(segmentation, path_of_true_digits(segmentation, boxes))
    assert [segmentation.boxes[i] for i in path] == [
        max(segmentation.boxes, key=lambda c, b=box: iou(c, b)) for box in boxes]
    assert segmentation.images.shape == (len(segmentation.spans), 28, 28)


@pytest.mark.parametrize("overlap", [2, 8])
def test_touching_digits_are_cut_apart(digits, overlap):
    picture, boxes = layout([digits[3], digits[8], digits[4]], [-overlap, 40])
    segmentation = segment(find_writing(picture))
    assert segmentation.atoms >= 3  # the touching pair is cut at least once
    for box in boxes:
        assert best_match(segmentation, box) > 0.75


def test_a_broken_stroke_is_joined_again(digits):
    five = digits[5].copy()
    rows, cols = np.nonzero(five >= 38)
    five[:, cols.min() + (cols.max() - cols.min()) // 2 - 1:][:, :3] = 0  # a gap through it
    picture, boxes = layout([digits[2], five], [40])
    segmentation = segment(find_writing(picture))
    assert segmentation.atoms >= 3  # the 5 is in pieces
    assert best_match(segmentation, boxes[1]) > 0.9  # and one candidate holds all of it


def test_mixed_sizes_are_kept_and_specks_dropped(digits):
    picture, boxes = layout([digits[7], digits[1], digits[9]], [30, 30], sizes=[1.0, 0.6, 0.8],
                            height=260)
    picture[20:26, 20:26] = 40  # specks, far from the number
    picture[15:19, -30:-26] = 40
    segmentation = segment(find_writing(picture))
    assert all(best_match(segmentation, box) > 0.85 for box in boxes)
    left, right = min(c[0] for c in segmentation.boxes), max(c[2] for c in segmentation.boxes)
    assert left >= boxes[0][0] - 3 and right <= boxes[-1][2] + 3  # no speck was kept


def test_a_thin_one_beside_heavy_digits_is_kept(digits):
    """A 1 written with a fine pen beside a touching 0 and 8 holds far less ink than they do
    (under `digits.KEEP_NEAR` of it); tall and beside them, it is still part of the number."""
    picture, boxes = layout([digits[0], digits[8]], [-6])
    picture = np.pad(picture, ((0, 0), (0, 60)), constant_values=235)
    x0, y0, y1 = boxes[1][2] + 40, boxes[1][1], boxes[1][3]
    picture[y0:y1, x0:x0 + 2] = 35  # a 1 two px wide
    assert best_match(segment(find_writing(picture)), [x0, y0, x0 + 2, y1]) > 0.9


def test_a_broken_digit_is_as_tall_as_its_pieces_together(digits):
    """A small 7 broken across the middle, away from a large 2: neither piece is TALL of the
    2's height, the two of them stacked are, and the 7 is kept."""
    seven = digits[7].copy()
    rows = np.nonzero(seven >= 38)[0]
    middle = (rows.min() + rows.max()) // 2
    seven[middle - 1:middle + 2] = 0
    picture, boxes = layout([digits[2], seven], [60], sizes=[1.3, 0.75], height=260)
    assert best_match(segment(find_writing(picture)), boxes[1]) > 0.9


@pytest.mark.parametrize("side", [8, 14])
def test_a_dot_above_a_digit_is_not_tall_with_it(digits, side):
    """A dark dot above a small digit beside a large one is stacked over the digit, but the
    digit is tall on its own: the dot is not a piece of it, stays a speck, dropped, and the
    digit's candidate keeps its own box."""
    picture, boxes = layout([digits[2], digits[7]], [60], sizes=[1.3, 0.75], height=260)
    x0, y0, x1, _ = boxes[1]
    middle = (x0 + x1) // 2
    picture[y0 - 20 - side:y0 - 20, middle:middle + side] = 35  # 20 px above the 7
    assert best_match(segment(find_writing(picture)), boxes[1]) > 0.9


def test_a_sliver_beside_a_digit_is_no_candidate(digits):
    """A short dark sliver touching a digit (a paper edge's shadow in a photo) reads as a
    confident 1; it is no candidate of its own, and the path leaves it out."""
    picture, boxes = layout([digits[8]], [])
    x0, y0, x1, y1 = boxes[0]
    middle = (y0 + y1) // 2
    picture[middle - 12:middle + 12, x0 - 4:x0] = 40  # 24 px of a digit over 100 px tall
    segmentation = segment(find_writing(picture))
    assert all(c[3] - c[1] >= 0.4 * (y1 - y0) for c in segmentation.boxes)
    path = best_path(segmentation, path_of_true_digits(segmentation, boxes))
    assert len(path) == 1 and iou(segmentation.boxes[path[0]], boxes[0]) > 0.85


def test_boxes_are_in_the_files_pixels(digits, tmp_path):
    """A large JPEG is decoded at a reduced scale; boxes still come back in its own pixels."""
    picture, boxes = layout([digits[4], digits[6]], [40])
    big = Image.fromarray(picture).resize((picture.shape[1] * 8, picture.shape[0] * 8))
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=90)
    segmentation = segment(find_writing(buffer.getvalue()))
    for box in boxes:
        assert best_match(segmentation, [8 * v for v in box]) > 0.85


def test_ink_beside_other_digits_is_cut_more_finely_than_ink_alone():
    """Five bars 0.22 of the height apart, joined at the bottom: alone (a wide digit, maybe),
    cuts stand CUT_SPACING apart; beside another tall blob (a number), ROW_CUT_SPACING: one in
    every gap."""
    def comb(neighbour: bool) -> np.ndarray:
        picture = np.full((200, 360), 235, np.uint8)
        for x in (40, 62, 84, 106, 128):
            picture[50:150, x:x + 18] = 30
        picture[145:150, 40:146] = 30
        if neighbour:  # a 0
            picture[50:150, 200:240] = 30
            picture[60:140, 210:230] = 235
        return picture

    alone, row = find_writing(comb(False)), find_writing(comb(True))
    assert len(row.cuts[0]) == 4 > len(alone.cuts[0]) >= 2 and row.cuts[1] == []
    assert np.diff(alone.cuts[0]).min() >= CUT_SPACING * alone.height
    assert np.diff(row.cuts[0]).min() >= ROW_CUT_SPACING * row.height


def test_a_bar_is_not_cut_but_a_bar_with_a_waist_is():
    """Ink the same in every column is one stroke (FLAT); where it thins, it may be two."""
    bar = np.full((200, 400), 235, np.uint8)
    bar[90:110, 50:350] = 30
    assert find_writing(bar).cuts == [[]]
    bar[90:100, 190:210] = 235  # thinned to half in the middle
    assert any(140 <= cut <= 160 for cut in find_writing(bar).cuts[0])  # (the bar's columns)


def test_a_row_of_too_many_marks_is_not_cut_up():
    dots = np.full((60, 1000), 235, np.uint8)
    for c in range(10, 990, 14):
        dots[26:34, c:c + 8] = 30  # 70 blots of ink in a row
    segmentation = segment(find_writing(dots))
    assert segmentation.atoms > MAX_ATOMS and not segmentation.spans


def test_best_path_merges_skips_and_gives_up():
    segmentation = Segmentation(atoms=3, spans=[(0, 1), (1, 2), (0, 2), (2, 3)],
                                skippable=np.array([False, False, True]))
    # merging atoms 0-1 scores better than reading them apart; atom 2 is cheaper to skip
    assert best_path(segmentation, np.array([-2.0, -2.0, -0.5, -9.0])) == [2]
    assert best_path(segmentation, np.array([-0.1, -0.1, -0.5, -0.2])) == [0, 1, 3]
    unreachable = Segmentation(atoms=2, spans=[(0, 1)], skippable=np.array([False, False]))
    assert best_path(unreachable, np.array([0.0])) == []


def test_one_candidate_is_what_segment_finds(mnist_test_digits):
    """Digits broken in two across the middle (two blobs, stacked): where `as_one_digit` takes
    one for one candidate, `segment` finds that candidate and no other; where `segment` would
    cut it, `as_one_digit` declines."""
    images, labels = mnist_test_digits
    whole_ones = 0
    for index in np.flatnonzero((labels == 1) | (labels == 5))[:40]:
        digit = images[index].copy()
        rows, _ = np.nonzero(digit >= 38)
        middle = (rows.min() + rows.max()) // 2
        digit[middle:middle + 2] = 0  # broken across
        picture, boxes = layout([digit], [])
        writing = find_writing(picture)
        whole, cut = as_one_digit(writing), segment(writing)
        if whole is None:
            assert cut.atoms > 1
            continue
        whole_ones += len(writing.boxes) == 2
        assert (whole.atoms, whole.spans, whole.boxes) == (cut.atoms, cut.spans, cut.boxes) == (
            1, [(0, 1)], whole.boxes) and iou(whole.boxes[0], boxes[0]) > 0.9
        assert np.array_equal(whole.images, cut.images)
    assert whole_ones >= 5


def test_digits_side_by_side_are_never_one_digit(digits, mnist_test_digits):
    apart, _ = layout([digits[2], digits[3]], [30])
    touching, _ = layout([digits[0], digits[0]], [-4])  # one blob, wider than a digit
    images, _ = mnist_test_digits
    nine_one, _ = layout([images[113], images[1040]], [-3])  # one blob, no wider than a digit
    assert as_one_digit(find_writing(apart)) is None
    for pair in (touching, nine_one):  # the network reads the 91 as a sure 9: it must be cut
        assert len(find_writing(pair).boxes) == 1
        assert as_one_digit(find_writing(pair)) is None and segment(find_writing(pair)).atoms > 1


def test_cut_paths_follow_the_least_ink():
    """Two strokes joined by a bridge, and a slanted gap: each path keeps to the gap, one
    column per row at most, within its reach; no columns, no paths (and no work)."""
    from lenet5.images.numbers import _cut_paths

    ink = np.ones((12, 20))
    gap = [6 + row // 3 for row in range(12)]  # slanting right, a column every 3 rows
    for row, column in enumerate(gap):
        ink[row, column] = 0.0
    ink[5, :] = 1.0  # a bridge across the gap: the path must cross ink there
    paths = _cut_paths(ink, [7, 8], reach=4)
    assert paths.shape == (2, 12)
    for path in paths:
        assert np.abs(np.diff(path)).max() <= 1
        assert [c for r, c in enumerate(path) if r != 5] == [c for r, c in enumerate(gap)
                                                             if r != 5]
    assert _cut_paths(ink, [], reach=4).shape == (0, 12)


def _least_ink_path(ink: np.ndarray, column: int, reach: int) -> list[int]:
    """The path `_cut_paths` finds from `column`, the plain way (`plain_least_ink_path` over
    the band of columns within `reach`, those off the blob barred)."""
    height, width = ink.shape
    band = list(range(column - reach, column + reach + 1))
    inside = [ink[:, c] if 0 <= c < width else np.full(height, np.inf) for c in band]
    return [band[i] for i in plain_least_ink_path(np.stack(inside, axis=1))]


def test_cut_paths_are_the_least_ink_paths_found_one_by_one():
    """All paths found at once, in one flat row per image row, are the paths a plain search
    finds for each column alone: random blobs, ties (inks of one decimal) included."""
    from lenet5.images.numbers import _cut_paths

    rng = np.random.default_rng(5)
    for trial in range(150):
        height, width = rng.integers(2, 30), rng.integers(3, 40)
        ink = rng.random((height, width)) * (rng.random((height, width)) < 0.6)
        if trial % 2:
            ink = np.round(ink, 1)
        columns = sorted(rng.choice(width, min(int(rng.integers(1, 4)), width),
                                    replace=False).tolist())
        reach = int(rng.integers(1, 8))
        paths = _cut_paths(ink, columns, reach)
        assert paths.tolist() == [_least_ink_path(ink, c, reach) for c in columns]


def stroke(lean: float) -> np.ndarray:
    """A 28x28 stroke, 2 px wide, from row 4 to row 23, moving `lean` px right per row down."""
    image = np.zeros((28, 28), np.uint8)
    rows = np.arange(4, 24)
    cols = np.rint(13 + lean * (rows - 13.5)).astype(int)
    image[rows, cols] = image[rows, cols + 1] = 255
    return image


@pytest.mark.parametrize("lean", [-0.5, -0.2, 0.0, 0.3, 0.6])
def test_slants_are_how_far_the_ink_moves_right_per_row_down(lean):
    assert slants(stroke(lean)[None])[0] == pytest.approx(lean, abs=0.03)


def test_ones_that_lean_apart_are_not_one_hands():
    v = np.stack([stroke(0.45), stroke(-0.45)])  # a V's strokes, 0.9 apart
    assert leaning_apart(v, [1, 1])
    assert leaning_apart(np.concatenate([stroke(0.0)[None], v]), [1, 1, 1])
    assert not leaning_apart(v, [1, 7])  # only 1s have one slant to compare
    assert not leaning_apart(np.stack([stroke(-0.45), stroke(0.3)]), [1, 1])  # 0.75 apart
    assert not leaning_apart(np.stack([stroke(0.45), stroke(0.0), stroke(-0.45)]), [1, 4, 1])
    assert not leaning_apart(v[:1], [1])
