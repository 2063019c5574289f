"""Reading a picture: every digit in it, in reading order, or the answer that it is not one.

`images.numbers.segment` proposes candidate digits, the network scores them all in one
forward pass, `images.numbers.best_path` picks the reading, and `refusal` decides about each
digit of it (read again, steadier, by `refusal.steady_log_probs`); digits crowded closer than
any written side by side (hatching, a scribble's pieces) are refused as a whole. The answer
is what `lenet5 predict --json`, `Model.read` and the HTTP API give:

    {"text": "2024" or None, "digits": [{"label", "confidence", "box", "top"}, ...],
     "label": the digit when exactly one was read, "confidence", "top", "rejected": None or why}

A refusal is an answer: "label" and "text" are None and "rejected" says why; the digits read
are still listed, each refused one with "label" None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from . import refusal
from .images.numbers import (
    MAX_ATOMS,
    MIN_PITCH,
    Segmentation,
    Writing,
    as_one_digit,
    best_path,
    crowded,
    find_writing,
    segment,
)
from .refusal import Classifier
from .threads import one_blas_thread

Source = str | Path | bytes | BinaryIO | np.ndarray | Image.Image
NOTHING_READ = "no mark in it could be read as a digit"
SURE = 0.99
"""A picture whose ink may be one digit (`as_one_digit`) and that the network reads as one
with at least this probability is not cut into candidates: cutting would not change the
reading, and costs two thirds of it."""


@dataclass
class Reading:
    """An answer, the 28x28 image the network saw for each digit in it (k, 28, 28), and the
    probabilities each digit was decided on (k, K): the page shows them per digit."""

    answer: dict
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 28, 28), np.uint8))
    probs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def _top(log_probs: np.ndarray, top_k: int) -> list[list]:
    order = np.argsort(-log_probs, kind="stable")[:max(1, top_k)]
    return [[int(k), float(np.exp(log_probs[k]))] for k in order]


def read(model: Classifier, source: Source, *, name: str | None = None, top_k: int = 3,
         threshold: float | None = None) -> Reading:
    """Read the digits in `source` (any source `preprocess_image` takes). Raises ImageError
    when it cannot be read or holds no ink; anything else is an answer.

    BLAS runs on one thread here: a few dozen 28x28 candidates are too small a job to share,
    and on a busy machine two threads waiting for each other took 100 times longer (200 ms
    against 2 ms for 22 candidates, measured on the 2-core machine while others worked)."""
    with one_blas_thread():
        return _read(model, source, name, top_k, threshold)


def _read(model: Classifier, source: Source, name: str | None, top_k: int,
          threshold: float | None) -> Reading:
    limit = refusal.threshold(model.metadata, threshold)
    writing = find_writing(source, name=name)
    candidates, path, log_probs = _read_as_one_digit(model, writing)
    if not path:
        candidates = segment(writing)
        if candidates.atoms > MAX_ATOMS:
            return Reading(_answer([], f"too many separate marks ({candidates.atoms}, more "
                                   f"than {MAX_ATOMS}) to be a number"))
        if not candidates.spans:
            return Reading(_answer([], NOTHING_READ))
        scores = refusal.log_confidence(model.logits(candidates.images), model.arch.loss)
        path = best_path(candidates, scores.max(axis=1))
        if not path:
            return Reading(_answer([], NOTHING_READ))
        log_probs = refusal.steady_log_probs(model, candidates.images[path], scores[path])
    digits, refused = [], []
    for index, log_p in zip(path, log_probs, strict=True):
        confidence = float(np.exp(log_p.max()))
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
        reason = (f"{what} not a digit: its best guess, {guess[0]}, has probability "
                  f"{guess[1]:.2f}, below the threshold {limit:.2f}")
    return Reading(_answer(digits, reason), candidates.images[path], np.exp(log_probs))


def _read_as_one_digit(model: Classifier, writing: Writing
                       ) -> tuple[Segmentation | None, list[int], np.ndarray]:
    """(the writing as one candidate, [0], its steady log-probabilities (1, K)) when it may be
    one digit and the network reads it as one with at least SURE probability; else
    (None, [], empty). One forward pass reads it plainly and steadily at once."""
    candidates = as_one_digit(writing)
    if candidates is None or not candidates.spans:
        return None, [], np.zeros((0, 0))
    plain, steady = refusal.plain_and_steady_log_probs(model, candidates.images)  # (1, K) each
    if np.exp(plain.max()) < SURE:
        return None, [], np.zeros((0, 0))
    return candidates, [0], steady


def _answer(digits: list[dict], reason: str | None) -> dict:
    """The answer's fields from the digits read and the reason for a refusal (or None)."""
    text = None if reason else "".join(str(d["label"]) for d in digits)
    single = digits[0] if len(digits) == 1 else None
    confidence = float(np.prod([d["confidence"] for d in digits])) if digits else 0.0
    return {"label": single["label"] if single and not reason else None,
            "confidence": confidence, "top": single["top"] if single else [],
            "text": text, "digits": digits, "rejected": reason}
