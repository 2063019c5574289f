"""The HTTP API and page of ``lenet5 serve``: one model, loaded once, answering many clients.

``POST /api/predict`` takes an image (raw body or JSON with a data URL), reads every digit in
it with ``lenet5.reading`` (as ``lenet5 predict`` does: the number's text, each digit's box and
probabilities, or why it is not a digit), and answers that plus, for the first digit read, its
probabilities, the 28x28 input the network saw and the feature maps of its convolution and
pooling layers, a PNG strip per layer. The page in ``static/`` draws on top of it.

Concurrency: each process answers one request at a time, on its event loop: the body is read
there (so oversized bodies are cut off early) and the CPU work (a few ms for a canvas drawing,
more for a large photo, which holds that process's other requests meanwhile) runs inline,
since a hop to a thread pool costs more than it saves when the GIL lets only one thread
compute anyway. `lenet5 serve --workers N` runs N such processes, to use N cores; how they
share the port and how slow clients are cut off is in `connections`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import errno
import functools
import gc
import json
import os
import re
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import Lenet5Error
from ..images import preprocess_image
from ..model import Model, load
from ..outputs import probabilities
from ..reading import read
from ..signals import ctrl_c_ignored
from ..threads import THREAD_VARIABLES
from ..version import __version__
from .connections import BACKLOG, GuardedHttpToolsProtocol, bind_shared, worker_sockets

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 5 * 1024 * 1024
"""Request bodies over 5 MB are refused (413): a digit photo needs far less."""
USAGE = ('send the image as the raw request body with Content-Type image/png (or image/jpeg, '
         '...), as a file in a multipart form (curl -F image=@photo.jpg), or JSON {"image": '
         '"<data URL or base64>"} with Content-Type application/json.')
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a",
                    b"II*\x00", b"MM\x00*")
"""How an image file begins (WebP: RIFF....WEBP; not BMP's "BM", which text can begin with): a
body of one is taken whatever other Content-Type it has (curl --data-binary sends
application/x-www-form-urlencoded)."""
MAX_FORM_PARTS, MAX_PART_HEADER_BYTES = 16, 8192
"""A form's parts and each part's headers read at most: what the parsing costs stays linear
in the body (the stdlib email parser took 28 s over 156 KiB of folded header lines)."""


class ApiError(Exception):
    """A client mistake: answered as JSON ``{"error": message}`` with this HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --- response shapes (for /docs; the handlers build plain dicts) --------------------------

class LayerMaps(BaseModel):
    name: str = Field(description="layer name, e.g. C1")
    count: int = Field(description="how many feature maps the layer has")
    strip: str = Field(description="data:image/png URL of one grey picture: the layer's maps "
                       "side by side, left to right, each (picture width / count) pixels "
                       "wide and scaled to 0-255 on its own")


class DigitRead(BaseModel):
    label: int | None = Field(description="the digit, or null where this mark was refused")
    confidence: float = Field(description="probability of its most probable class")
    box: list[int] = Field(description="[x0, y0, x1, y1] in the uploaded picture's pixels")
    top: list[list[float]] = Field(description="[[class, probability], ...], most probable "
                                   "first")
    probs: list[float] = Field(description="probability of every class, in class order, as "
                               "this digit was decided on (read steadily, as confidence)")
    input: str = Field(description="data:image/png URL of the 28x28 image the network saw "
                       "for this digit")


class Prediction(BaseModel):
    label: int | None = Field(description="the digit when exactly one was read and accepted, "
                              "else null")
    confidence: float = Field(description="probability of that digit (of the whole reading "
                              "when there are several)")
    top: list[list[float]] = Field(description="[[class, probability], ...] of the digit "
                                   "when one was read, else empty")
    probs: list[float] = Field(description="probability of every class, in class order, for "
                               "the first digit read")
    input: str = Field(description="data:image/png URL of the 28x28 image the network saw "
                       "(the first digit read)")
    layers: list[LayerMaps]
    text: str | None = Field(description="the digits read, in reading order; null when a "
                             "mark was refused")
    digits: list[DigitRead]
    rejected: str | None = Field(description="null, or why the picture (or a mark in it) "
                                 "was refused as not a digit")


class ModelInfo(BaseModel):
    arch: str
    description: str
    engine: str
    device: str
    dataset: str | None
    classes: list[str]
    parameters: int = Field(description="trainable parameters")
    test_accuracy: float | None = Field(description="test-set accuracy recorded at training")
    epochs: float | None
    layers: list[dict] = Field(description="per layer: name, output shape, params, "
                               "connections, type (the arch layer's kind: conv, maxpool, "
                               "avgpool, subsample, dense, rbf), window (kernel or pooling size) "
                               "and activation")


class ErrorBody(BaseModel):
    error: str


PREDICT_REQUEST = {"requestBody": {"required": True, "content": {
    **{f"image/{kind}": {"schema": {"type": "string", "format": "binary"}}
       for kind in ("png", "jpeg", "webp", "gif", "bmp", "tiff")},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary",
                                 "description": "the image file (any field name)"}}}},
    "application/json": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string",
                                 "description": "data:image/...;base64,... URL or plain base64"}}}},
}}}
ERRORS = {status: {"model": ErrorBody, "description": why} for status, why in (
    (400, "undecodable image, an image with no digit, or malformed JSON"),
    (413, "body over 5 MB, or a form of more than 16 parts"),
    (415, "the body is not an image"),
    (422, "JSON without an image field, or a form without a file"))}


