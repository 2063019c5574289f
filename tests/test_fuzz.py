"""Property-based fuzzing of every parser a user's file or request reaches: the IDX reader,
model-file loading, image decoding and the HTTP API. The one property: whatever the input, only
the documented error comes out (DataError, ModelFileError, ImageError, a JSON 4xx), never a
traceback, a hang or a 500.

The budget is bounded for CI (profile "ci": 50 examples a test, the whole file in some 20 s);
`LENET5_FUZZ=long python -m pytest tests/test_fuzz.py` runs 5,000 a test. Every nasty case
found is kept in tests/corpus/ and replayed by the corpus tests at the end of this file.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import gzip
import io
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (the dev extra) is missing")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from lenet5 import checkpoint  # noqa: E402
from lenet5.arch import get_arch, init_params  # noqa: E402
from lenet5.data.idx import parse_idx, read_idx, write_idx  # noqa: E402
from lenet5.errors import DataError, ImageError, Lenet5Error, ModelFileError  # noqa: E402
from lenet5.images import open_image, preprocess_image  # noqa: E402

CORPUS = Path(__file__).parent / "corpus"
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=_SLOW_OK)
settings.load_profile("long" if os.environ.get("LENET5_FUZZ") == "long" else "ci")

SCRATCH = Path(tempfile.mkdtemp(prefix="lenet5-fuzz-"))
"""Where examples that must be files are written (one file, rewritten per example)."""
atexit.register(shutil.rmtree, SCRATCH, True)


def as_file(data: bytes, name: str = "case") -> Path:
    path = SCRATCH / name
    path.write_bytes(data)
    return path


@st.composite
def mutated(draw, seed: bytes, region: int | None = None) -> bytes:
    """`seed` with a few bytes replaced, inserted or deleted, or cut short; `region` limits
    where (a file's header is where parsers decide most)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        end = min(len(data), region or len(data))
        at = draw(st.integers(0, max(0, end - 1)))
        how = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "flip"]))
        if how == "replace":
            data[at:at + 1] = bytes([draw(st.integers(0, 255))])
        elif how == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


# --- IDX ------------------------------------------------------------------------------------

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def idx_bytes(array: np.ndarray) -> bytes:
    write_idx(SCRATCH / "seed.idx", array)
    return (SCRATCH / "seed.idx").read_bytes()


IDX_SEEDS = [idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)),
             idx_bytes(np.array([3, 1, 4, 1, 5], np.uint8)),
             idx_bytes(np.linspace(-1, 1, 24).reshape(2, 3, 4))]


def read_both_ways(data: bytes) -> None:
    """read_idx on a raw and a gzip file, parse_idx on bytes: an array or a DataError."""
    for reader, payload in ((read_idx, data), (read_idx, gzip.compress(data, mtime=0)),
                            (parse_idx, data)):
        try:
            result = (reader(as_file(payload, "case.idx")) if reader is read_idx
                      else parse_idx(payload, "case.idx"))
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(result, np.ndarray) and result.size > 0


@given(st.binary(max_size=300))
@example(b"\0\0\x08\x03" + b"\xff" * 12)  # 4 billion^3 images claimed
@example(b"\0\0\x08\x01\0\0\0\0")  # zero elements
def test_idx_arbitrary_bytes(data):
    read_both_ways(data)


@given(st.sampled_from(IDX_SEEDS).flatmap(lambda seed: mutated(seed, region=24)))
def test_idx_mutated_files(data):
    read_both_ways(data)


@given(st.sampled_from(IDX_DTYPES).flatmap(lambda dtype: st.tuples(
    st.just(dtype), st.lists(st.integers(1, 5), min_size=1, max_size=4))),
    st.integers(0, 2**32 - 1))
def test_idx_round_trip(dtype_shape, seed):
    dtype, shape = dtype_shape
    array = (np.random.default_rng(seed).standard_normal(shape) * 100).astype(dtype)
    back = read_idx(as_file(idx_bytes(array), "round.idx"))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


