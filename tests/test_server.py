"""The web API of `lenet5 serve`: every answer and error, concurrency, limits, and the command."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from fastapi.testclient import TestClient  # noqa: E402
from number_photos import make_number_set  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from lenet5 import checkpoint, pretrained  # noqa: E402
from lenet5.arch import get_arch, init_params  # noqa: E402
from lenet5.cli import main  # noqa: E402
from lenet5.images import preprocess_image  # noqa: E402
from lenet5.model import load  # noqa: E402
from lenet5.server import app as server_app  # noqa: E402
from lenet5.server import create_app  # noqa: E402
from lenet5.server.connections import GuardedHttpToolsProtocol  # noqa: E402
from lenet5.threads import THREAD_VARIABLES  # noqa: E402

MB = 2**20
STROKES = {  # a few digit-like drawings, in 0-1 coordinates: each a list of polylines
    "1": [[(0.5, 0.15), (0.5, 0.85)]],
    "7": [[(0.25, 0.2), (0.75, 0.2), (0.4, 0.85)]],
    "4": [[(0.6, 0.85), (0.6, 0.15), (0.2, 0.6), (0.8, 0.6)]],
    "L": [[(0.3, 0.15), (0.3, 0.8), (0.75, 0.8)]],
    "0": [[(0.5, 0.15), (0.75, 0.35), (0.75, 0.65), (0.5, 0.85), (0.25, 0.65), (0.25, 0.35),
           (0.5, 0.15)]],
    "T": [[(0.2, 0.2), (0.8, 0.2)], [(0.5, 0.2), (0.5, 0.85)]],
    "X": [[(0.25, 0.2), (0.75, 0.8)], [(0.75, 0.2), (0.25, 0.8)]],
    "Z": [[(0.25, 0.2), (0.75, 0.2), (0.25, 0.8), (0.75, 0.8)]],
}


def drawing(name: str, side: int = 112, fmt: str = "PNG") -> bytes:
    """Black strokes on white, a square: a drawing as the page sent it before its pad grew to
    1.5 times as wide as tall (any picture may be posted)."""
    img = Image.new("L", (side, side), 255)
    pen = ImageDraw.Draw(img)
    for line in STROKES[name]:
        pen.line([(x * side, y * side) for x, y in line], fill=0, width=side // 13, joint="curve")
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def decode_data_url(url: str) -> np.ndarray:
    header, _, payload = url.partition(",")
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A model file with freshly initialised weights: every answer is deterministic."""
    path = tmp_path_factory.mktemp("served") / "model.safetensors"
    checkpoint.save_model(path, init_params(get_arch("lenet5"), seed=0), {
        "arch": "lenet5", "dataset": "mnist", "classes": list("0123456789"),
        "input_normalization": {"kind": "mean_std", "pad": 2, "mean": 0.1307, "std": 0.3081},
        "engine": "numpy", "epochs": 3, "test_accuracy": 0.5})
    return path


@pytest.fixture(scope="module")
def app(model_path):
    """The app on an untrained model, refusing nothing (its every answer would be a refusal)."""
    return create_app(model_path, reject_threshold=0.0)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as test_client:
        yield test_client


def post(client, body: bytes, content_type: str | None):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return client.post("/api/predict", content=body, headers=headers)


# --- answers ------------------------------------------------------------------------------

