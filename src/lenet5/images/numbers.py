"""Cutting a picture of a written number into candidate digits, and choosing the best cut.

The way the 1998 paper's string readers worked (LeCun et al. 1998, section V, "heuristic
over-segmentation"): propose more cuts than there are digits, let the network score every
candidate digit, and pick the best path through the candidates. Here:

1. the ink is found as for one digit (`digits`: polarity, paper, noise floor, blobs), on a
   copy fine enough that the writing is at least MIN_DIGIT_SIDE px tall;
2. the blobs of the number are the heaviest one and those on its line (tall ones beside it)
   or close to one of them (a 5's detached bar, the second stroke of a 4); specks further off
   are dropped; blobs stacked above one another (a broken stroke) are joined;
3. blobs wider than SPLIT_WIDTH of the writing's height (touching digits) are cut along the
   least-ink paths from top to bottom that start at the minima of their column profile (more
   finely beside other digits than alone); the pieces ("atoms") are put in reading order;
4. a candidate is a run of up to MAX_GROUP consecutive atoms, no wider than MAX_WIDTH of the
   height and at least TALL of it tall (a sliver of shadow beside a digit reads as a
   confident 1), drawn into 28x28 as MNIST drew digits (`digits.to_mnist`);
5. `best_path` picks the runs that cover every atom (small ones may be left out, at a cost)
   with the best total score, by dynamic programming from left to right; a candidate much
   wider than tall (two digits, most likely) pays for its width.

`find_writing` does steps 1-2, `segment` steps 3-4 and `best_path` step 5. Scoring is the
caller's: the network scores all candidates of a picture in one forward pass. `as_one_digit`
gives the candidate of ink that steps 3-4 would leave whole and alone (one digit, nothing to
cut) for less, or of any ink that is one group of stacked blobs, uncut (the reader takes it
where it surely reads as one digit); `crowded` tells a reading whose digits stand closer than
digits are ever written, `leaning_apart` one whose 1s slant further apart than one hand's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse.csgraph import connected_components

from ..errors import ImageError
from ..paths import REACH, least_ink_paths
from .decode import (
    WORK_SIDE,
    Picture,
    name_of,
    shrink,
)
from .digits import (
    KEEP_NEAR,
    KEEP_OVERLAPPING,
    MIN_DIGIT_SIDE,
    MODEL_SIDE,
    NEAR_GAP,
    _gap,
    _union,
    heaviest_blobs,
    ink_box,
    ink_residual,
    load_gray,
    to_mnist,
)
from .paper import Paper, quantile, read_paper

READ_SIDES = (MODEL_SIDE, WORK_SIDE, 512, 1024)
"""Copies the writing is looked for on, coarsest first: the first where it is at least
MIN_DIGIT_SIDE px tall is read (files are decoded again, larger, only when needed)."""
TALL = 0.4
"""A blob at least this fraction of the heaviest blob's height may be a digit of its own ..."""
ROW_REACH = 1.5
"""... and joins the number if it lies beside a blob of it, at most this many heights away,
overlapping it vertically by at least ..."""
ROW_OVERLAP = 0.3
"""... this fraction of the shorter one's height; smaller blobs join only as strokes of a
digit next to them (`digits.KEEP_OVERLAPPING`, `KEEP_NEAR` within `NEAR_GAP`). Blobs none of
which is tall on its own are tall together if they are stacked (STACKED) at most BREAK_GAP of
the heaviest blob's height apart: the pieces of a digit broken across the middle, not a dot
above a whole digit ..."""
BREAK_GAP = 0.35
KEEP_TALL = 0.03
"""... and a tall blob joins the number beside it if it holds this fraction of the heaviest
blob's ink: a thin 1 beside fat digits (or a pair of them touching) holds 7-8%, under
`digits.KEEP_NEAR`; a number's stray strokes are still dropped if shorter than TALL. Where
the last digit was a thin 1, or a broken digit at a number's end, the reader had left it out.
Five seeds of the default recipe on two development sets (the path chosen on steady readings,
`reading`, with and without): numbers read +0.7 and +0.8 points, hard numbers +1.2 and +0.7,
every non-digit and single photo read as before."""
STACKED = 0.6
"""Blobs whose columns overlap by this fraction of the narrower one's width are one atom to
start with (a broken stroke); cutting can part them again."""
SPLIT_WIDTH = 0.75
"""Blobs wider than this fraction of the writing's height may be several touching digits:
they are cut at the minima of their column profile (0.6 read as many of two development
sets' numbers, -0.2 and +0.1 points, five seeds of the default recipe) ..."""
CUT_MARGIN = 0.12
"""... at least this fraction of the height from either side (a 1 is that narrow) ..."""
CUT_SPACING = 0.25
"""... and from each other; at most one cut per this fraction of the height of width, where
the ink is one tall blob (a digit on its own, most often: what people draw on the page) ..."""
ROW_CUT_SPACING = 0.2
"""... and this fraction where there are several (a number): 0.2 everywhere read 0.7-1.0 points
more of two development sets' 600 numbers but cut wide single digits in two (a 5's long bar, a
flat 0: 96.9% of benchmarks/real_world.py's drawings read right instead of 97.6%); among
several tall blobs only, it read 0.8-0.9 points more numbers (0.17-0.18: no more) and every
drawing, photo and non-digit as before. A 1 touching a neighbour is the digit numbers most
often lose (one in seven of the numbers read wrong: the pair reads as the neighbour, surely),
yet 0.14 read +0.1 and +0.1 points, 0.1 -0.4 and -0.9, and 0.1 with the network trained on
about three times as many windows over a 1 and its neighbour as non-digits -0.2 and -1.4.
Each cut follows the path of least ink from top to bottom within `paths.REACH` of the height
of its column, drifting off it costing `paths.DRIFT` of a pixel's ink per column. Cutting also
where a stroke at least 0.7 of the height tall meets ink no taller than 0.3 of it (a 1 touching
a 7's bar: no minimum of ink between them), `pretrained` on four development sets
(seeds 1501, 1601, 1701, 1801; 2026-11-30): numbers -0.3, +0.3, 0.0 and 0.0 points, non-digits
refused -0.5, 0.0, -1.0 and 0.0; not adopted."""
FLAT = 0.9
"""A blob whose ink per column, away from its ends, nowhere falls below this share of its most
is one stroke, a line or a bar, with nowhere to cut: cut every ROW_CUT_SPACING as if touching
digits, "-" drawn on the page read as 1111111111111 and "=" as seventeen 1s (each piece a
sliver as tall as the line is thick). Uncut, it is one candidate, too flat to read as a digit
and refused. On two development sets (five seeds of the default recipe, and `pretrained`)
every number, hard number, non-digit and single photo read as before; refusing cuts at any
column of 0.9 of a blob's most ink instead cost one hard number in 150."""
MAX_GROUP = 4
"""A candidate digit joins at most this many atoms ..."""
MAX_WIDTH = 1.6
"""... and is at most this many heights wide."""
WIDEST = 1.2
"""A candidate wider than this many times its height (95% of MNIST's digits are at most 1.1)
is likely two digits or more: each height of width beyond costs WIDE_COST ..."""
WIDE_COST = 3.0
"""... in the log-probability units candidates are scored in."""
SKIP_SHARE = 0.2
"""Atoms lighter than this fraction of the median tall atom's ink, or shorter than TALL of the
height, may be left out of the number (a speck, a stray mark, a bit broken off a stroke) ..."""
SKIP_SCORE = float(np.log(0.15))
"""... at this cost, in the log-probability units candidates are scored in: more than a
confident digit costs, less than a candidate the network cannot read at all (softmax never
goes below 1/10)."""
MIN_PITCH = 0.25
"""Digits written side by side stand at least this fraction of their height apart, centre
to centre: of 1,208 development numbers read right, the closest neighbours stood 0.28 apart
(99.9% of all the test numbers' neighbours: 0.23, in numbers read wrong anyway); hatching and
scribbles read as "1111" stand closer (0.25 instead of 0.2 refused 0.4-0.5 points more of two
sets of 600 development non-digits, and no number read right)."""
LEAN_APART = 0.8
"""Neighbours read as 1 whose slants (`slants`) differ by more than this are not one
writer's 1s but the strokes of a W, a V, an A or criss-cross hatching cut apart where they
meet. One hand slants its 1s alike; MNIST's test 1s, each pair from two writers, differ by
more than this 3.0% of the time. On two development sets (600 numbers, 600 non-digits each)
the 1s side by side in numbers read right differed by 0.8 at most, and the rule refused 0.7
and 0.8 points more of the non-digits (0.7: 1.0 and 1.1 points, and one number read right)."""
MAX_BLOBS = 80
"""Blobs looked at, heaviest first (a texture or a page of text has thousands)."""
MAX_ATOMS = 60
"""More pieces than this are not a number (a page of text, a texture)."""