# --- reading the request ------------------------------------------------------------------

async def _read_body(request: Request) -> bytes:
    """The body, refusing (413) a declared or streamed size over MAX_BODY_BYTES without
    keeping more than that in memory."""
    too_large = ApiError(413, f"the request body is larger than {MAX_BODY_BYTES // 2**20} MB; "
                              "send a smaller image.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # the client left, or its body took too long (connections)
        raise ApiError(400, "the connection closed before the whole body arrived; send the "
                            "image again.") from None
    return b"".join(chunks)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _is_image_file(body: bytes) -> bool:
    return body.startswith(IMAGE_SIGNATURES) or (body[:4] == b"RIFF" and body[8:12] == b"WEBP")


def _image_from_form(content_type: str, body: bytes) -> bytes:
    """The image in a multipart/form-data body: the part named "image", else the first file
    or image part. Split by hand within MAX_FORM_PARTS and MAX_PART_HEADER_BYTES."""
    boundary = re.search(r'boundary="?([^";]{1,200})"?', content_type)
    parts = body.split(b"--" + boundary[1].encode("latin-1"))[1:] if boundary else []
    if len(parts) > MAX_FORM_PARTS + 1:  # the last is the closing "--" and what follows it
        raise ApiError(413, f"the form has more than {MAX_FORM_PARTS} parts; send the image "
                            "alone (curl -F image=@photo.jpg).")
    files = []
    for part in parts:
        head, blank, content = part.partition(b"\r\n\r\n")
        if not blank or len(head) > MAX_PART_HEADER_BYTES:
            continue  # the closing delimiter, or no part
        headers = head.decode("latin-1").lower()
        named_image = re.search(r'content-disposition:[^\n]*;\s*name="image"', headers)
        if named_image or "filename" in headers or "content-type: image/" in headers:
            files.append((not named_image, content.removesuffix(b"\r\n")))
    if not files:
        raise ApiError(422, "the form holds no file; send the image as a file field "
                            "(curl -F image=@photo.jpg).")
    return min(files, key=lambda file: file[0])[1]  # the one named "image", else the first


def _image_from_json(body: bytes) -> bytes:
    """The image bytes inside ``{"image": "<data URL or base64>"}``."""
    try:
        document = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        raise ApiError(400, "the request body is not valid JSON; " + USAGE) from None
    except RecursionError:  # arrays or objects nested thousands deep: `[` x 100,000
        raise ApiError(400, "the request body is JSON nested too deeply; " + USAGE) from None
    if not isinstance(document, dict) or not isinstance(document.get("image"), str):
        raise ApiError(422, 'the JSON body needs an "image" field holding a data URL or base64 '
                            "string of the image.")
    text = document["image"].strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        media_type = _media_type(header[5:])
        if media_type and not media_type.startswith("image/"):
            raise ApiError(415, f"the data URL holds {media_type}, not an image; " + USAGE)
        if not comma or not header.endswith(";base64"):
            raise ApiError(400, 'the "image" data URL must be base64-encoded '
                                "(data:image/png;base64,...).")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, 'the "image" field is not valid base64; send a data URL such as '
                            "canvas.toDataURL() makes, or the file's bytes in base64.") from None