def test_health(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_model_description(client):
    info = client.get("/api/model").json()
    assert (info["arch"], info["engine"], info["device"]) == ("lenet5", "numpy", "cpu")
    assert info["classes"] == list("0123456789")
    assert info["parameters"] == 61706
    assert (info["test_accuracy"], info["epochs"], info["dataset"]) == (0.5, 3, "mnist")
    assert [layer["name"] for layer in info["layers"]] == \
        ["C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT"]
    assert info["layers"][0] | {"type": "conv", "window": 5, "activation": "relu"} == \
        info["layers"][0]


def test_a_model_trained_for_a_fraction_of_an_epoch_is_described(model_path, tmp_path):
    """`lenet5 train --epochs 2.25` (the fast recipe) stores 2.25 epochs: served as it is."""
    path = tmp_path / "model.safetensors"
    params, meta = checkpoint.load_model(model_path)
    checkpoint.save_model(path, params, {**meta, "epochs": 2.25})
    with TestClient(create_app(path, reject_threshold=0.0)) as fractional:
        assert fractional.get("/api/model").json()["epochs"] == 2.25


def test_predict_answers_what_the_model_computes(client, model_path):
    image = drawing("7")
    response = post(client, image, "image/png")
    assert response.status_code == 200
    answer = response.json()
    digit = preprocess_image(image)
    model = load(model_path)
    expected = model.predict_proba(digit)[0]
    # float32 network: the server's pass (one BLAS thread, the picture among its views) sums
    # in another order than this one, 1.6e-6 apart on an AVX-512 machine
    np.testing.assert_allclose(answer["probs"], expected, rtol=1e-5, atol=1e-9)
    read = model.read(image, threshold=0.0)  # the decision: read steadily (refusal.py)
    assert answer["label"] == read["label"] and read["label"] is not None
    assert answer["confidence"] == pytest.approx(read["confidence"], rel=1e-6)
    np.testing.assert_array_equal(decode_data_url(answer["input"]), digit)
    assert [layer["name"] for layer in answer["layers"]] == ["C1", "S2", "C3", "S4"]
    for layer, (count, side) in zip(answer["layers"], [(6, 28), (6, 14), (16, 10), (16, 5)],
                                    strict=True):
        strip = decode_data_url(layer["strip"])
        assert layer["count"] == count
        assert strip.shape == (side, count * side) and strip.dtype == np.uint8
    timing = response.headers["server-timing"]
    assert [part.split(";")[0] for part in timing.split(", ")] == ["read", "forward", "encode"]
    assert answer["text"] == str(answer["label"]) and answer["rejected"] is None
    (read,) = answer["digits"]
    assert read["label"] == answer["label"] and read["top"][0] == [answer["label"],
                                                                   answer["confidence"]]
    x0, y0, x1, y1 = read["box"]
    assert 0 <= x0 < x1 <= 112 and 0 <= y0 < y1 <= 112


def test_answers_are_written_as_jsonresponse_writes_them(client, model_path):
    """AnswerResponse: the bytes JSONResponse writes for an answer (ASCII), and text that is
    not ASCII escaped into JSON that reads back the same."""
    body = post(client, drawing("7"), "image/png").content
    assert server_app.AnswerResponse(json.loads(body)).body == body
    assert server_app.JSONResponse(json.loads(body)).body == body
    with TestClient(create_app(model_path, reject_threshold=1.0)) as strict:
        refused = post(strict, drawing("7"), "image/png").content  # a "rejected" reason
    assert server_app.AnswerResponse(json.loads(refused)).body == refused
    assert server_app.JSONResponse(json.loads(refused)).body == refused
    other = {"rejected": "ce n'est pas un chiffre \u2014 \u00e9"}
    assert json.loads(server_app.AnswerResponse(other).body) == other


def test_a_refusal_is_an_answer_with_every_field(model_path):
    """`--reject-threshold 1` refuses every digit: the answer says so, with every field."""
    with TestClient(create_app(model_path, reject_threshold=1.0)) as strict:
        response = post(strict, drawing("7"), "image/png")
    assert response.status_code == 200
    answer = response.json()
    assert answer["label"] is None and answer["text"] is None
    assert "not a digit" in answer["rejected"] and "threshold 1.00" in answer["rejected"]
    assert [d["label"] for d in answer["digits"]] == [None]
    assert len(answer["probs"]) == 10 and answer["input"].startswith("data:image/png")


def test_every_digit_of_a_number_is_read_in_order(client):
    """Three drawings side by side: three digits, left to right, boxed where they are."""
    row = Image.new("L", (3 * 112 + 80, 160), 255)
    for i, name in enumerate("714"):
        row.paste(Image.open(io.BytesIO(drawing(name))), (20 + i * 132, 24))
    answer = post(client, png_bytes(row), "image/png").json()
    assert len(answer["digits"]) == 3 and answer["label"] is None
    assert answer["text"] == "".join(str(d["label"]) for d in answer["digits"])
    lefts = [d["box"][0] for d in answer["digits"]]
    assert lefts == sorted(lefts)
    for i, digit in enumerate(answer["digits"]):
        x0, _, x1, _ = digit["box"]
        assert 20 + i * 132 <= x0 < x1 <= 20 + i * 132 + 112
        # for the page: the probabilities the digit was decided on, and the 28x28 it was
        assert len(digit["probs"]) == 10 and sum(digit["probs"]) == pytest.approx(1.0)
        assert np.argmax(digit["probs"]) == digit["label"]
        assert max(digit["probs"]) == pytest.approx(digit["confidence"], rel=1e-9)
        assert [p for _, p in digit["top"]] == pytest.approx(sorted(digit["probs"])[:-4:-1])
        assert decode_data_url(digit["input"]).shape == (28, 28)
    assert answer["digits"][0]["input"] == answer["input"]


@pytest.mark.mnist
def test_numbers_posted_read_as_the_cli_reads_them(mnist, tmp_path, capsys):
    """Photographed numbers POSTed to the server get what `lenet5 predict --json` says of the
    same files: the text, the refusal and every digit (label, box, confidence)."""
    numbers = make_number_set(mnist.test_images, mnist.test_labels, 24, seed=31)
    for i, (jpeg, _, _) in enumerate(numbers):
        (tmp_path / f"{i:02d}.jpg").write_bytes(jpeg)
    assert main(["predict", "pretrained", str(tmp_path), "--json"]) == 0
    by_file = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    with TestClient(create_app(pretrained.path())) as served:
        for i, (jpeg, _, _) in enumerate(numbers):
            answer, cli = post(served, jpeg, "image/jpeg").json(), by_file[f"{i:02d}.jpg"]
            assert (answer["text"], answer["rejected"]) == (cli["text"], cli["rejected"])
            assert [(d["label"], d["box"]) for d in answer["digits"]] == \
                [(d["label"], d["box"]) for d in cli["digits"]]
            assert [d["confidence"] for d in answer["digits"]] == \
                pytest.approx([d["confidence"] for d in cli["digits"]], rel=1e-9)
    assert sum(r["text"] is not None for r in by_file.values()) >= 18  # numbers, not refusals


def test_feature_maps_are_each_stretched_to_full_range(client, model_path):
    answer = post(client, drawing("4"), "image/png").json()
    maps = load(model_path).feature_maps(preprocess_image(drawing("4")))
    c1 = maps[0][1][0]  # (6, 28, 28)
    strip = decode_data_url(answer["layers"][0]["strip"])  # (28, 6 * 28): side by side
    for activation, picture in zip(c1, np.split(strip, 6, axis=1), strict=True):
        if np.ptp(activation) > 0:
            assert (picture.min(), picture.max()) == (0, 255)
            np.testing.assert_array_equal(np.argmax(picture), np.argmax(activation))
        else:
            assert not picture.any()


@pytest.mark.parametrize("size", [0, 1, 812, 32768, 0xFFFF, 0x10000, 3 * 0xFFFF + 7])
def test_a_stored_stream_is_what_zlib_stores(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert zlib.decompress(server_app._stored(data)) == data
    if size <= 32768:  # zlib itself splits larger data over two blocks
        assert server_app._stored(data) == zlib.compress(data, 0)


def test_a_wide_strip_is_one_png():
    """84 maps of 28x28 side by side: more than one stored block's 64 KiB of rows."""
    maps = np.random.default_rng(1).normal(size=(84, 28, 28)).astype(np.float32)
    strip = decode_data_url(server_app.strip_data_url(maps))
    assert strip.shape == (28, 84 * 28)
    np.testing.assert_array_equal(np.split(strip, 84, axis=1), server_app._to_gray(maps))


def test_png_data_urls_round_trip():
    grays = np.random.default_rng(0).integers(0, 256, (3, 5, 9), dtype=np.uint8)
    for url, gray in zip(server_app.png_data_urls(grays), grays, strict=True):
        np.testing.assert_array_equal(decode_data_url(url), gray)


@pytest.mark.parametrize("how", ["data URL", "plain base64", "base64 with newlines"])
def test_predict_accepts_json(client, how):
    image = drawing("7")
    text = base64.b64encode(image).decode()
    payload = {"data URL": "data:image/png;base64," + text, "plain base64": text,
               "base64 with newlines": "\n".join(text[i:i + 60] for i in range(0, len(text), 60))}
    response = client.post("/api/predict", json={"image": payload[how]})
    assert response.status_code == 200
    assert response.json() == post(client, image, "image/png").json()


def test_predict_accepts_a_file_in_a_form_and_an_image_body_of_any_type(client):
    """What `curl -F image=@seven.png` and `curl --data-binary @seven.png` send (a form, or
    the file as application/x-www-form-urlencoded) had been refused as not an image."""
    image = drawing("7")
    expected = post(client, image, "image/png").json()
    for field in ("image", "file"):
        response = client.post("/api/predict", data={"note": "mine"},
                               files={field: ("seven.png", image, "image/png")})
        assert response.status_code == 200 and response.json() == expected
    for content_type in ("application/x-www-form-urlencoded", "application/octet-stream", None):
        assert post(client, image, content_type).json() == expected
    assert_error(client.post("/api/predict", data={"image": "seven.png"}),  # a name, no file
                 415, "multipart form")
    no_file = client.post("/api/predict", files={"note": (None, "mine")})
    assert_error(no_file, 422, "the form holds no file", "curl -F image=@photo.jpg")
    both = client.post("/api/predict", files=[("meta", ("a.json", b"{}", "application/json")),
                                              ("image", ("seven.png", image, "image/png"))])
    assert both.status_code == 200 and both.json() == expected  # the one named "image"


def test_a_form_costs_time_linear_in_its_size():
    """The stdlib email parser had taken 28 s over 156 KiB of folded header lines, and 55 s
    over 5 MB of empty parts: one request could hold a worker, /healthz included."""
    folded = (b'--XyZ\r\nContent-Disposition: form-data; name="f"' + b"\r\n ;" * 1_000_000
              + b"\r\n\r\nabc\r\n--XyZ--\r\n")
    empty_parts = b"--XyZ\r\n\r\n\r\n" * 400_000
    for body, status in ((folded, 422), (empty_parts, 413)):
        started = time.perf_counter()
        with pytest.raises(server_app.ApiError) as refused:
            server_app._image_from_form("multipart/form-data; boundary=XyZ", body)
        assert refused.value.status == status and time.perf_counter() - started < 1


def test_predict_accepts_jpeg_and_white_on_black(client):
    jpeg = post(client, drawing("1", side=200, fmt="JPEG"), "image/jpeg")
    assert jpeg.status_code == 200
    inverted = png_bytes(Image.eval(Image.open(io.BytesIO(drawing("1"))), lambda v: 255 - v))
    answer = post(client, inverted, "image/png").json()
    np.testing.assert_array_equal(decode_data_url(answer["input"]),
                                  preprocess_image(drawing("1")))


def test_torch_engine_gives_the_same_answer(model_path):
    pytest.importorskip("torch", reason="torch is not installed")
    image = drawing("7")
    with TestClient(create_app(model_path, engine="torch", device="cpu")) as torch_client:
        answer = post(torch_client, image, "image/png").json()
    assert torch_client.get("/api/model").json()["engine"] == "torch"
    expected = load(model_path).predict_proba(preprocess_image(image))[0]
    np.testing.assert_allclose(answer["probs"], expected, atol=1e-5)


def test_an_engine_without_feature_maps_answers_without_them(model_path):
    """An ONNX graph outputs logits only: the answer is read as the other engines read it,
    with no maps (every answer was a 400 "feature maps are not available" before)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed")
    image = drawing("7")
    with TestClient(create_app(model_path, engine="onnx", reject_threshold=0.0)) as onnx_client:
        response = post(onnx_client, image, "image/png")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["layers"] == [] and answer["text"] == str(answer["label"])
    expected = load(model_path).predict_proba(preprocess_image(image))[0]
    np.testing.assert_allclose(answer["probs"], expected, atol=1e-5)


@pytest.mark.mnist
def test_photographed_digits_get_what_lenet5_predict_gives(trained_run, mnist, tmp_path):
    """Held-out photos POSTed as raw JPEG bodies: the same answer as `lenet5 predict` on the
    file, so the API is exactly as accurate as the command."""
    from photo_digits import make_photo_set

    from lenet5.predict import predict_file

    model = load(trained_run)
    photos = make_photo_set(mnist.test_images, mnist.test_labels, 30, seed=1)
    with TestClient(create_app(trained_run)) as photo_client:
        for index, (jpeg, _) in enumerate(photos):
            file = tmp_path / f"photo{index}.jpg"
            file.write_bytes(jpeg)
            expected, _ = predict_file(model, file)
            response = post(photo_client, jpeg, "image/jpeg")
            if "error" in expected:
                assert response.status_code == 400
                continue
            assert response.json()["label"] == expected["label"]
            assert response.json()["confidence"] == pytest.approx(expected["confidence"],
                                                                  rel=1e-6)


# --- errors -------------------------------------------------------------------------------

def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word in message


def test_refuses_bodies_over_5_mb(client):
    assert_error(post(client, b"\0" * (12 * MB), "image/png"), 413, "5 MB")
    assert_error(post(client, b"x" * (5 * MB + 1), "text/plain"), 413, "5 MB")



PREDICT_PNG_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": "POST", "scheme": "http", "path": "/api/predict",
                     "raw_path": b"/api/predict", "root_path": "", "query_string": b"",
                     "headers": [(b"content-type", b"image/png")], "client": ("127.0.0.1", 1),
                     "server": ("127.0.0.1", 80)}
"""An ASGI request for POST /api/predict of a PNG, for driving the app without a server."""


def test_refuses_an_oversized_stream_without_reading_all_of_it(app):
    """No Content-Length: the server stops reading once the body passes 5 MB."""
    chunk = 64 * 1024
    received, sent = 0, []

    async def receive():
        nonlocal received
        received += chunk
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": True}  # endless

    async def send(message):
        sent.append(message)

    asyncio.run(app(PREDICT_PNG_SCOPE, receive, send))
    assert sent[0]["status"] == 413
    assert received <= 5 * MB + chunk
    assert "5 MB" in json.loads(sent[1]["body"])["error"]


def test_a_client_gone_before_its_body_ends_is_no_server_error(app):
    """The connection closed mid-body (the client left, or the body deadline cut it off):
    an answer nobody reads, not a ClientDisconnect traceback in the server's log."""
    messages = iter([{"type": "http.request", "body": b"\x89PNG", "more_body": True},
                     {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    asyncio.run(app(PREDICT_PNG_SCOPE, receive, send))
    assert sent[0]["status"] == 400
    assert "whole body" in json.loads(sent[1]["body"])["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_refuses_what_is_not_an_image(client, content_type):
    assert_error(post(client, b"hello, world", content_type), 415, "Content-Type", "image/png")


def test_refuses_a_data_url_of_another_type(client):
    text = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
    assert_error(client.post("/api/predict", json={"image": text}), 415, "text/plain")


def test_refuses_undecodable_images(client):
    assert_error(post(client, b"\x89PNG\r\n\x1a\n not really", "image/png"), 400,
                 "uploaded image")
    assert_error(post(client, drawing("7")[:200], "image/png"), 400, "uploaded image")


@pytest.mark.parametrize("colour", [255, 0, 128])
def test_refuses_images_without_ink(client, colour):
    blank = png_bytes(Image.new("L", (80, 80), colour))
    assert_error(post(client, blank, "image/png"), 400, "no digit")


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, ("not valid JSON",)),
    (b"\xff\xfe", 400, ("not valid JSON",)),
    (b'{"picture": "abc"}', 422, ('"image"',)),
    (b'["data:image/png;base64,AAAA"]', 422, ('"image"',)),
    (b'{"image": 7}', 422, ('"image"',)),
    (b'{"image": "data:image/png;base64,@@@"}', 400, ("base64",)),
    (b'{"image": "data:image/png,rawbytes"}', 400, ("base64",)),
    (b'{"image": "not base64!"}', 400, ("base64",)),
])
def test_refuses_bad_json(client, body, status, words):
    assert_error(post(client, body, "application/json"), status, *words)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"image": ' + b"[" * 100_000,
                                  b'{"a": ' * 50_000], ids=["[ x 100,000", "image: [[[", "{{{"])
def test_refuses_json_nested_too_deeply(client, body):
    """Issue 17, defect 11: the JSON decoder's RecursionError was a 500."""
    assert_error(post(client, body, "application/json"), 400, "nested too deeply")


def test_unknown_paths_and_methods_answer_json(client):
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.get("/api/predict"), 405)