@dataclass
class Segmentation:
    """Candidate digits of one picture: runs [start, stop) of atoms in reading order."""

    atoms: int
    spans: list[tuple[int, int]] = field(default_factory=list)  # per candidate
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 28, 28), np.uint8))
    boxes: list[list[int]] = field(default_factory=list)  # [x0, y0, x1, y1] in file pixels
    skippable: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (atoms,)
    shape_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (C,) <= 0:
    # what a candidate's width costs
    height: float = 0.0  # of the writing, in file pixels


@dataclass
class _Ink:
    """The picture's ink at one scale: the residual of bright ink over its paper."""

    residual: np.ndarray  # (H, W)
    paper: float
    sigma: float
    top: float
    scale: float  # file pixels per pixel here


# --- finding the number's blobs -------------------------------------------------------------

def _ink(gray: np.ndarray, paper: Paper, dark_ink: bool, scale: float) -> _Ink:
    return _Ink(*ink_residual(1.0 - gray if dark_ink else gray, paper), scale)


def _number_blobs(ink: _Ink, label: str) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """(labels (H, W) numbering the number's blobs 1..n, their boxes)."""
    labels, boxes, share = heaviest_blobs(ink.residual, ink.paper, ink.sigma, ink.top, label,
                                          MAX_BLOBS)
    top = np.array([b[0].start for b in boxes])  # (n,)
    bottom = np.array([b[0].stop for b in boxes])  # (n,)
    height = bottom[0] - top[0]  # the heaviest blob's
    group = _stacked_groups(boxes, BREAK_GAP * height)  # (n,)
    group_top = np.full(group.max() + 1, top.max())  # (g,)
    group_bottom = np.zeros(group.max() + 1, dtype=bottom.dtype)  # (g,)
    np.minimum.at(group_top, group, top)
    np.maximum.at(group_bottom, group, bottom)
    alone = bottom - top >= TALL * height  # (n,) tall on its own
    together = (group_bottom - group_top >= TALL * height) & (  # (g,)
        np.bincount(group, alone, len(group_top)) == 0)
    tall = alone | together[group]  # (n,)

    kept = [0]
    grown = True
    while grown:  # each blob joined can bring the next within reach
        grown = False
        for index in range(1, len(boxes)):
            if index in kept:
                continue
            box = boxes[index]
            for other in kept:
                near = boxes[other]
                side = max(near[0].stop - near[0].start, near[1].stop - near[1].start)
                gap = _gap(box, near)
                if (gap == 0 and share[index] >= KEEP_OVERLAPPING) or (
                        gap <= NEAR_GAP * side and share[index] >= KEEP_NEAR) or (
                        tall[index] and share[index] >= KEEP_TALL and _beside(box, near)):
                    kept.append(index)
                    grown = True
                    break
    if len(kept) == len(boxes):  # all of them, numbered as they are
        return labels, boxes
    keep = np.zeros(len(boxes) + 1, dtype=bool)
    keep[[index + 1 for index in kept]] = True
    order = np.zeros(len(boxes) + 1, dtype=np.int32)
    order[np.flatnonzero(keep)] = np.arange(1, len(kept) + 1)
    return order[labels], [boxes[i - 1] for i in np.flatnonzero(keep)]