# --- model files ----------------------------------------------------------------------------

METADATA = {"arch": "lenet5", "dataset": "mnist", "classes": list("0123456789"),
            "input_normalization": {"kind": "mean_std", "pad": 2, "mean": 0.1307, "std": 0.3081}}


def model_bytes(metadata: dict | None = None) -> bytes:
    path = SCRATCH / "seed.safetensors"
    checkpoint.save_model(path, init_params(get_arch("lenet5"), 0), metadata or METADATA)
    return path.read_bytes()


GOOD_MODEL = model_bytes()
HEADER_END = 8 + struct.unpack("<Q", GOOD_MODEL[:8])[0]


def split_model(data: bytes) -> tuple[dict, bytes]:
    size = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + size]), data[8 + size:]


def join_model(header: dict, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def load_or_refuse(data: bytes) -> None:
    """An answer or a ModelFileError (whether its message is one line is the corpus's check)."""
    with contextlib.suppress(ModelFileError):
        checkpoint.load_model(as_file(data, "model.safetensors"))


@given(st.binary(max_size=400))
@example(struct.pack("<Q", 2**63) + b"{}")  # a header length past any file
@example(struct.pack("<Q", 2) + b"[]")  # a header that is not an object
def test_model_arbitrary_bytes(data):
    load_or_refuse(data)


@given(mutated(GOOD_MODEL, region=HEADER_END + 64))
def test_model_mutated_files(data):
    load_or_refuse(data)


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)


@st.composite
def lying_headers(draw) -> bytes:
    """A real model file whose safetensors header says something else about one tensor: its
    dtype, shape or byte range."""
    header, payload = split_model(GOOD_MODEL)
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    if field == "dtype":
        value = draw(st.sampled_from(["F16", "BF16", "F64", "I8", "U8", "I64", "BOOL",
                                      "F8_E4M3", "C64", "XYZ"]) | JSON_VALUES)
    else:
        value = draw(st.lists(st.integers(-2, 2**40), max_size=5) | JSON_VALUES)
    header[name][field] = value
    return join_model(header, payload)


@given(lying_headers())
def test_model_lying_headers(data):
    load_or_refuse(data)


SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2,
                      "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8,
                      "I64": 8, "U64": 8, "F64": 8, "F4": 1}


@given(st.sampled_from(sorted(SAFETENSORS_DTYPES)), st.lists(st.integers(0, 4), max_size=3))
@example("BF16", [1])
def test_model_tensor_of_any_dtype(dtype, shape):
    """A well-formed safetensors file whose tensor has any dtype the format defines."""
    size = SAFETENSORS_DTYPES[dtype] * int(np.prod(shape))
    header = {"__metadata__": split_model(GOOD_MODEL)[0]["__metadata__"],
              "C1.bias": {"dtype": dtype, "shape": shape, "data_offsets": [0, size]}}
    load_or_refuse(join_model(header, b"\x01" * size))


@given(st.sampled_from(sorted(METADATA) + ["format", "format_version"]),
       st.text(max_size=30) | JSON_VALUES.map(json.dumps))
def test_model_any_metadata_value_loads_or_is_refused(key, value):
    """load_model itself: any string in any metadata field (safetensors metadata is str->str)."""
    header, payload = split_model(GOOD_MODEL)
    header["__metadata__"][key] = value
    load_or_refuse(join_model(header, payload))


def use_model(data: bytes) -> None:
    """What predict, evaluate and serve do with a model: load it, classify, name the class."""
    import lenet5

    try:
        model = lenet5.load(as_file(data, "model.safetensors"))
        probs = model.predict_proba(np.zeros((1, 28, 28), np.uint8))
        assert np.isfinite(probs).all(), "a model that loads must give probabilities"
        assert model.classes[int(probs.argmax())] is not None
    except Lenet5Error as exc:
        assert "\n" not in str(exc)