# --- the page -----------------------------------------------------------------------------

def test_page_and_its_files_are_served_and_need_no_network(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        response = client.get(path)
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert "http://" not in response.text and "https://" not in response.text
    assert "https://" not in page.text and "http://" not in page.text
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/model", "/healthz"} <= set(spec["paths"])
    predict = spec["paths"]["/api/predict"]["post"]
    assert {"image/png", "image/jpeg", "multipart/form-data", "application/json"} <= set(
        predict["requestBody"]["content"])
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])
    assert client.get("/docs").status_code == 200


# --- concurrency over a real socket ----------------------------------------------------------

def test_concurrent_requests_get_the_sequential_answers(app, serve):
    """16 threads posting different drawings at once get exactly what one client gets."""
    url = serve(app) + "/api/predict"
    images = {name: drawing(name) for name in STROKES}
    headers = {"Content-Type": "image/png"}
    with httpx.Client() as http:
        expected = {name: http.post(url, content=image, headers=headers).json()
                    for name, image in images.items()}
    names = sorted(images)
    assert len({json.dumps(answer["probs"]) for answer in expected.values()}) == len(names)

    def client_thread(offset: int) -> list[tuple[str, dict]]:
        with httpx.Client(timeout=60) as http:
            order = [names[(offset + i) % len(names)] for i in range(3 * len(names))]
            return [(name, http.post(url, content=images[name], headers=headers).json())
                    for name in order]

    with ThreadPoolExecutor(16) as pool:
        results = [pair for batch in pool.map(client_thread, range(16)) for pair in batch]
    assert len(results) == 16 * 3 * len(names)
    for name, answer in results:
        assert answer == expected[name], name


