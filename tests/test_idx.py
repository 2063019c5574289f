"""The IDX reader must round-trip every type and turn every kind of damage into a DataError."""

import gzip
import tracemalloc

import numpy as np
import pytest

from lenet5.data import read_idx, write_idx
from lenet5.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHAPES = [(7,), (3, 5), (4, 28, 28), (2, 3, 4, 5)]


def header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.array(dims, ">u4").tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip(tmp_path, dtype, suffix, shape):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / f"data-idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_multibyte_types_are_big_endian_on_disk(tmp_path):
    write_idx(tmp_path / "x", np.array([1, 258], np.int16))
    assert (tmp_path / "x").read_bytes() == header(0x0B, 2) + b"\x00\x01\x01\x02"


def test_gzip_detected_by_magic_bytes_not_suffix(tmp_path):
    raw = header(0x08, 3) + b"\x01\x02\x03"
    (tmp_path / "labels").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [1, 2, 3])


def test_writer_refuses_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", np.zeros((0, 28)))
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", np.zeros((1,) * 5, np.uint8))


GOOD = header(0x08, 2, 3) + bytes(6)
CORRUPT = {
    "bad magic": b"\x01\x00" + GOOD[2:],
    "unknown type code": GOOD[:2] + b"\x07" + GOOD[3:],
    "zero dimensions": header(0x08),
    "five dimensions": header(0x08, 1, 1, 1, 1, 1) + b"\x00",
    "empty file": b"",
    "truncated header": GOOD[:7],
    "truncated payload": GOOD[:-1],
    "extra bytes": GOOD + b"\x00",
    "zero-sized dim": header(0x08, 0, 28),
    "absurd dims": header(0x08, 2**30, 2**30) + bytes(16),
    "more than the file holds": header(0x0E, 2**15, 2**15) + bytes(16),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", CORRUPT)
def test_corruption_is_a_data_error_naming_the_file(tmp_path, case, gz):
    content = CORRUPT[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(content) if gz else content)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="train-images-idx3-ubyte") as err:
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20  # refused before allocating room for the claimed shape
    message = str(err.value)
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence


def test_damaged_gzip_stream_is_a_data_error(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(header(0x08, 1000) + bytes(1000))[:-20])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        read_idx(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")