# --- answering ----------------------------------------------------------------------------

def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


@functools.lru_cache
def _data_url_head(height: int, width: int) -> str:
    """The start of the data URL of an 8-bit grayscale PNG: its signature and header are 33
    bytes, a whole number of base64's 3-byte groups, so their base64 is a prefix of every such
    PNG's."""
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return "data:image/png;base64," + base64.b64encode(head).decode("ascii")


_PNG_END = _png_chunk(b"IEND", b"")


STORED_BLOCK = 0xFFFF
"""Most bytes one stored deflate block holds."""


def _stored(data: bytes) -> bytes:
    """A zlib stream storing the data as they are: its header, stored deflate blocks of up to
    STORED_BLOCK bytes (one for the small images answers hold), the Adler-32. What
    zlib.compress(data, 0) gives for up to 32 KiB, in a third of the time (zlib sets up a
    compressor first)."""
    blocks = []
    for start in range(0, max(len(data), 1), STORED_BLOCK):
        block = data[start:start + STORED_BLOCK]
        last = start + STORED_BLOCK >= len(data)
        blocks.append(struct.pack("<BHH", last, len(block), len(block) ^ 0xFFFF) + block)
    return b"\x78\x01" + b"".join(blocks) + struct.pack(">I", zlib.adler32(data))


def png_data_urls(grays: np.ndarray) -> list[str]:
    """Data URLs of (C, H, W) uint8 grayscale images as PNGs, written directly (faster than
    Pillow for the few small images an answer holds) and stored without compression (faster
    to encode, a little more JSON)."""
    count, height, width = grays.shape
    rows = np.zeros((count, height, width + 1), dtype=np.uint8)  # each row: filter 0, pixels
    rows[:, :, 1:] = grays
    head = _data_url_head(height, width)
    urls = []
    for image in rows:
        chunk = _png_chunk(b"IDAT", _stored(image.tobytes())) + _PNG_END
        urls.append(head + base64.b64encode(chunk).decode("ascii"))
    return urls


def strip_data_url(maps: np.ndarray) -> str:
    """One layer's (C, H, W) activations as the data URL of one grey PNG (H, C * W): its maps
    side by side, each stretched to 0-255 on its own. One picture a layer rather than one a map
    (44 for LeNet-5): fewer PNGs to write here and to decode in the browser, a quarter less
    JSON."""
    grays = _to_gray(maps)  # (C, H, W)
    count, height, width = grays.shape
    return png_data_urls(grays.transpose(1, 0, 2).reshape(1, height, count * width))[0]


def _to_gray(maps: np.ndarray) -> np.ndarray:
    """(C, H, W) activations -> (C, H, W) uint8, each map stretched to 0-255 on its own
    (a constant map stays black)."""
    maps = np.ascontiguousarray(maps)  # the engine's are strided views: slower to reduce
    low = maps.min(axis=(1, 2), keepdims=True)  # (C, 1, 1)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    scale = np.divide(255.0, span, out=np.zeros_like(span), where=span > 0)
    return np.rint((maps - low) * scale).astype(np.uint8)


