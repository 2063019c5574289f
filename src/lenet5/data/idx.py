"""Strict IDX reader and writer.

A truncated download or a wrong file must fail loudly with a sentence the user can act on,
never as a reshape error deep inside training or, worse, as silently shorter data.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lenet5.errors import DataError
from lenet5.files import atomic_file, write_error

# IDX type code -> dtype (multi-byte types are big-endian on disk).
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_ELEMENTS = 2**31
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this, so a bound before reading
_FIX = "delete it and run `lenet5 data fetch` again"


def read_idx(path: str | Path) -> np.ndarray:
    """Read a raw or gzip-compressed IDX file into a native-endian array, checking every byte."""
    path = Path(path)
    try:
        with path.open("rb") as raw:
            is_gz = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            size = os.fstat(raw.fileno()).st_size
            if is_gz:
                with gzip.GzipFile(fileobj=raw) as stream:
                    return _read(stream, path, size * _MAX_DEFLATE_RATIO, exact=False)
            return _read(raw, path, size, exact=True)
    except FileNotFoundError as e:
        raise DataError(f"{path} does not exist; run `lenet5 data fetch` or check the path.") from e
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} cannot be read ({e}); {_FIX}.") from e


def parse_idx(data: bytes, path: str | Path) -> np.ndarray:
    """Parse a raw IDX file already in memory (bytes just checked against their SHA-256, so
    the array is exactly what was verified); `path` names it in errors."""
    return _read(io.BytesIO(data), Path(path), len(data), exact=True)


def _read(f: BinaryIO, path: Path, max_size: int, exact: bool) -> np.ndarray:
    """Parse header and payload from `f`; `max_size` bounds the stream length (exact for raw)."""
    magic = f.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0":
        raise DataError(f"{path} is not an IDX file (bad magic number); {_FIX}.")
    code, ndim = magic[2], magic[3]
    if code not in _DTYPES:
        raise DataError(f"{path} has unknown IDX type code 0x{code:02X}; {_FIX}.")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path} claims {ndim} dimensions (IDX data here has 1 to 4); {_FIX}.")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path} is truncated inside its header; {_FIX}.")
    shape = tuple(int(d) for d in np.frombuffer(dims_raw, ">u4"))
    dtype = _DTYPES[code]
    count = int(np.prod(shape, dtype=object))  # exact, no overflow for absurd headers
    header = 4 + 4 * ndim
    if min(shape) == 0 or count > _MAX_ELEMENTS:
        raise DataError(f"{path} has an impossible shape {shape}; {_FIX}.")
    expected = header + count * dtype.itemsize
    if exact and expected > max_size:
        raise DataError(
            f"{path} is truncated: expected {expected} bytes, found {max_size}; {_FIX}."
        )
    if exact and expected < max_size:
        raise DataError(
            f"{path} has {max_size - expected} unexpected bytes after its data "
            f"(expected {expected} bytes); {_FIX}."
        )
    if expected > max_size:  # compressed: the bound is loose, but refuses absurd headers
        raise DataError(f"{path} claims shape {shape}, more than the file can hold; {_FIX}.")
    out = np.empty(count, dtype)
    view, got = memoryview(out).cast("B"), header
    while got < expected:
        n = f.readinto(view[got - header :])
        if not n:
            raise DataError(f"{path} is truncated: expected {expected} bytes, found {got}; {_FIX}.")
        got += n
    if f.read(1):
        raise DataError(
            f"{path} has unexpected bytes after its data (expected {expected} bytes); {_FIX}."
        )
    return out.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as IDX (gzip-compressed if `path` ends in .gz), atomically."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= 4 or array.size == 0:
        raise ValueError(f"IDX needs 1 to 4 non-empty dimensions, got shape {array.shape}")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = np.ascontiguousarray(array, _DTYPES[code]).tobytes()  # big-endian on disk
    try:
        with atomic_file(path) as f:
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
                    gz.write(header + data)
            else:
                f.write(header + data)
    except OSError as exc:
        raise write_error(path, exc) from None
