"""`lenet5 predict`: classify users' image files, one result (or error) per file.

A bad file never stops the others: it becomes ``{"file", "error"}`` in the results, with the
one-sentence reason `lenet5.images` gives (unreadable, truncated, not an image, too large, no
ink). Each digit goes through `lenet5.images.preprocess_image`, as in the API and the web page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError, Lenet5Error
from .files import write_atomic
from .images import open_image, preprocess_image
from .images.decode import has_alpha
from .model import Model

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif",
                            ".tif", ".tiff", ".webp"})
"""Files with these suffixes are taken from folders; files named explicitly are always tried."""


def find_images(paths: Sequence[str | Path]) -> list[str]:
    """Files as given; folders searched recursively, sorted, keeping image suffixes only.

    Paths are reported as given or found (a folder's prefix is kept), as `--json` promises.
    """
    found: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(str(f) for f in sorted(path.rglob("*"))
                         if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            found.append(str(given))
    return found


def classify(model: Model, digit: np.ndarray, top_k: int = 3) -> dict:
    """``{"label", "confidence", "top": [[label, prob], ...]}`` for one (28, 28) digit."""
    probs = model.predict_proba(digit)[0]  # (K,)
    order = np.argsort(-probs, kind="stable")[:max(1, top_k)]
    return {"label": int(order[0]), "confidence": float(probs[order[0]]),
            "top": [[int(k), float(probs[k])] for k in order]}


def predict_file(model: Model, file: str | Path, top_k: int = 3) -> tuple[dict, np.ndarray | None]:
    """(result, the 28x28 the network saw or None on error) for one file; never raises for a
    bad image. JPEGs are decoded at reduced scale, so large photos stay fast."""
    try:
        digit = preprocess_image(file)  # (28, 28) uint8
    except ImageError as exc:
        return {"file": str(file), "error": str(exc)}, None
    return {"file": str(file), **classify(model, digit, top_k)}, digit


def _picture_names(files: Sequence[str]) -> list[str]:
    """A distinct PNG name per file: its stem, with -2, -3 ... where stems repeat."""
    used: set[str] = set()
    names = []
    for file in files:
        stem = Path(file).stem or "image"
        name, n = f"{stem}.png", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        names.append(name)
    return names


def side_by_side(original: Image.Image, processed: np.ndarray, *, height: int = 224) -> Image.Image:
    """The original next to what the network sees (28x28 blown up with sharp pixels), to check
    that preprocessing found the digit; what `lenet5 predict --save-input` writes."""
    if has_alpha(original):
        rgba = original.convert("RGBA")
        original = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    left = original.convert("RGB")
    scale = min(height / left.height, 4 * height / left.width)
    left = left.resize(
        (max(1, round(left.width * scale)), max(1, round(left.height * scale))),
        Image.Resampling.LANCZOS,
        reducing_gap=3.0,
    )
    right = Image.fromarray(np.asarray(processed, dtype=np.uint8))
    right = right.resize((height, height), Image.Resampling.NEAREST).convert("RGB")
    gap = max(4, height // 28)
    picture = Image.new("RGB", (left.width + gap + height, height), (128, 128, 128))
    picture.paste(left, (0, (height - left.height) // 2))
    picture.paste(right, (left.width + gap, 0))
    return picture


def save_input_picture(file: str, digit: np.ndarray, path: Path) -> None:
    """Write the original beside the 28x28 the network saw (`--save-input`), atomically."""
    picture = io.BytesIO()
    side_by_side(open_image(file), digit).save(picture, format="PNG")
    write_atomic(path, picture.getvalue())


def predict_files(model: Model, files: Sequence[str], *, top_k: int = 3,
                  save_input: str | Path | None = None) -> list[dict]:
    """One result per file, in order: a prediction, or an error entry for a bad file."""
    if top_k < 1:
        raise Lenet5Error(f"--top-k must be at least 1, got {top_k}.")
    if save_input is not None:
        folder = Path(save_input)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Lenet5Error(f"cannot create --save-input folder {folder} "
                              f"({exc.strerror or exc}); choose another folder.") from None
    results = []
    for file, name in zip(files, _picture_names(files), strict=True):
        result, digit = predict_file(model, file, top_k)
        if save_input is not None and digit is not None:
            try:
                save_input_picture(file, digit, folder / name)
            except Lenet5Error as exc:  # e.g. a full disk: this file fails, the others go on
                result = {"file": str(file), "error": f"--save-input: {exc}"}
        results.append(result)
    return results
