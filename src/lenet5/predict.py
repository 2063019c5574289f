"""`lenet5 predict`: read users' image files, one result (or error) per file.

A bad file never stops the others: it becomes ``{"file", "error"}`` in the results, with the
one-sentence reason `lenet5.images` gives (unreadable, truncated, not an image, too large, no
ink). Each picture is read by `lenet5.reading` (every digit in it, or a refusal), as in the
API and the web page.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .errors import ImageError, Lenet5Error, cannot_read
from .files import cut_name, write_atomic
from .images import open_image
from .images.decode import has_alpha
from .model import Model
from .reading import Reading, read
from .refusal import check_threshold

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif",
                            ".tif", ".tiff", ".webp"})
"""Files with these suffixes are taken from folders; files named explicitly are always tried."""


NO_PICTURES = ("; pass image files (PNG, JPEG, BMP, GIF, TIFF, WebP) or folders holding "
               "them.")


@dataclass(frozen=True)
class Unreadable:
    """A folder given, or one under it, that yields no picture: an error entry of its own in
    the results, in its place, where it would otherwise be left out unsaid."""

    path: str
    error: str
    empty: bool = False  # a folder holding no picture, rather than one that cannot be read


def find_images(paths: Sequence[str | Path]) -> list[str | Unreadable]:
    """Files as given; folders searched recursively, sorted, keeping image suffixes only. A
    folder holding no picture, or one that cannot be listed (permissions), is an
    `Unreadable` in its place.

    Paths are reported as given or found (a folder's prefix is kept), as `--json` promises.
    """
    found: list[str | Unreadable] = []
    for given in paths:
        if not os.path.isdir(given):  # nor one that cannot be looked at: reading it says why
            found.append(str(given))
            continue
        pictures = _pictures_in(str(given))
        found.extend(pictures or [Unreadable(str(given), f"no images found in {given}"
                                             + NO_PICTURES, empty=True)])
    return found


def _pictures_in(folder: str) -> list[str | Unreadable]:
    """The files with image suffixes under ``folder`` (not in folders it links to, as
    Path.rglob did), and the folders under it that cannot be listed, sorted by path."""
    entries: dict[Path, str | Unreadable] = {}

    def cannot_list(exc: OSError) -> None:
        path = Path(exc.filename)
        entries[path] = Unreadable(str(path), cannot_read(path, exc.strerror))

    for root, _, names in os.walk(folder, onerror=cannot_list):
        pictures = (Path(root, name) for name in names
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES)
        entries.update((path, str(path)) for path in pictures if _may_be_a_picture(path))
    return [entries[path] for path in sorted(entries)]


def _may_be_a_picture(path: Path) -> bool:
    """A regular file, or one that cannot be looked at (reading it says why); not a link to
    nothing, a FIFO or a socket that a folder holds under an image's name."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True


def predict_file(model: Model, file: str | Path, top_k: int = 3,
                 threshold: float | None = None) -> tuple[dict, Reading | None]:
    """(result, the reading or None on error) for one file; never raises for a bad image.
    JPEGs are decoded at reduced scale, so large photos stay fast."""
    try:
        reading = read(model, file, top_k=top_k, threshold=threshold)
    except ImageError as exc:
        return {"file": str(file), "error": str(exc)}, None
    return {"file": str(file), **reading.answer}, reading


def _picture_names(files: Sequence[str | Path], folder: Path) -> list[str]:
    """A distinct PNG name in `folder` per file: its stem, with -2, -3 ... where stems repeat
    or the name is a picture being read (a user's photo is never written over); a stem cut
    where the name would pass NAME_BYTES."""
    read = {_resolved(Path(file)) for file in files}
    used: set[str] = set()
    names = []
    for file in files:
        stem = Path(file).stem or "image"
        name, n = _within_limit(stem, ".png"), 1
        while name in used or _resolved(folder / name) in read:
            n += 1
            name = _within_limit(stem, f"-{n}.png")
        used.add(name)
        names.append(name)
    return names


NAME_BYTES = 255
"""The longest file name most file systems take, in bytes."""


def _within_limit(stem: str, ending: str) -> str:
    """``stem + ending``, the stem cut (on a character) where the name would pass NAME_BYTES."""
    return cut_name(stem, NAME_BYTES - len(os.fsencode(ending))) + ending


def _resolved(path: Path) -> Path:
    """`path` absolute, its links followed where they lead somewhere (a loop is left as it is:
    reading the file says what is wrong with it)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return path.absolute()


def on_white(picture: Image.Image) -> Image.Image:
    """An RGB copy, anything transparent laid on white paper."""
    if has_alpha(picture):
        rgba = picture.convert("RGBA")
        picture = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return picture.convert("RGB")


def boxed(original: Image.Image, digits: list[dict]) -> Image.Image:
    """An RGB copy of the original with a box around each digit read: green where it was
    accepted, red where refused."""
    picture = on_white(original)
    draw = ImageDraw.Draw(picture)
    line = max(1, round(max(picture.size) / 200))
    for digit in digits:
        colour = (0, 170, 0) if digit["label"] is not None else (220, 0, 0)
        x0, y0, x1, y1 = digit["box"]
        draw.rectangle([x0 - line, y0 - line, x1 + line - 1, y1 + line - 1], outline=colour,
                       width=line)
    return picture


def side_by_side(original: Image.Image, processed: np.ndarray, *, height: int = 224) -> Image.Image:
    """The original next to what the network sees (each 28x28 blown up with sharp pixels), to
    check that preprocessing found the digits; what `lenet5 predict --save-input` writes.
    `processed` is one (28, 28) image or several (k, 28, 28), shown left to right."""
    left = on_white(original)
    scale = min(height / left.height, 4 * height / left.width)
    left = left.resize(
        (max(1, round(left.width * scale)), max(1, round(left.height * scale))),
        Image.Resampling.LANCZOS,
        reducing_gap=3.0,
    )
    digits = np.asarray(processed, dtype=np.uint8).reshape(-1, 28, 28)  # (k, 28, 28)
    gap = max(4, height // 28)
    width = left.width + len(digits) * (gap + height)
    picture = Image.new("RGB", (width, height), (128, 128, 128))
    picture.paste(left, (0, (height - left.height) // 2))
    for k, digit in enumerate(digits):
        right = Image.fromarray(digit).resize((height, height), Image.Resampling.NEAREST)
        picture.paste(right.convert("RGB"), (left.width + gap + k * (gap + height), 0))
    return picture


def save_input_picture(file: str, reading: Reading, path: Path) -> None:
    """Write the original, each digit read boxed, beside the 28x28 images the network saw
    (`--save-input`), atomically."""
    picture = io.BytesIO()
    side_by_side(boxed(open_image(file), reading.answer["digits"]), reading.images).save(
        picture, format="PNG")
    write_atomic(path, picture.getvalue())


def predict_files(model: Model, files: Sequence[str | Path | Unreadable], *, top_k: int = 3,
                  save_input: str | Path | None = None,
                  threshold: float | None = None) -> list[dict]:
    """One result per file, in order: a reading (or refusal), or an error entry for a bad
    file. `threshold` overrides the model's refusal threshold (`--reject-threshold`)."""
    return list(predict_each(model, files, top_k=top_k, save_input=save_input,
                             threshold=threshold))


def predict_each(model: Model, files: Sequence[str | Path | Unreadable], *, top_k: int = 3,
                 save_input: str | Path | None = None,
                 threshold: float | None = None) -> Iterator[dict]:
    """``predict_files``' results one by one, as each file is read: a command stopped
    part-way has shown those read. A picture --save-input could not write (a full disk) is
    said in the reading's "save_error"."""
    if top_k < 1:
        raise Lenet5Error(f"--top-k must be at least 1, got {top_k}.")
    pictures = [file for file in files if not isinstance(file, Unreadable)]
    names: Iterator[str] = iter(())
    if save_input is not None:
        folder = Path(save_input)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise Lenet5Error(f"--save-input {folder} is a file, not a folder; choose a "
                              "folder.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Lenet5Error(f"cannot create --save-input folder {folder} "
                              f"({exc.strerror or exc}); choose another folder.") from None
        names = iter(_picture_names(pictures, folder))  # one for each picture, in order
    check_threshold(threshold)
    for file in files:
        if isinstance(file, Unreadable):
            yield {"file": file.path, "error": file.error}
            continue
        name = next(names, None)
        result, reading = predict_file(model, file, top_k, threshold)
        if name is not None and reading is not None:
            try:
                save_input_picture(file, reading, folder / name)
                result["saved_input"] = str(folder / name)
            except Lenet5Error as exc:  # e.g. a full disk: this picture is lost, the others
                result.update(saved_input=None, save_error=str(exc))  # are still tried
        yield result
