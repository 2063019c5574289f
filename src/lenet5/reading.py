"""Reading a picture: every digit in it, in reading order, or the answer that it is not one.

`images.numbers.find_writing` finds the ink; `segment` proposes candidate digits, the
network scores them all in one forward pass, `images.numbers.best_path` picks the reading, and
`refusal` decides about each digit of it (read again, steadier, by `refusal.steady_log_probs`);
digits crowded closer than any written side by side (hatching, a scribble's pieces) are
refused as a whole. Ink that is one candidate and nothing more (`as_one_digit`: one digit,
nothing to cut), or that would be cut but surely reads as one digit as it is (SURE), skips the
proposing. The answer is what `lenet5 predict --json`, `Model.read` and the HTTP API give:

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
SURE = 0.9
"""Ink that would be cut (its blobs wider than `numbers.SPLIT_WIDTH` of its height: half of
MNIST's digits are) but reads as one digit with at least this steady probability is read as
that digit, uncut; a whole this sure wins the best path anyway unless every piece is as sure.
On the development sets (seeds 1501-1504) it changed no answer; cutting the page's 7 cost a
third of the server's time for it."""


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


def read(model: Classifier, source: Source, *, name: str | None = None, top_k: int = 3,
         threshold: float | None = None, layers: bool = False) -> Reading:
    """Read the digits in `source` (any source `preprocess_image` takes); with `layers`, keep
    what every layer of `model` (a `Model`) computed for the first digit read. Raises
    ImageError when it cannot be read or holds no ink; anything else is an answer.

    BLAS runs on one thread here: a few dozen 28x28 candidates are too small a job to share,
    and on a busy machine two threads waiting for each other took 100 times longer (200 ms
    against 2 ms for 22 candidates, measured on the 2-core machine while others worked)."""
    with one_blas_thread():
        if not layers:
            return _read(model, source, name, top_k, threshold)[0]
        network = _FirstPass(model)
        reading, path = _read(network, source, name, top_k, threshold)
        if path:  # candidate i is image i of the first pass
            reading.layers = [(layer, values[path[0]]) for layer, values in network.layers]
        return reading


class _FirstPass:
    """A model that keeps every layer's output of its first forward pass: `_read`'s first
    pass is over the candidates, plain, so the first digit read is among them, and the page
    sees its layers without a pass of their own."""

    def __init__(self, model: Classifier):
        self.model, self.arch, self.metadata = model, model.arch, model.metadata
        self.layers: list[tuple[str, np.ndarray]] | None = None

    def logits(self, images: np.ndarray) -> np.ndarray:
        if self.layers is not None:
            return self.model.logits(images)
        self.layers = self.model.feature_maps(images)
        return self.layers[-1][1]  # the last layer's output is the logits

    def again(self) -> None:
        """Keep the layers of the next pass instead: the candidates read changed."""
        self.layers = None


def _read(model: Classifier, source: Source, name: str | None, top_k: int,
          threshold: float | None) -> tuple[Reading, list[int]]:
    """The reading, and the candidates read (indices into the segmentation's)."""
    limit = refusal.threshold(model.metadata, threshold)
    writing = find_writing(source, name=name)
    candidates, read_whole = _as_one_digit(model, writing)
    if candidates is None:
        candidates = segment(writing)
    if candidates.atoms > MAX_ATOMS:
        return Reading(_answer([], f"too many separate marks ({candidates.atoms}, more "
                               f"than {MAX_ATOMS}) to be a number")), []
    if not candidates.spans:
        return Reading(_answer([], NOTHING_READ)), []
    lone = len(candidates.spans) == 1  # one pass reads it plainly and steadily (a pass costs
    # 0.08 ms and each image 0.04 ms here: with more candidates, reading all of them steadily
    # costs more than a second pass over the path's)
    if lone:
        scores, steady = read_whole or refusal.plain_and_steady_log_probs(model,
                                                                          candidates.images)
    else:
        scores = refusal.log_confidence(model.logits(candidates.images), model.arch.loss)
    path = best_path(candidates, scores.max(axis=1))
    if not path:
        return Reading(_answer([], NOTHING_READ)), []
    log_probs = (steady[path] if lone else  # (k, K)
                 refusal.steady_log_probs(model, candidates.images[path], scores[path]))
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
    return Reading(_answer(digits, reason), candidates.images[path], np.exp(log_probs)), path


def _as_one_digit(model: Classifier, writing: Writing
                  ) -> tuple[Segmentation | None, tuple[np.ndarray, np.ndarray] | None]:
    """The writing as one candidate digit, and its plain and steady log-probabilities (1, K)
    each, where it is one: its blobs all stacked (`as_one_digit`), and nothing of it to cut,
    or ink that would be cut but reads as one digit SURE-ly as it is. (None, None) where it is
    to be segmented."""
    whole = as_one_digit(writing, uncut=True)
    read = (refusal.plain_and_steady_log_probs(model, whole.images)
            if whole is not None and whole.spans else None)
    if whole is None or (read is not None and np.exp(read[1].max()) >= SURE) or (
            not writing.cuts[0]):  # where it is sure, where to cut need not be found
        return whole, read
    if isinstance(model, _FirstPass):
        model.again()  # the segmentation's pass is the one read
    return None, None


def _answer(digits: list[dict], reason: str | None) -> dict:
    """The answer's fields from the digits read and the reason for a refusal (or None)."""
    text = None if reason else "".join(str(d["label"]) for d in digits)
    single = digits[0] if len(digits) == 1 else None
    confidence = float(np.prod([d["confidence"] for d in digits])) if digits else 0.0
    return {"label": single["label"] if single and not reason else None,
            "confidence": confidence, "top": single["top"] if single else [],
            "text": text, "digits": digits, "rejected": reason}