def test_real_server_answers_413_to_a_12_mb_upload(app, serve):
    url = serve(app) + "/api/predict"
    with httpx.Client(timeout=60) as http:
        declared = http.post(url, content=b"\0" * (12 * MB), headers={"Content-Type": "image/png"})
        streamed = http.post(url, content=iter([b"\0" * MB] * 12),
                             headers={"Content-Type": "image/png"})
        after = http.post(url, content=drawing("7"), headers={"Content-Type": "image/png"})
    assert_error(declared, 413, "5 MB")
    assert_error(streamed, 413, "5 MB")
    assert after.status_code == 200


# --- `lenet5 serve` -----------------------------------------------------------------------

@pytest.mark.skipif(not pretrained.path().is_file(), reason="no pretrained model shipped here")
def test_serve_without_a_model_or_runs_serves_the_pretrained_one(tmp_path, monkeypatch, capsys,
                                                                 supervised):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "empty-run").mkdir(parents=True)
    assert main(["serve", "--port", "0"]) == 0
    assert "serving pretrained" in capsys.readouterr().err
    worker = json.loads(supervised[0]["environ"][server_app.WORKER_ENV])
    assert worker["model_path"] == "pretrained"


@pytest.fixture
def supervised(monkeypatch) -> list[dict]:
    """Stands in for uvicorn's worker supervisor: records what `lenet5 serve` asked of it (and
    the environment the workers would inherit) instead of starting processes."""
    from uvicorn.supervisors import Multiprocess

    monkeypatch.setattr(os, "environ", dict(os.environ))  # serve() sets variables for workers
    for name in THREAD_VARIABLES:
        os.environ.pop(name, None)
    runs = []
    monkeypatch.setattr(Multiprocess, "run", lambda self: runs.append(
        {"config": self.config, "sockets": self.sockets, "environ": dict(os.environ)}))
    return runs