def analyse(model: Model, image: bytes, threshold: float | None = None
            ) -> tuple[dict, dict[str, float]]:
    """The answer to one image, and how many milliseconds each stage took: the reading of
    every digit in it (`lenet5.reading`, as `lenet5 predict` answers, and each digit's
    probabilities and 28x28 input), plus what the network computed for the first digit read
    (its probabilities, its 28x28 input, its maps; no maps from an engine without them)."""
    started = time.perf_counter()
    with_maps = model.engine.has_feature_maps
    reading = read(model, image, threshold=threshold, layers=with_maps)  # with the maps of
    read_at = time.perf_counter()  # the first digit read
    maps = reading.layers
    if len(reading.images):
        digit = reading.images[0]  # (28, 28)
    else:  # nothing read: the network's view of the picture as one digit
        digit = preprocess_image(image)
        if with_maps:
            maps = [(name, values[0]) for name, values in model.feature_maps(digit)]
    logits = maps[-1][1][None] if maps else model.logits(digit)  # (1, K): the last layer's
    probs = probabilities(logits)[0]  # (K,), as Model.predict_proba computes it
    forwarded = time.perf_counter()
    layers = [{"name": name, "count": len(values), "strip": strip_data_url(values)}
              for name, values in maps
              if values.ndim == 3 and values.shape[1] * values.shape[2] > 1]  # (C, H, W)
    digits = [{**read_digit, "probs": digit_probs.tolist(), "input": url}  # for the page
              for read_digit, digit_probs, url in zip(
                  reading.answer["digits"], reading.probs, png_data_urls(reading.images),
                  strict=True)]
    answer = {**reading.answer, "digits": digits, "probs": probs.tolist(),
              "input": digits[0]["input"] if digits else png_data_urls(digit[None])[0],
              "layers": layers}
    encoded = time.perf_counter()
    timings = {"read": read_at - started, "forward": forwarded - read_at,
               "encode": encoded - forwarded}
    return answer, {stage: 1000 * seconds for stage, seconds in timings.items()}


def model_info(model: Model) -> dict:
    """What ``GET /api/model`` answers; each layer row also says what kind of layer it is."""
    rows = [{**row, "type": type(spec).__name__.lower(),
             "window": getattr(spec, "kernel", getattr(spec, "size", None)),
             "activation": getattr(spec, "activation", None)}
            for row, spec in zip(model.arch.layer_counts(), model.arch.layers, strict=True)]
    meta = model.metadata
    return {"arch": model.arch.name, "description": model.arch.description,
            "engine": model.engine.name, "device": model.engine.device,
            "dataset": meta.get("dataset"), "classes": model.classes,
            "parameters": sum(r["params"] for r in rows),
            "test_accuracy": meta.get("test_accuracy"), "epochs": meta.get("epochs"),
            "layers": rows}


class AnswerResponse(JSONResponse):
    """An answer's JSON with any non-ASCII character escaped: the same bytes as JSONResponse
    writes for the answers (their text is ASCII), in two thirds of the time."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(model_path: str | Path, engine: str = "numpy", device: str = "auto",
               reject_threshold: float | None = None) -> FastAPI:
    """The app serving one model (loaded here, once); `reject_threshold` overrides its refusal
    threshold. Raises Lenet5Error for a bad model file or an unavailable engine."""
    model = load(model_path, engine=engine, device=device)
    info = model_info(model)
    app = FastAPI(title="lenet5", version=__version__,
                  description="Handwritten digit recognition with LeNet-5: what the network "
                  "sees and thinks. Errors are JSON objects {\"error\": message}.")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/healthz", summary="Liveness check")
    async def healthz() -> dict[str, str]:  # async: answered on the event loop, no thread
        return {"status": "ok"}

    @app.get("/api/model", response_model=ModelInfo, summary="The model being served")
    def get_model() -> dict:
        return info

    @app.post("/api/predict", response_model=Prediction, responses=ERRORS,
              openapi_extra=PREDICT_REQUEST, summary="Read the digits in one image")
    async def predict(request: Request) -> JSONResponse:
        """Read every digit in the image, as `lenet5 predict` does, or say it is not a
        digit (`rejected`; an answer, not an error). The answer has a `Server-Timing` header
        with the time of each stage."""
        media_type = _media_type(request.headers.get("content-type", ""))
        body = await _read_body(request)  # first: a huge body gets 413, whatever its type
        if _is_json(media_type):
            image = _image_from_json(body)
        elif media_type == "multipart/form-data":
            image = _image_from_form(request.headers["content-type"], body)
        elif media_type.startswith("image/") or _is_image_file(body):
            image = body
        else:
            raise ApiError(415, f"Content-Type {media_type or '(none)'} is not an image; "
                                + USAGE)
        try:
            answer, timings = analyse(model, image, reject_threshold)
        except Lenet5Error as exc:  # ImageError: undecodable, or no digit in it
            raise ApiError(400, str(exc)) from None
        timing = ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in timings.items())
        return AnswerResponse(answer, headers={"Server-Timing": timing})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket bound to (host, port) for the workers; port 0 picks a free one.
    Raises Lenet5Error when the address cannot be used."""
    if not 0 <= port <= 65535:
        raise Lenet5Error(f"--port must be between 0 and 65535, got {port}.")
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        probe = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        raise Lenet5Error(f"cannot serve on --host {host}: {exc.strerror or exc}; "
                          "use an address of this machine, such as 127.0.0.1.") from None
    try:
        with probe:  # without SO_REUSEPORT, so that a port held by anything (another
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # `lenet5 serve` too)
            probe.bind(address)  # is refused rather than shared
            address = probe.getsockname()  # the port picked for port 0
        sock = bind_shared(family, address)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:  # the port is not what is wrong
            raise Lenet5Error(f"cannot serve on --host {host}: it is not an address of this "
                              "machine; use one that is, such as 127.0.0.1 (this machine "
                              "only) or 0.0.0.0 (every address).") from None
        raise Lenet5Error(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                          "another --port, or stop the program that uses it.") from None
    sock.listen(BACKLOG)  # clients queue from now on, while the workers start
    return sock