def _beside(a: tuple[slice, slice], b: tuple[slice, slice]) -> bool:
    """Whether box a lies on the same line as box b, within ROW_REACH of its height."""
    overlap = min(a[0].stop, b[0].stop) - max(a[0].start, b[0].start)
    shorter = min(a[0].stop - a[0].start, b[0].stop - b[0].start)
    height = max(a[0].stop - a[0].start, b[0].stop - b[0].start)
    gap = max(a[1].start - b[1].stop, b[1].start - a[1].stop, 0)
    return overlap >= ROW_OVERLAP * shorter and gap <= ROW_REACH * height


# --- atoms: the blobs, touching digits cut apart ----------------------------------------------

def _cuts(profile: np.ndarray, height: float, spacing: float) -> list[int]:
    """Columns to cut a blob at, from its ink per column (w,): the deepest local minima,
    CUT_MARGIN of the height from its sides and `spacing` of it from each other; none in a
    FLAT blob."""
    width = profile.size
    margin = max(1, round(CUT_MARGIN * height))
    if width < 2 * margin + 1:
        return []
    smooth = np.convolve(profile, [0.25, 0.5, 0.25], mode="same")  # (w,)
    inner = np.arange(margin, width - margin)
    if smooth[inner].min() >= FLAT * smooth[inner].max():  # one stroke: a line, a bar
        return []
    left, right = smooth[inner - 1], smooth[np.minimum(inner + 1, width - 1)]
    minima = inner[(smooth[inner] <= left) & (smooth[inner] <= right)]
    chosen: list[int] = []
    spacing *= height
    for column in minima[np.argsort(smooth[minima], kind="stable")]:
        if len(chosen) >= width / spacing:
            break
        if all(abs(column - c) >= spacing for c in chosen):
            chosen.append(int(column))
    return sorted(chosen)