def test_workers_start_with_ctrl_c_ignored_until_they_serve():
    """A Ctrl-C while a worker still imported its modules had printed its traceback; the
    supervisor stops its workers itself, and takes Ctrl-C again once they are started."""
    import signal

    seen = []

    class Multiprocess:
        def init_processes(self):
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    server_app._supervisor(Multiprocess)().init_processes()
    assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) is before
    from uvicorn.supervisors import Multiprocess as Uvicorns  # the method overridden is its

    assert callable(Uvicorns.init_processes)


def test_serve_picks_the_newest_run(tmp_path, monkeypatch, model_path, capsys, supervised):
    """The newest run trained to its end: not one stopped part-way, whose model (written
    after every epoch) has no calibrated refusal yet."""
    monkeypatch.chdir(tmp_path)
    params, metadata = checkpoint.load_model(model_path)
    for age, name in ((200, "older"), (100, "newer"), (300, "oldest"), (50, "stopped")):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        refusal = {} if name == "stopped" else {"refusal": {"threshold": 0.5}}
        checkpoint.save_model(run / "model.safetensors", params, {**metadata, **refusal})
        stamp = time.time() - age
        os.utime(run / "model.safetensors", (stamp, stamp))
    assert main(["serve", "--port", "0"]) == 0
    assert len(supervised) == 1
    err = capsys.readouterr().err
    assert f"runs{os.sep}newer" in err and "http://127.0.0.1:" in err
    worker = json.loads(supervised[0]["environ"][server_app.WORKER_ENV])
    assert Path(worker["model_path"]).name == "newer"


