"""Reading a picture: every digit in it, in reading order, or the answer that it is not one.

`images.numbers.find_writing` finds the ink; `segment` proposes candidate digits, the network
scores them all steadily in one forward pass (`refusal.steady_log_probs`: each also thinner,
thicker and a pixel off), `images.numbers.best_path` picks the reading on those scores, and
`refusal` decides about each digit of it (among two SURE digits or more, not all 1s, at a
lower threshold: IN_NUMBER; two digits or more of which none is SURE are refused as a whole, and
so is a picture of one mark cut into digits not all SURE);
digits crowded closer than any written side by side (hatching, a scribble's pieces), or 1s
slanting apart (a V's strokes, cut where they meet), are refused as a whole. Ink that is one
candidate and nothing more (`as_one_digit`: one digit, nothing to cut), or that would be cut
but surely reads as one digit as it is (SURE), skips the proposing; ink of one piece a little
wider (WHOLE_WIDTH) that surely reads as one digit is that digit unless its cut pieces read
surer. The answer is what `lenet5 predict --json`, `Model.read` and the HTTP API give:

    {"text": "2024" or None, "digits": [{"label", "confidence", "box", "top"}, ...],
     "label": the digit when exactly one was read, "confidence", "top", "rejected": None or why}

A refusal is an answer: "label" and "text" are None and "rejected" says why; the digits read
are still listed, each refused one with "label" None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import refusal
from .images.decode import Picture
from .images.numbers import (
    LEAN_APART,
    MAX_ATOMS,
    MIN_PITCH,
    Segmentation,
    Writing,
    as_one_digit,
    best_path,
    crowded,
    find_writing,
    leaning_apart,
    segment,
)
from .outputs import HIGHEST_PROBABILITY
from .refusal import Classifier
from .threads import one_blas_thread

NOTHING_READ = "no mark in it could be read as a digit"
SURE = 0.9
"""A digit this probable or more is read surely. A reading of two digits or more, each accepted,
none of them SURE, is refused as a whole (where there is a threshold at all, and where the
network's probabilities can reach SURE: the 1998 network's MAP outputs never pass 0.53, so
neither this nor IN_NUMBER nor reading SURE ink whole applies to it): scribbles, shapes
and letters cut in pieces read as numbers of unsure digits; numbers people write rarely do.
Five seeds of the default recipe on two development sets (600 numbers, 150 and 300 hard ones,
600 non-digits, 1,000 single photos each): non-digits refused +3.9 and +4.2 points, numbers
read -0.03 and -0.30, hard ones -0.27 and -0.27, single photos as right as before (+0.14 and
+0.02 refused: read as two digits, wrong before). Requiring two sure digits (or half of them)
instead, simulated on the same readings: non-digits +4.8, numbers -1.1. Letters cut in pieces
(an M read as 11, an h as 17) are one mark cut into digits; holding such digits to SURE,
simulated with `pretrained` on two development sets (300 numbers, 150 hard ones, 400
non-digits each): non-digits +4.6 and +2.1 points, but numbers -9.0 and -10.3, hard ones -11.4
and -10.0 (touching digits are cut from one mark too, and read less surely); held to 0.6
instead, non-digits +2.0 and +1.3, numbers -2.3 and -2.3. Not adopted.