def _cuts_of(blob: np.ndarray, height: float, spacing: float) -> list[int]:
    """Where to cut a blob, its ink (h, w): nowhere unless it is wider than SPLIT_WIDTH of the
    writing's height, else at `_cuts`, `spacing` of the height apart."""
    if blob.shape[1] <= SPLIT_WIDTH * height:
        return []
    return _cuts(blob.sum(axis=0), height, spacing)


def _cut_paths(ink: np.ndarray, columns: list[int], reach: int) -> np.ndarray:
    """(c, h) the column, row by row, of each top-to-bottom path through a blob's ink (h, w)
    that crosses the least ink, moving at most one column per row and at most `reach` columns
    from its column of `columns` (c,): touching or overlapping digits part along them, a
    slanted one too (`paths.least_ink_paths`; columns off the blob are barred)."""
    height, width = ink.shape
    if not columns:  # most blobs: no row-by-row search for nothing
        return np.zeros((0, height), dtype=np.intp)
    band = np.asarray(columns, dtype=np.intp)[:, None] + np.arange(-reach, reach + 1)  # (c, k)
    inside = (band >= 0) & (band < width)
    bands = np.where(inside[:, None, :], ink[:, band.clip(0, width - 1)].transpose(1, 0, 2),
                     np.inf)  # (c, h, k)
    return np.take_along_axis(band, least_ink_paths(bands), axis=1)  # (c, h)


def _stacked_groups(boxes: list[tuple[slice, slice]], max_gap: float = np.inf) -> np.ndarray:
    """(n,) a group number per box, 0 up: boxes lying mostly above or below one another --
    their columns overlapping by STACKED of the narrower one's width, at most `max_gap` rows
    apart -- and those stacked on them in turn are one group."""
    left = np.array([b[1].start for b in boxes])  # (n,)
    right = np.array([b[1].stop for b in boxes])
    top = np.array([b[0].start for b in boxes])
    bottom = np.array([b[0].stop for b in boxes])
    overlap = np.minimum(right[:, None], right) - np.maximum(left[:, None], left)  # (n, n)
    narrower = np.minimum((right - left)[:, None], right - left)  # (n, n)
    gap = np.maximum(top[:, None], top) - np.minimum(bottom[:, None], bottom)  # (n, n) rows
    stacked = (overlap >= STACKED * narrower) & (gap <= max_gap)  # (n, n)
    return connected_components(stacked, directed=False)[1]