def test_serve_runs_the_workers_asked_for_each_with_one_blas_thread(model_path, client, capsys,
                                                                     supervised, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(4)), raising=False)
    assert main(["serve", str(model_path), "--port", "0", "--workers", "3",
                 "--engine", "numpy", "--reject-threshold", "0.25"]) == 0
    (run,) = supervised
    assert run["config"].workers == 3 and run["sockets"][0].getsockname()[1] > 0
    assert run["config"].http is GuardedHttpToolsProtocol  # read deadlines (test_connections)
    assert "3 workers" in capsys.readouterr().err
    assert json.loads(run["environ"][server_app.WORKER_ENV]) == {
        "model_path": str(model_path), "engine": "numpy", "device": "auto",
        "parent": os.getpid(), "reject_threshold": 0.25}
    assert all(run["environ"][name] == "1" for name in THREAD_VARIABLES)
    # what a worker process does with that environment: asks to stop with its parent
    # (recorded here, not done to pytest) and answers with the same model
    os.environ[server_app.WORKER_ENV] = run["environ"][server_app.WORKER_ENV]
    parents = []
    monkeypatch.setattr(server_app, "stop_with_parent", parents.append)
    with TestClient(server_app.worker_app()) as worker:
        assert worker.get("/api/model").json() == client.get("/api/model").json()
    assert parents == [os.getpid()]