# --- serving ------------------------------------------------------------------------------

WORKER_ENV = "LENET5_SERVE_WORKER"
"""How `serve` names the model to its worker processes: uvicorn starts each worker from an
import string (`worker_app`), so the arguments travel in the environment, as JSON."""
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies (linux/prctl.h)."""


def usable_cores() -> int:
    """The cores this process may use (all of them where the system does not say): one worker
    process computes on one, so more workers than cores only share them, ~100 MB each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def default_workers() -> int:
    """One worker process per usable core, at most 4."""
    return min(4, usable_cores())


def stop_with_parent(parent: int) -> None:
    """On Linux, ask the kernel for SIGTERM when `serve`'s process dies, even killed outright,
    so that no orphaned worker keeps answering on (and holding) the port; leave at once if it
    died before the request."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            sys.exit(0)


def worker_app() -> FastAPI:
    """The app of one worker process started by `serve`. A model that cannot be loaded stops
    the worker with uvicorn's startup-failure status, so the supervisor stops rather than
    restarting it forever."""
    from uvicorn.config import STARTUP_FAILURE

    settings = json.loads(os.environ[WORKER_ENV])
    stop_with_parent(settings.pop("parent"))
    try:
        app = create_app(**settings)
    except Lenet5Error as exc:
        print(f"lenet5: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    gc.freeze()  # the modules and the model live as long as the worker: never scan them again
    return app


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The process's environment with `values` set inside, as it was again after: a caller
    of `serve` (a notebook, a test) goes on with its own thread counts."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _supervisor(multiprocess: type) -> type:
    """uvicorn's supervisor, its workers started with Ctrl-C ignored until they serve (uvicorn
    then takes it): a Ctrl-C while one was still importing its modules had printed that
    worker's traceback. The supervisor stops them itself."""
    class Supervisor(multiprocess):
        def init_processes(self) -> None:
            with ctrl_c_ignored():
                super().init_processes()

    return Supervisor


def serve(sock: socket.socket, model_path: str | Path, engine: str = "numpy",
          device: str = "auto", workers: int = 1, reject_threshold: float | None = None
          ) -> None:
    """Answer on `sock` until Ctrl+C or SIGTERM, in `workers` processes that share the socket
    and each load the model (Python computes on one core per process); uvicorn's supervisor
    replaces a worker that dies. Workers are started afresh, never forked, so numpy in them
    reads THREAD_VARIABLES (numpy here was loaded before `serve` could set it)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    settings = json.dumps({"model_path": str(model_path), "engine": engine, "device": device,
                           "parent": os.getpid(), "reject_threshold": reject_threshold})
    # one small image at a time: more threads per worker would only fight the other workers
    # for the cores (unless the user chose a thread count)
    one_thread = {name: "1" for name in THREAD_VARIABLES if name not in os.environ}
    config = uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=workers,
                            http=GuardedHttpToolsProtocol, ws="none", log_level="warning",
                            access_log=False)
    supervisor = _supervisor(Multiprocess)(config, sockets=worker_sockets(sock, workers))
    with _environment({WORKER_ENV: settings, **one_thread}):  # what the workers inherit
        supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        raise Lenet5Error(f"a worker could not load {model_path} (its message is above); "
                          "check the model file and --engine/--device.")