def _stacked(labels: np.ndarray, boxes: list[tuple[slice, slice]]
             ) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """The blobs (labels (H, W) 1..n, boxes) with stacked ones joined (`_stacked_groups`):
    the pieces of a broken stroke, a 5's bar, a 4 in two strokes, a speck on a digit."""
    if len(boxes) == 1:
        return labels, boxes
    group = _stacked_groups(boxes)  # (n,) in order of each group's first blob
    number = np.concatenate([[0], group + 1]).astype(labels.dtype)  # (n + 1,)
    joined = number[labels]
    return joined, ndimage.find_objects(joined)


def _atoms(writing: Writing) -> tuple[np.ndarray, int]:
    """(atom labels (H, W) 1..n in reading order, n): each group of stacked blobs
    (`Writing.groups`) cut in pieces along least-ink paths from its `Writing.cuts`."""
    labels, boxes = writing.groups
    reach = max(1, round(REACH * writing.height))
    atoms = np.zeros_like(labels)
    count = 0
    centres: list[float] = []
    for box, (mine, blob), cuts in zip(boxes, writing.blobs, writing.cuts, strict=True):
        width = box[1].stop - box[1].start
        paths = _cut_paths(blob, cuts, reach)  # (cuts, h)
        paths = np.maximum.accumulate(paths, axis=0)  # never crossing
        columns = np.arange(width)
        piece = (columns[None, None, :] > paths[:, :, None]).sum(axis=0)  # (h, w)
        atoms[box] = np.where(mine, piece + count + 1, atoms[box])
        pieces = len(cuts) + 1
        weight = np.bincount(piece.ravel(), blob.ravel(), pieces)  # (pieces,)
        moment = np.bincount(piece.ravel(), (blob * columns[None, :]).ravel(), pieces)
        centres.extend(box[1].start + moment / np.maximum(weight, 1e-9))
        count += pieces
    present = np.flatnonzero(np.bincount(atoms.ravel(), minlength=count + 1)[1:])  # not empty
    order = present[np.argsort(np.array(centres)[present], kind="stable")]  # left to right
    rank = np.zeros(count + 1, dtype=labels.dtype)
    rank[order + 1] = np.arange(1, order.size + 1)
    return rank[atoms], order.size


# --- the segmentation ---------------------------------------------------------------------