def test_serve_leaves_the_environment_as_it_found_it(model_path, capsys, supervised):
    """The workers inherit their settings and one thread each, where the user chose no count;
    the caller (a notebook) goes on with its own."""
    os.environ[THREAD_VARIABLES[0]] = "3"
    before = dict(os.environ)
    assert main(["serve", str(model_path), "--port", "0"]) == 0
    (run,) = supervised
    assert run["environ"][THREAD_VARIABLES[0]] == "3" and server_app.WORKER_ENV in run["environ"]
    assert all(run["environ"][name] == "1" for name in THREAD_VARIABLES[1:])
    assert os.environ == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_worker_whose_parent_is_gone_leaves(monkeypatch):
    prctl = []
    monkeypatch.setattr(server_app.ctypes, "CDLL", lambda _: SimpleNamespace(
        prctl=lambda *args: prctl.append(args)))
    server_app.stop_with_parent(os.getppid())  # parent alive: stays
    with pytest.raises(SystemExit) as stopped:
        server_app.stop_with_parent(os.getppid() + 1)  # not our parent: it has died
    assert stopped.value.code == 0
    assert prctl == [(server_app.PR_SET_PDEATHSIG, signal.SIGTERM)] * 2


def test_a_worker_that_cannot_load_the_model_stops_the_server(tmp_path, monkeypatch, capsys,
                                                              supervised, model_path):
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    monkeypatch.setattr(server_app, "stop_with_parent", lambda parent: None)
    os.environ[server_app.WORKER_ENV] = json.dumps(
        {"model_path": str(tmp_path / "gone"), "engine": "numpy", "device": "auto",
         "parent": 1})
    with pytest.raises(SystemExit) as failed:  # the worker: one line, uvicorn's status
        server_app.worker_app()
    assert failed.value.code == STARTUP_FAILURE
    assert "no model at" in capsys.readouterr().err
    # the supervisor then stops; `lenet5 serve` says so and exits 1, not 0
    monkeypatch.setattr(Multiprocess, "run", lambda self: setattr(
        self, "processes", [SimpleNamespace(exitcode=STARTUP_FAILURE)]))
    assert main(["serve", str(model_path), "--port", "0"]) == 1
    assert "a worker could not load" in capsys.readouterr().err