@given(st.sampled_from(["classes", "input_normalization"]), JSON_VALUES)
@example("input_normalization", {"kind": "mean_std", "pad": 2, "mean": 0.1307, "std": 0})
@example("classes", ["0", "1", "2"])
def test_model_metadata_is_validated_before_use(key, value):
    header, payload = split_model(GOOD_MODEL)
    header["__metadata__"][key] = json.dumps(value)
    use_model(join_model(header, payload))


# --- images ---------------------------------------------------------------------------------

def _seed_images() -> list[bytes]:
    """A small digit drawing in every format and mode the decoder takes."""
    img = Image.new("L", (40, 48), 235)
    ImageDraw.Draw(img).line([(8, 10), (32, 10), (16, 40)], fill=20, width=5)
    seeds = []
    for fmt, mode, extra in (("PNG", "L", {}), ("PNG", "RGBA", {}), ("PNG", "P", {}),
                             ("PNG", "I;16", {}), ("JPEG", "RGB", {"quality": 80}),
                             ("JPEG", "CMYK", {}), ("GIF", "P", {}), ("BMP", "RGB", {}),
                             ("TIFF", "L", {"compression": "tiff_deflate"}),
                             ("WEBP", "RGB", {"quality": 80})):
        buffer = io.BytesIO()
        img.convert(mode).save(buffer, fmt, **extra)
        seeds.append(buffer.getvalue())
    return seeds


IMAGE_SEEDS = _seed_images()


def decode_or_refuse(data: bytes) -> None:
    for read in (open_image, preprocess_image):
        try:
            result = read(data, name="upload")
        except ImageError as exc:
            assert str(exc).startswith("upload") and "\n" not in str(exc)
        else:
            if read is preprocess_image:
                assert result.shape == (28, 28) and result.dtype == np.uint8


@given(st.binary(max_size=2000))
def test_images_arbitrary_bytes(data):
    decode_or_refuse(data)


@given(st.sampled_from(IMAGE_SEEDS).flatmap(lambda seed: mutated(seed, region=200)))
def test_images_mutated_headers(data):
    decode_or_refuse(data)


@given(st.sampled_from(IMAGE_SEEDS).flatmap(mutated))
def test_images_mutated_anywhere(data):
    decode_or_refuse(data)


# --- the HTTP API ---------------------------------------------------------------------------

DOCUMENTED = {200, 400, 413, 415, 422}
"""What POST /api/predict answers (README, /openapi.json); 500 never."""


@pytest.fixture(scope="module")
def api():
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    from fastapi.testclient import TestClient

    from lenet5.server import create_app

    model = SCRATCH / "served.safetensors"
    model.write_bytes(GOOD_MODEL)
    with TestClient(create_app(model)) as client:  # a server exception fails the test
        yield client


def assert_documented(response) -> None:
    assert response.status_code in DOCUMENTED, response.text[:200]
    assert response.headers["content-type"] == "application/json"
    if response.status_code != 200:
        assert isinstance(response.json()["error"], str)


CONTENT_TYPES = (st.sampled_from(["image/png", "image/jpeg", "application/json",
                                  "application/ld+json", "text/plain", "multipart/form-data; "
                                  "boundary=x", "application/x-www-form-urlencoded", "",
                                  "image/", "IMAGE/PNG; charset=utf-8", "application/json; x"])
                 | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))


@given(CONTENT_TYPES, st.binary(max_size=3000) | st.sampled_from(IMAGE_SEEDS))
def test_api_any_body_any_content_type(api, content_type, body):
    assert_documented(api.post("/api/predict", content=body,
                               headers={"Content-Type": content_type}))