@dataclass
class Writing:
    """The ink of a picture's number, at the scale it is read at, and its blobs."""

    ink: _Ink
    labels: np.ndarray  # (H, W): the number's blobs numbered 1..n
    boxes: list[tuple[slice, slice]]  # per blob
    height: float  # of the writing, here
    name: str  # of the picture, for messages

    @functools.cached_property
    def brightness(self) -> np.ndarray:
        """(H, W) the ink's residual from paper (0) to its brightest (1)."""
        ink = self.ink
        return np.clip((ink.residual - ink.paper) / max(ink.top - ink.paper, 1e-6), 0.0, 1.0)

    @functools.cached_property
    def groups(self) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
        """The blobs with those stacked above one another joined (`_stacked`): labels (H, W)
        1..g and the g boxes."""
        return _stacked(self.labels, self.boxes)

    @functools.cached_property
    def blobs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each of the `groups` within its box: its pixels (h, w) bool and its ink (h, w)."""
        labels, boxes = self.groups
        masks = [labels[box] == number for number, box in enumerate(boxes, start=1)]
        return [(mine, self.brightness[box] * mine) for mine, box in zip(masks, boxes,
                                                                        strict=True)]

    @functools.cached_property
    def cuts(self) -> list[list[int]]:
        """Where each of the `groups` is cut (`_cuts_of`), in their order: finer where
        several of them are tall (ROW_CUT_SPACING) than where one is (CUT_SPACING)."""
        tall = sum(box[0].stop - box[0].start >= TALL * self.height for box in self.groups[1])
        spacing = ROW_CUT_SPACING if tall > 1 else CUT_SPACING
        return [_cuts_of(blob, self.height, spacing) for _, blob in self.blobs]


def find_writing(source: Picture, *, name: str | None = None) -> Writing:
    """The ink at the first of READ_SIDES where the number is at least MIN_DIGIT_SIDE px tall,
    with its blobs (any source `preprocess_image` takes). Raises ImageError when the picture
    cannot be read or holds no ink that stands out."""
    label = name_of(source, name)
    gray, scale = load_gray(source, label, WORK_SIDE)
    coarse = shrink(gray, MODEL_SIDE)
    dark_ink, paper = read_paper(coarse)
    loaded = WORK_SIDE
    for side in READ_SIDES:
        if side > max(gray.shape) and side > loaded:  # a larger copy: decode again
            if max(gray.shape) < loaded:
                break  # the file is no larger than what we have
            gray, scale = load_gray(source, label, side)
            loaded = side
        copy = coarse if side == MODEL_SIDE else shrink(gray, side)  # the first is made
        ink = _ink(copy, paper, dark_ink, scale * gray.shape[1] / copy.shape[1])
        labels, boxes = _number_blobs(ink, label)
        heights = np.array([b[0].stop - b[0].start for b in boxes])  # (n,)
        if heights.max() >= MIN_DIGIT_SIDE or max(copy.shape) < side:
            break
    height = quantile(heights[heights >= TALL * heights.max()], 0.75)
    return Writing(ink, labels, boxes, height, label)


def segment(writing: Writing) -> Segmentation:
    """The candidate digits of a number: its blobs cut into atoms, every run of them."""
    atoms, count = _atoms(writing)
    if count > MAX_ATOMS:
        return Segmentation(atoms=count)
    return _candidates(writing, atoms, ndimage.find_objects(atoms, count))


def as_one_digit(writing: Writing, *, uncut: bool = False) -> Segmentation | None:
    """The writing as one candidate digit, when its blobs are all stacked (a broken stroke at
    most) and none of it is to be cut -- `segment` would then propose no other, at more cost,
    and the reading needs no best path -- or, with `uncut`, even where it is. None otherwise."""
    labels, boxes = writing.groups
    if len(boxes) != 1 or (not uncut and writing.cuts[0]):
        return None
    return _candidates(writing, labels, boxes, max_width=np.inf)


def _candidates(writing: Writing, atoms: np.ndarray, atom_boxes: list[tuple[slice, slice]],
                max_width: float = MAX_WIDTH) -> Segmentation:
    """Every run of up to MAX_GROUP consecutive atoms (labels (H, W) 1..n, in reading order,
    and their n boxes) that may be a digit, drawn into 28x28, at most `max_width` heights
    wide."""
    ink, height, label = writing.ink, writing.height, writing.name
    residual = ink.residual
    count = len(atom_boxes)
    atom_mass = np.bincount(atoms.ravel(), writing.brightness.ravel(), count + 1)[1:]  # (n,)

    spans, images, file_boxes = [], [], []
    for start in range(count):
        box = atom_boxes[start]
        for stop in range(start + 1, min(start + MAX_GROUP, count) + 1):
            if stop > start + 1:
                box = _union(box, atom_boxes[stop - 1])
            if box[1].stop - box[1].start > max_width * height:
                break
            if box[0].stop - box[0].start < TALL * height:  # a speck or a bit of a stroke:
                continue  # left out of the number, or part of a taller candidate
            mine = (atoms[box] > start) & (atoms[box] <= stop)  # (h, w)
            try:
                digit, core = ink_box(residual[box], mine, ink.paper, ink.sigma, label)
            except ImageError:  # too faint to be drawn: not a candidate
                continue
            spans.append((start, stop))
            images.append(to_mnist(digit))
            top, left = box[0].start + core[0].start, box[1].start + core[1].start
            bottom, right = box[0].start + core[0].stop, box[1].start + core[1].stop
            file_boxes.append([round(v * ink.scale) for v in (left, top, right, bottom)])
    atom_heights = np.array([b[0].stop - b[0].start for b in atom_boxes])
    tall = atom_heights >= TALL * height
    typical = quantile(atom_mass[tall], 0.5) if tall.any() else 0.0
    skippable = (atom_mass < SKIP_SHARE * typical) | ~tall
    sides = np.array(file_boxes, dtype=float).reshape(-1, 4)
    aspect = (sides[:, 2] - sides[:, 0]) / np.maximum(sides[:, 3] - sides[:, 1], 1.0)  # (C,)
    shape = -WIDE_COST * np.maximum(aspect - WIDEST, 0.0)  # (C,)
    return Segmentation(count, spans, np.array(images, dtype=np.uint8).reshape(-1, 28, 28),
                        file_boxes, skippable, shape, height * ink.scale)


def best_path(segmentation: Segmentation, scores: np.ndarray) -> list[int]:
    """The candidates (indices, in reading order) that cover every atom once, skippable ones
    optionally, with the highest total score: their scores (C,), log-probabilities, plus
    their shape scores. Empty when no path exists.

    Overlapping digits share ink no cut can part. Letting neighbours share an atom (both
    candidates holding it) at a cost of 0.5 (log-probability), `pretrained` on four
    development sets (2026-11-30): numbers +0.3, 0.0, +0.7 and 0.0 points, hard ones -0.7,
    0.0, +0.7 and -1.3; at 1.5 no reading changed. Not adopted: the cuts seldom fall where an
    overlap begins and ends."""
    if len(segmentation.shape_scores):
        scores = scores + segmentation.shape_scores
    count = segmentation.atoms
    best = np.full(count + 1, -np.inf)  # best[i]: the best path over atoms [0, i)
    best[0] = 0.0
    back: list[tuple[int, int | None]] = [(0, None)] * (count + 1)  # (from, candidate)
    ending: dict[int, list[int]] = {}
    for index, (_, stop) in enumerate(segmentation.spans):
        ending.setdefault(stop, []).append(index)
    for stop in range(1, count + 1):
        if segmentation.skippable[stop - 1] and best[stop - 1] + SKIP_SCORE > best[stop]:
            best[stop] = best[stop - 1] + SKIP_SCORE
            back[stop] = (stop - 1, None)
        for index in ending.get(stop, []):
            start = segmentation.spans[index][0]
            total = best[start] + float(scores[index])
            if total > best[stop]:
                best[stop] = total
                back[stop] = (start, index)
    if not np.isfinite(best[count]):
        return []
    path, at = [], count
    while at > 0:
        at, index = back[at]
        if index is not None:
            path.append(index)
    return path[::-1]


def crowded(segmentation: Segmentation, path: list[int]) -> bool:
    """Whether two neighbours on the path stand closer, centre to centre, than MIN_PITCH of
    the writing's height: closer than digits are ever written (hatching, a scribble)."""
    boxes = np.array([segmentation.boxes[i] for i in path], dtype=float).reshape(-1, 4)
    centres = (boxes[:, 0] + boxes[:, 2]) / 2  # (k,)
    return bool((np.diff(centres) < MIN_PITCH * segmentation.height).any())


