"""Opening users' images safely, and turning them into grey arrays.

Sizes are checked before anything is decoded (a file over MAX_FILE_BYTES, a header over
MAX_PIXELS), only the decoders in FORMATS run, EXIF orientation is honoured, transparency is
composited onto white, and the result is shrunk to at most WORK_SIDE px: every later step
works on small float arrays.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, cannot_read

MAX_FILE_BYTES = 50 * 1024 * 1024
"""Files larger than this are refused before reading: no digit photo needs more."""
MAX_PIXELS = 40_000_000
"""Images with more pixels are refused from their header, before decoding (decompression bombs)."""
EXIF_ORIENTATION = 0x0112
"""The EXIF tag saying how the camera was held, honoured for files and PIL images alike."""
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
"""The only decoders Pillow may use (JPEG includes the MPO variant many phones write)."""

WORK_SIDE = 256
"""Longer side of the working copy: a digit 15% of a 4:3 photo's height still spans ~30 px,
more than the 20 px it ends up as, and every step stays fast."""

DECODED_SCALE = "lenet5_decoded_scale"
"""Where `decode` notes, in the image's info, the file's pixels per decoded pixel."""

Source = str | Path | bytes | BinaryIO
Picture = Source | np.ndarray | Image.Image
"""Anything a picture is taken as: a file, its bytes or a stream (`Source`), an array or a
Pillow image."""


def name_of(source: object, name: str | None) -> str:
    """The words error messages use for an image: its name, its path, or what it is."""
    if name:
        return name
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return str(filename) if filename else "the image"
    if isinstance(source, np.ndarray):
        return "the image array"
    return str(getattr(source, "name", "")) or "the uploaded image"


def read_bytes(source: Source, label: str) -> bytes:
    """Read a file, bytes or stream, refusing anything over MAX_FILE_BYTES: a file by its size
    before reading, and every read stops at MAX_FILE_BYTES + 1 whatever the size claimed."""
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(_too_large(label))
        return bytes(source)
    if isinstance(source, str | Path):
        with _open_regular(Path(source), label) as f:
            return _read_limited(f, label, os.fstat(f.fileno()).st_size)
    return _read_limited(source, label, 0)


def _too_large(label: str) -> str:
    return f"{label} is larger than {MAX_FILE_BYTES // 2**20} MB; use a smaller image."


def _read_limited(f: BinaryIO, label: str, expected: int) -> bytes:
    """At most MAX_FILE_BYTES + 1 bytes of `f`: `expected` + 1 in one read (a file's size: one
    buffer of the right size), then 1 MB chunks while it holds more than it said."""
    try:
        chunks = [f.read(min(expected, MAX_FILE_BYTES) + 1)]
        if not isinstance(chunks[0], bytes | bytearray):
            raise ImageError(f"{label} was opened as text; open it in binary mode ('rb').")
        size = len(chunks[0])
        while chunks[-1] and size <= MAX_FILE_BYTES:
            chunks.append(f.read(2**20))
            size += len(chunks[-1])
    except (OSError, ValueError) as exc:
        raise ImageError(cannot_read(label, exc)) from exc
    if size > MAX_FILE_BYTES:
        raise ImageError(_too_large(label))
    return bytes(chunks[0]) if size == len(chunks[0]) else b"".join(chunks)


def _open_regular(path: Path, label: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file of at most MAX_FILE_BYTES. Devices
    (/dev/zero never ends), FIFOs and sockets are refused; O_NONBLOCK keeps the open itself
    from waiting for a FIFO's writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError(f"{label} does not exist; check the path.") from None
    except OSError as exc:
        raise ImageError(cannot_read(label, exc.strerror or exc)) from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{label} is a directory, not an image file.")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{label} is not a regular file (a device, pipe or socket); "
                             "pass an image file.")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageError(_too_large(label))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def decode(source: Source, label: str, draft_side: int | None) -> Image.Image:
    """Decode an image fully, or raise ImageError; JPEGs may decode directly at a smaller scale."""
    data = read_bytes(source, label)
    if not data:
        raise ImageError(
            f"{label} is empty (0 bytes); use a PNG, JPEG, BMP, GIF, TIFF or WebP file."
        )
    with warnings.catch_warnings():  # a damaged file's metadata makes Pillow warn on stderr;
        warnings.simplefilter("ignore")  # it decodes or fails below: the user gets one sentence
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # checked first
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)  # lazy: reads the header only
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{label} is {width}x{height} pixels, more than the "
                    f"{MAX_PIXELS // 1_000_000} megapixels allowed; use a smaller image."
                )
            if draft_side is not None and img.format in ("JPEG", "MPO"):
                img.draft("L", fit((width, height), draft_side))  # DCT scaling, >= that size
            img.load()  # full decode here, so truncated files fail inside this try
            img.info[DECODED_SCALE] = width / img.width  # number boxes are given in the file's
            ImageOps.exif_transpose(img, in_place=True)  # pixels, whatever scale decoded
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(
                f"{label} is not an image that can be read; "
                "use a PNG, JPEG, BMP, GIF, TIFF or WebP file."
            ) from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageError(
                f"{label} is too large to decode safely; use a smaller image."
            ) from exc
        except Exception as exc:  # Pillow's decoders raise many types for damaged files
            raise _damaged(label, exc) from exc
    return img


def _damaged(label: str, exc: Exception) -> ImageError:
    return ImageError(f"{label} is damaged or truncated ({exc}); re-save or re-export it.")


def upright(img: Image.Image, label: str) -> Image.Image:
    """A caller's PIL image, decoded (a lazily opened file may turn out damaged) and turned as
    its EXIF orientation says, as `open_image` does."""
    try:
        img.load()
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
    except Exception as exc:  # Pillow's decoders raise many types for damaged files
        raise _damaged(label, exc) from exc
    return img


def open_image(source: Source, *, name: str | None = None) -> Image.Image:
    """Read a user's image file, bytes or stream safely: bounded size, EXIF orientation applied.

    ``name`` is what error messages call the image (e.g. an upload's filename). Raises
    ImageError, with one sentence naming the file, for anything that is not a readable image.
    """
    return decode(source, name_of(source, name), None)


def resize(gray: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a (H, W) float array to size = (rows, cols), in float32 and antialiased (PIL's
    "F" mode). Through the raw buffers both ways: Image.fromarray and np.asarray cost more
    than resizing the small images a reading takes (a third of the time, all told)."""
    data = np.ascontiguousarray(gray, dtype=np.float32)
    img = Image.frombuffer("F", (data.shape[1], data.shape[0]), data, "raw", "F", 0, 1)
    resized = img.resize((size[1], size[0]), resample).tobytes()
    return np.frombuffer(resized, np.float32).reshape(size)  # read-only, as np.asarray's


def has_alpha(img: Image.Image) -> bool:
    """Whether the image has transparency (an alpha channel or a transparent palette entry)."""
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info


def _opaque(img: Image.Image) -> bool:
    """Whether an image's alpha band is opaque everywhere (the page paints its canvas white
    first): composited onto white it is then its grey."""
    return "A" in img.getbands() and img.getchannel("A").getextrema() == (255, 255)


def pil_to_gray(img: Image.Image, label: str, side: int = WORK_SIDE) -> np.ndarray:
    """(H, W) float32 in [0, 1] of a PIL image: transparency onto white, at most `side` px."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(img, dtype=np.float32)  # (H, W)
        top = float(values.max(initial=0.0))
        scale = 1.0 if img.mode == "F" and top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        return array_to_gray(np.clip(values / scale, 0.0, 1.0), label, side)
    try:
        if has_alpha(img):  # an opaque one needs no compositing (the same values)
            return array_to_gray(np.asarray(img.convert("L" if _opaque(img) else "LA")),
                                 label, side)
        img = img.convert("L")
    except ValueError as exc:  # e.g. a TIFF in LAB or HSV
        raise ImageError(
            f"{label} is in colour mode {img.mode}, which cannot be read; save it as RGB."
        ) from exc
    size = fit((img.height, img.width), side)
    if size != (img.height, img.width):
        img = img.resize(size[::-1], Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def array_to_gray(array: np.ndarray, label: str, side: int = WORK_SIDE) -> np.ndarray:
    """(H, W) float32 in [0, 1] from (H, W), (H, W, 1-4) uint8/bool/float-in-[0, 1] arrays,
    shrunk to at most `side` px."""
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        channels = array.shape[2]
    elif array.ndim == 2:
        channels = 0
    else:
        raise ImageError(
            f"{label} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)."
        )
    if min(array.shape[:2]) < 1:
        raise ImageError(f"{label} is empty (shape {array.shape}).")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / np.float32(255.0)
    elif array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise ImageError(
                f"{label} holds floats outside [0, 1]; scale it to [0, 1] or pass uint8."
            )
    else:
        raise ImageError(f"{label} has dtype {array.dtype}; pass uint8, or floats in [0, 1].")
    if channels >= 3:  # ITU-R 601 luma, the same weights as Pillow's convert("L")
        gray = 0.299 * values[..., 0] + 0.587 * values[..., 1] + 0.114 * values[..., 2]
    else:
        gray = values[..., 0] if channels else values  # (H, W)
    if channels in (2, 4):  # composite onto white, as a browser shows a transparent canvas
        alpha = values[..., -1]  # (H, W)
        gray = gray * alpha + (1.0 - alpha)
    return shrink(gray, side)


def fit(shape: tuple[int, ...], side: int) -> tuple[int, int]:
    """(rows, cols) with the longer side scaled down to `side` (never up), aspect kept."""
    scale = min(1.0, side / max(shape[0], shape[1]))
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """Box-average a (H, W) array down to a longer side of at most `side`."""
    size = fit(gray.shape, side)
    return gray if size == gray.shape else resize(gray, size, Image.Resampling.BOX)