Held to SURE (or to the threshold, where that is higher) only where the mark is the picture's
whole writing, one group of blobs (`numbers.as_one_digit`), it is: such a picture cut into two
digits or more is a number only where each of them is SURE, else it is refused as a whole.
Letters, signs and scribbles are one mark, and their pieces read as unsure digits (a drawn M as
14, other letters as 11 or 17); a number is one mark only where all its digits touch, or stand
stacked (`numbers.STACKED`). A letter with a speck beside it is two groups, and escapes. Five
seeds of the default recipe on two development sets (made with seeds 1501-1504 and 1601-1604:
300 numbers, 150 hard ones, 200 non-digits, 500 single photos each; 2026-11-30): non-digits
refused 73.3 -> 77.6% and 82.6 -> 85.5%, numbers read -0.33 and -0.07 points, hard ones -0.13
and -1.07, single photos as right as before (refused +0.0 and +0.12); at 0.8 instead of SURE,
non-digits +2.9 and +2.2, numbers -0.20 and -0.07. `pretrained` on the same sets: 17 more of the
400 non-digits refused (read as 11, 14, 17, 41, 76, 81, 177, 188), 2 of the 600 numbers lost (a
98 and a 74, touching, one digit read at 0.87 and 0.65)."""
SURE_WIDTH = 0.9
"""Ink that would be cut (wider than `numbers.SPLIT_WIDTH` of its height, as half of MNIST's
digits are) but is no wider than SURE_WIDTH of its height and, read whole, at least SURE
probable (and accepted) is read as that one digit, uncut: cutting the page's 7 (0.76 as wide
as tall) and scoring its pieces cost a third of the server's time for it. On the development,
evaluation and real-world sets (seeds 1501-1504 and 2601-2604, 1,000 photos and 1,000
drawings) no answer changed. Two touching digits that narrow (a 1 written across another
digit) may read as the one digit: 7 of 610 made-up pairs of MNIST test digits overlapping by
12-24 of their 28 columns did ..."""
WHOLE_WIDTH = 2.5
"""... and ink up to WHOLE_WIDTH of its height wide, one group of stacked blobs (a digit written
flat: a 2, 5 or 7 twice as wide as tall) read whole SURE-ly is read as that one digit if the
reading of its cut pieces is less sure (the product of their probabilities); cut in two, it
read as two digits, one refused. Two development sets' single photos 98.5% and 97.6% right
without, 98.7% and 97.7% with; `benchmarks/real_world.py`'s photos 97.9% and 98.0%, drawings
97.4% and 97.7%; every number, hard number and non-digit of the development sets as before
(without the comparison with the pieces, a 2 and a 1 touching, 1.0 as wide as tall, read as
a 2). Measured and not adopted, five seeds of the default recipe on four development sets
(2,000 single photos, 2026-11-30): ink of several groups side by side read whole the same way
(a 5 whose bar stands apart to its right) read one more single photo right and changed nothing
else; the writing read whole where its pieces were refused, if that reading's probability is
0.5 or more (a 4 in two strokes read as 21, an 8 as a "(" and a 6), read +0.04 to +0.40 points
more single photos right but refused 0.0 to 1.0 points fewer non-digits, the goal furthest
from reach."""


IN_NUMBER = 0.5
"""The other digits of a reading in which at least two are SURE, not all of them 1s (the
picture is plainly a number), are accepted down to IN_NUMBER times the threshold: where every
other digit was read, one refused digit had taken the whole number's text with it. Parallel
strokes (hatching, a letter's legs) read as sure 1s, so 1s alone do not make a number of it.
Five seeds of the default recipe on two development sets: numbers read +2.1 and +1.8 points,
hard ones +2.4 and +2.3, non-digits and single photos as before (with 1s counted too,
non-digits refused -0.1 and -0.2; the evaluation set's hatching read as 11111111111). The
price: 61% of the digits so accepted are right, so numbers refused fell 6.8 -> 2.6% and 7.7 ->
3.6%, numbers read wrong rose 10.4 -> 12.5% and 11.1 -> 13.4%, and of the digits accepted in
numbers 2.1% are wrong instead of 1.8%. A quarter of the threshold instead (2026-11-30, five
seeds, the same sets): numbers +0.13 and +0.20 points, hard ones +0.53 and +0.27, non-digits and
single photos as before; not worth the wrong digits it lets in."""


@dataclass
class Reading:
    """An answer, the 28x28 image the network saw for each digit in it (k, 28, 28), the
    probabilities each digit was decided on (k, K): the page shows them per digit; and, where
    asked for, what each layer computed for the first digit read."""

    answer: dict
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 28, 28), np.uint8))
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    layers: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (C, H, W) or (F,)
    # per layer, as `Model.feature_maps` gives them, of the first digit read


def _top(log_probs: np.ndarray, top_k: int) -> list[list]:
    order = np.argsort(-log_probs, kind="stable")[:max(1, top_k)]
    return [[int(k), float(np.exp(log_probs[k]))] for k in order]


def read(model: Classifier, source: Picture, *, name: str | None = None, top_k: int = 3,
         threshold: float | None = None, layers: bool = False) -> Reading:
    """Read the digits in `source` (any source `preprocess_image` takes); with `layers`, keep
    what every layer of `model` (a `Model`) computed for the first digit read. Raises
    ImageError when it cannot be read or holds no ink; anything else is an answer.

    BLAS runs on one thread here: a few dozen 28x28 candidates are too small a job to share,
    and on a busy machine two threads waiting for each other took 100 times longer (200 ms
    against 2 ms for 22 candidates, measured on the 2-core machine while others worked)."""
    with one_blas_thread():
        reading = _read(model, source, name, top_k, threshold)
        if layers and len(reading.images):  # one more pass, over one image: 0.1 ms
            reading.layers = [(layer, values[0]) for layer, values in
                              model.feature_maps(reading.images[:1])]
        return reading


def _read(model: Classifier, source: Picture, name: str | None, top_k: int,
          threshold: float | None) -> Reading:
    """The writing read whole where it surely is one digit (or can be nothing else), else the
    best path through its candidates."""
    limit = refusal.threshold(model.metadata, threshold)
    writing = find_writing(source, name=name)
    whole = as_one_digit(writing, uncut=True)  # one group of stacked blobs, uncut, or None
    read_whole = _read_whole(model, writing, whole)
    if whole is not None and not writing.cuts[0]:  # nothing to cut: the whole is all there is
        return _reading(model, whole, read_whole, limit, top_k)[0]
    whole_confidence = 0.0 if read_whole is None else float(np.exp(read_whole.max()))
    sure = whole_confidence >= _surely(limit)
    if sure and _within(whole.boxes[0], SURE_WIDTH):
        return _reading(model, whole, read_whole, limit, top_k)[0]  # no need to find the cuts
    reading, path = _reading(model, segment(writing), None, limit, top_k,
                             one_mark=whole is not None)  # one group of blobs: see SURE
    if sure and len(path) > 1 and reading.answer["confidence"] < whole_confidence:
        return _reading(model, whole, read_whole, limit, top_k)[0]
    return reading


def _read_whole(model: Classifier, writing: Writing, whole: Segmentation | None
                ) -> np.ndarray | None:
    """The steady log-probabilities (1, K) of the writing read whole (`whole`,
    `as_one_digit`'s), where it may be the reading: nothing of it is to be cut, or it is at
    most WHOLE_WIDTH of its height wide; None where it is not read (or too faint to be)."""
    if whole is None or not whole.spans:
        return None
    if writing.cuts[0] and not _within(whole.boxes[0], WHOLE_WIDTH):
        return None
    return refusal.steady_log_probs(model, whole.images)


def _reading(model: Classifier, candidates: Segmentation,
             read_whole: np.ndarray | None, limit: float, top_k: int, one_mark: bool = False
             ) -> tuple[Reading, list[int]]:
    """The best path through the candidates, each digit on it accepted or refused at `limit`,
    and the path; `read_whole`: the lone candidate's steady reading, if made; `one_mark`: the
    candidates are pieces of the picture's one mark, whose digits must all be sure (SURE)."""
    if candidates.atoms > MAX_ATOMS:
        return Reading(_answer([], f"too many separate marks ({candidates.atoms}, more "
                               f"than {MAX_ATOMS}) to be a number")), []
    if not candidates.spans:
        return Reading(_answer([], NOTHING_READ)), []
    if read_whole is not None:  # the lone candidate, read already
        steady = read_whole
    else:
        # Every candidate read steadily, not only the path's: the path is chosen on the same
        # readings the digits are decided on. Five seeds of the default recipe, two development
        # sets: numbers read +0.5 and +0.5 points, hard ones +0.8 and +0.3, non-digits refused
        # -0.4 and -0.2, single photos as before; the forward pass is 7 times as large.
        steady = refusal.steady_log_probs(model, candidates.images)  # (C, K)
    path = best_path(candidates, steady.max(axis=1))
    if not path:
        return Reading(_answer([], NOTHING_READ)), []
    log_probs = steady[path]  # (k, K)
    confidences = np.exp(log_probs.max(axis=1))  # (k,)
    surely = _surely(limit)
    sure_labels = log_probs.argmax(axis=1)[confidences >= surely]
    in_number = len(sure_labels) >= 2 and bool(np.any(sure_labels != 1))
    if in_number:
        limit *= IN_NUMBER
    digits, refused = [], []
    for index, log_p, confidence in zip(path, log_probs, confidences.tolist(), strict=True):
        accepted = confidence >= limit
        digits.append({"label": int(np.argmax(log_p)) if accepted else None,
                       "confidence": confidence, "box": candidates.boxes[index],
                       "top": _top(log_p, top_k)})
        if not accepted:
            refused.append(digits[-1])
    reason = None
    if crowded(candidates, path):
        reason = (f"its marks are too close together ({MIN_PITCH:g} of their height or less "
                  "apart) to be digits written side by side")
    elif refused:
        worst = min(refused, key=lambda d: d["confidence"])
        guess = worst["top"][0]
        what = "it is" if len(digits) == 1 else f"the mark at {worst['box']} is"
        shown, bound = shown_apart(guess[1], limit)
        held_to = (f"{bound}, {IN_NUMBER:g} of the threshold {limit / IN_NUMBER:.2f} in a number"
                   if in_number else f"the threshold {bound}")
        reason = (f"{what} not a digit: its best guess, {guess[0]}, has probability {shown}, "
                  f"below {held_to}")
    elif leaning_apart(candidates.images[path], [d["label"] for d in digits]):
        reason = (f"two marks side by side that read as 1 slant more than {LEAN_APART:g} apart, "
                  "more than one hand's 1s do: they are strokes of a letter or a sign")
    elif len(digits) >= 2 and limit > 0 and HIGHEST_PROBABILITY[model.arch.loss] > SURE:
        if not len(sure_labels):
            surest = max(digits, key=lambda d: d["confidence"])
            shown, bound = shown_apart(surest["confidence"], SURE)
            reason = (f"none of its {len(digits)} marks reads surely as a digit (the surest, "
                      f"{surest['label']}, has probability {shown}, below {bound}); a number "
                      "has at least one that does")
        elif one_mark and confidences.min() < surely:
            least = digits[int(confidences.argmin())]
            shown, bound = shown_apart(least["confidence"], surely)
            reason = (f"the mark at {least['box']} is read as {least['label']} with probability "
                      f"{shown}, below {bound}: the picture is one piece of ink cut into "
                      f"{len(digits)} marks, a number only where each reads surely")
    return Reading(_answer(digits, reason), candidates.images[path], np.exp(log_probs)), path


def shown_apart(value: float, limit: float) -> tuple[str, str]:
    """`value`, below `limit`, and `limit` written with the fewest decimals (two or more) at
    which the first, rounded down, reads below the second: 0.3905 below 0.3933 is "0.390"
    below "0.393", never "0.39" below "0.39"."""
    for places in range(2, 17):
        scale = 10**places  # rounded down, but not a binary hair below: 0.29 is not "0.28"
        shown = f"{math.floor(value * scale * (1 + 1e-12)) / scale:.{places}f}"
        bound = f"{limit:.{places}f}"
        if float(shown) < float(bound):
            break
    return shown, bound


def _surely(limit: float) -> float:
    """The probability a digit is read surely at: SURE, or the threshold where that is higher."""
    return max(SURE, limit)


def _within(box: list[int], width: float) -> bool:
    """Whether a box [x0, y0, x1, y1] is at most `width` times as wide as it is tall."""
    x0, y0, x1, y1 = box
    return x1 - x0 <= width * (y1 - y0)


def _answer(digits: list[dict], reason: str | None) -> dict:
    """The answer's fields from the digits read and the reason for a refusal (or None)."""
    text = None if reason else "".join(str(d["label"]) for d in digits)
    single = digits[0] if len(digits) == 1 else None
    confidence = float(np.prod([d["confidence"] for d in digits])) if digits else 0.0
    return {"label": single["label"] if single and not reason else None,
            "confidence": confidence, "top": single["top"] if single else [],
            "text": text, "digits": digits, "rejected": reason}