@pytest.mark.parametrize("cores, workers", [(1, 1), (2, 2), (8, 4)])
def test_serve_defaults_to_a_worker_per_core(model_path, capsys, supervised, monkeypatch, cores,
                                             workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    assert main(["serve", str(model_path), "--port", "0"]) == 0
    assert supervised[0]["config"].workers == server_app.default_workers() == workers


@pytest.mark.parametrize("cores, words", [({0, 1}, "the 2 cores"), ({0}, "the 1 core ")])
def test_serve_refuses_more_workers_than_cores(model_path, capsys, supervised, monkeypatch,
                                               cores, words):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: cores, raising=False)
    assert main(["serve", str(model_path), "--port", "0", "--workers", "3"]) == 1
    err = capsys.readouterr().err
    assert f"--workers 3 is more than {words}" in err and err.count("\n") == 1
    assert not supervised


def test_serve_refuses_a_threshold_outside_0_1(model_path, capsys, supervised):
    assert main(["serve", str(model_path), "--reject-threshold", "2"]) == 1
    assert "--reject-threshold must be between 0 and 1, got 2.0" in capsys.readouterr().err
    assert not supervised


def test_serve_refuses_fewer_than_one_worker(model_path, capsys, supervised):
    assert main(["serve", str(model_path), "--port", "0", "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "--workers must be at least 1" in err and err.count("\n") == 1
    assert not supervised


def test_serve_without_the_web_extra_says_how_to_install_it(model_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    assert main(["serve", str(model_path)]) == 1
    assert "pip install -e '.[web]'" in capsys.readouterr().err


def test_serve_refuses_a_busy_port_and_a_bad_one(model_path, capsys):
    from lenet5.server import listen

    busy = listen("127.0.0.1", 0)
    busy.listen()
    try:
        assert main(["serve", str(model_path), "--port", str(busy.getsockname()[1])]) == 1
    finally:
        busy.close()
    assert "--port" in capsys.readouterr().err
    assert main(["serve", str(model_path), "--port", "70000"]) == 1
    assert "between 0 and 65535" in capsys.readouterr().err


def test_listen_makes_tcp_sockets_so_answers_are_not_delayed():
    """asyncio turns Nagle's algorithm off (TCP_NODELAY) only on IPPROTO_TCP sockets; with
    proto 0 every answer waited ~40 ms for a delayed ACK."""
    import socket

    from lenet5.server import listen

    sock = listen("localhost", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] in ("127.0.0.1", "::1")
    finally:
        sock.close()


def test_serve_refuses_a_missing_model(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 1
    assert "no model at" in capsys.readouterr().err


@pytest.mark.parametrize("workers, stop", [([], "terminate"), (["--workers", "1"], "kill")],
                         ids=["default workers, SIGTERM", "1 worker, SIGKILL"])
def test_lenet5_serve_runs_as_a_command(model_path, workers, stop):
    """The real command in its own process: prints its address, serves until stopped, and its
    worker processes stop with it, even when it is killed outright."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    process = subprocess.Popen([sys.executable, "-m", "lenet5", "serve", str(model_path),
                                "--port", "0", *workers], stderr=subprocess.PIPE, text=True,
                               env=env)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    expected = int(workers[1]) if workers else server_app.default_workers()
    try:
        line = process.stderr.readline()
        assert "serving" in line, line
        base = line.split(" on ")[1].split()[0].rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(base + "/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.05)
        assert health.json() == {"status": "ok"}
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda name: httpx.post(
                base + "/api/predict", content=drawing(name),
                headers={"Content-Type": "image/png"}), "17417"))
        assert [answer.status_code for answer in answers] == [200] * 5
        workers_started = []  # and multiprocessing's resource tracker; known on Linux only
        if children.exists():
            workers_started = children.read_text().split()
            assert len(workers_started) > expected
    finally:
        getattr(process, stop)()
        process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers_started):
        assert time.monotonic() < deadline, "worker processes outlived `lenet5 serve`"
        time.sleep(0.05)


def _running(pid: str) -> bool:
    """Whether a process exists and is not a zombie (one nobody has reaped yet is gone too)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