@st.composite
def json_bodies(draw) -> bytes:
    """JSON of any shape, an "image" field of any shape, data URLs of anything, or nesting
    thousands deep."""
    kind = draw(st.sampled_from(["any", "image field", "data url", "deep"]))
    if kind == "any":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "image field":
        return json.dumps({"image": draw(JSON_VALUES)}).encode()
    if kind == "data url":
        media = draw(st.sampled_from(["image/png", "image/jpeg", "text/plain", "", "image/png;"
                                      "charset=x"]) | st.text(max_size=10))
        payload = draw(st.sampled_from(IMAGE_SEEDS) | st.binary(max_size=200))
        encoded = base64.b64encode(payload).decode()
        sep = draw(st.sampled_from([";base64,", ",", ";base64", ";base64,,"]))
        return json.dumps({"image": f"data:{media}{sep}{encoded}"}).encode()
    depth = draw(st.integers(100, 200_000))
    opener = draw(st.sampled_from([b"[", b'{"image": ', b'{"a": [']))
    return opener * depth


@given(json_bodies())
def test_api_any_json(api, body):
    assert_documented(api.post("/api/predict", content=body,
                               headers={"Content-Type": "application/json"}))


SEGMENTS = st.sampled_from(["..", "%2e%2e", "%2E%2E%2F", "static", "api", "etc", "passwd",
                            "index.html", "app.js", "..%2f", "%00", "//", "~", "model",
                            "predict", "healthz", "docs", "openapi.json", "%5c..%5c"])


@given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
       st.lists(SEGMENTS | st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                                 exclude_characters="?#"), max_size=8),
                max_size=5))
def test_api_any_path_any_method(api, method, segments):
    """Never a 500, never a file from outside the package (path traversal)."""
    response = api.request(method, "http://testserver/" + "/".join(segments))
    assert response.status_code in {200, 307, 400, 404, 405, 413, 415, 422}, response.text[:200]
    assert b"root:x:0:0" not in response.content


# --- the corpus: every nasty case found, replayed -------------------------------------------



def corpus(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).iterdir())


@pytest.mark.parametrize("path", corpus("idx"), ids=lambda p: p.name)
def test_corpus_idx(path):
    with pytest.raises(DataError):  # every file there is damaged
        read_idx(path)
    read_both_ways(path.read_bytes())


@pytest.mark.parametrize("path", corpus("images"), ids=lambda p: p.name)
def test_corpus_images(path):
    decode_or_refuse(path.read_bytes())  # some are odd but fine (CMYK, 16-bit, EXIF 9)


@pytest.mark.parametrize("path", corpus("model"), ids=lambda path: path.name)
def test_corpus_model_files(path):
    with pytest.raises(ModelFileError) as refused:  # every file there is refused by load_model
        checkpoint.load_model(path)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("case", json.loads((CORPUS / "model_cases.json").read_text()),
                         ids=lambda case: case["name"])
def test_corpus_model_cases(case):
    """A real model file with lying metadata or a flipped weight bit: lenet5.load must refuse
    it with one sentence (ModelFileError), not load it and fail or answer wrongly later."""
    import lenet5

    header, payload = split_model(GOOD_MODEL)
    header["__metadata__"].update(case.get("metadata", {}))
    if "flip" in case:
        flip = case["flip"]
        at = (header[flip["tensor"]]["data_offsets"][0] + 4 * flip["element"]
              + flip["bit"] // 8)  # little-endian float32
        payload = bytearray(payload)
        payload[at] ^= 1 << flip["bit"] % 8
        payload = bytes(payload)
    with pytest.raises(ModelFileError):
        lenet5.load(as_file(join_model(header, payload), "model.safetensors"))


@pytest.mark.parametrize("case", json.loads((CORPUS / "http" / "cases.json").read_text()),
                         ids=lambda case: case["file"])
def test_corpus_http(api, case):
    body = (CORPUS / "http" / case["file"]).read_bytes()
    response = api.post("/api/predict", content=body,
                        headers={"Content-Type": case["content_type"]})
    assert_documented(response)
    assert response.status_code == case["status"]