def slants(images: np.ndarray) -> np.ndarray:
    """(k,) how far each image's ink (k, 28, 28) moves right per row down, from its second
    moments (0 upright, < 0 leaning right as / does; a shear by minus this stands it up)."""
    ink = images.astype(np.float64)  # (k, 28, 28)
    rows = np.arange(images.shape[1], dtype=np.float64)[None, :, None]  # (1, 28, 1)
    cols = np.arange(images.shape[2], dtype=np.float64)[None, None, :]  # (1, 1, 28)
    mass = np.maximum(ink.sum(axis=(1, 2)), 1e-9)  # (k,)
    row_mean = (ink * rows).sum(axis=(1, 2)) / mass  # (k,)
    col_mean = (ink * cols).sum(axis=(1, 2)) / mass
    down = rows - row_mean[:, None, None]  # (k, 28, 1)
    across = cols - col_mean[:, None, None]  # (k, 1, 28)
    spread = np.maximum((ink * down**2).sum(axis=(1, 2)), 1e-9)  # (k,)
    return (ink * down * across).sum(axis=(1, 2)) / spread


def leaning_apart(images: np.ndarray, labels: list[int | None]) -> bool:
    """Whether two neighbours read as 1, their images (k, 28, 28) in reading order, slant
    more than LEAN_APART apart: one is a stroke of something else (`LEAN_APART`)."""
    ones = np.array([label == 1 for label in labels], dtype=bool)  # (k,)
    pairs = np.flatnonzero(ones[:-1] & ones[1:])  # (p,) the first of each pair
    if not pairs.size:
        return False
    slant = slants(images)  # (k,)
    return bool((np.abs(slant[pairs] - slant[pairs + 1]) > LEAN_APART).any())
