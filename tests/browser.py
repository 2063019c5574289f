"""Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by Playwright (whose
own browser download is not used), a folder or an app served on 127.0.0.1, pages that cannot
reach beyond this machine, a hand that draws with the mouse or a finger (digits, numbers), and
MNIST digits drawn large on a canvas for the static site's preprocessing."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import math
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
NO_CHROMIUM = (f"{CHROMIUM} is missing; install Debian's chromium (apt-get install chromium) "
               "to run the browser tests")


@contextlib.contextmanager
def chromium() -> Iterator:
    """A Playwright Browser on Debian's chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """``python -m http.server`` on 127.0.0.1 (a free port) in a thread: the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_app(app) -> Iterator[str]:
    """A FastAPI app on uvicorn at 127.0.0.1 (a free port) in a thread: the base URL."""
    import uvicorn

    from lenet5.server import listen

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def offline_page(browser, base_url: str, **context_options) -> tuple:
    """(page, blocked, errors): a page whose requests outside ``base_url`` are aborted and
    listed in ``blocked``; ``errors`` collects uncaught exceptions and console errors."""
    context = browser.new_context(**context_options)
    blocked: list[str] = []

    def local_only(route) -> None:
        if route.request.url.startswith(base_url + "/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    return page, blocked, errors


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Drag the mouse along each polyline (0-1 canvas coordinates), many small moves per
    segment, as a hand would."""
    box = page.locator("#canvas").bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x * box["width"], box["y"] + y * box["height"]

    for line in strokes:
        page.mouse.move(*at(*line[0]))
        page.mouse.down()
        for point in line[1:]:
            page.mouse.move(*at(*point), steps=15)
        page.mouse.up()


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float,
         steps: int = 16) -> list[tuple[float, float]]:
    """Points along an elliptic arc, angles in turns (0.25: straight down)."""
    return [(cx + rx * math.cos(2 * math.pi * (start + (stop - start) * i / steps)),
             cy + ry * math.sin(2 * math.pi * (start + (stop - start) * i / steps)))
            for i in range(steps + 1)]


DIGIT_STROKES = {
    "0": [_arc(0.5, 0.5, 0.42, 0.5, 0, 1, 24)],
    "1": [[(0.55, 0.0), (0.45, 1.0)]],
    "2": [_arc(0.5, 0.28, 0.4, 0.28, 0.525, 1.125, 12) + [(0.05, 1.0), (0.95, 1.0)]],
    "4": [[(0.55, 0.0), (0.1, 0.65), (0.95, 0.65)], [(0.7, 0.3), (0.7, 1.0)]],
    "7": [[(0.1, 0.0), (0.9, 0.0), (0.4, 1.0)]],
}
"""How a hand writes these digits: polylines in a unit box (x right, y down)."""


def write_row(glyphs: list[list[list[tuple[float, float]]]], aspect: float, top: float = 0.25,
              bottom: float = 0.75) -> list[list[tuple[float, float]]]:
    """Polylines (0-1 canvas coordinates) writing the glyphs (each its polylines in a unit
    box) in a row across a pad `aspect` times wider than tall, each at most 0.6 times as wide
    as tall."""
    height = bottom - top
    pitch = min(0.84 / len(glyphs), height / aspect)  # room per glyph, 0-1 of the width
    width = min(0.6 * height / aspect, 0.7 * pitch)
    left = 0.5 - pitch * len(glyphs) / 2
    return [[(left + pitch * (i + 0.5) + (x - 0.5) * width, top + y * height) for x, y in line]
            for i, glyph in enumerate(glyphs) for line in glyph]


def number_strokes(text: str, aspect: float) -> list[list[tuple[float, float]]]:
    """Polylines writing `text` (digits of DIGIT_STROKES) across a pad (see `write_row`)."""
    return write_row([DIGIT_STROKES[digit] for digit in text], aspect)


def touch_draw(page, line: list[tuple[float, float]]) -> None:
    """Draw one polyline with a finger: touch events through the DevTools protocol, which the
    page sees as pointer events of type "touch" (a phone context needs has_touch=True)."""
    box = page.locator("#canvas").bounding_box()
    points = [line[0]] + [(x0 + (x1 - x0) * t / 15, y0 + (y1 - y0) * t / 15)
                          for (x0, y0), (x1, y1) in zip(line[:-1], line[1:], strict=True)
                          for t in range(1, 16)]
    cdp = page.context.new_cdp_session(page)
    for i, (x, y) in enumerate(points):
        touch = {"x": box["x"] + x * box["width"], "y": box["y"] + y * box["height"]}
        cdp.send("Input.dispatchTouchEvent",
                 {"type": "touchStart" if i == 0 else "touchMove", "touchPoints": [touch]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def draw_large(digits: np.ndarray, folder: Path, seed: int = 0, side: int = 280) -> list[Path]:
    """MNIST digits (N, 28, 28) as canvas drawings: dark ink on a white side x side PNG, each
    scaled (bicubic) to a random 50-100% of the side at a random place. Returns the files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, digit in enumerate(digits):
        size = int(rng.integers(side // 2, side + 1))
        ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (side, side), 255)
        canvas.paste(ink, (int(rng.integers(0, side - size + 1)),
                           int(rng.integers(0, side - size + 1))))
        paths.append(folder / f"{index}.png")
        canvas.save(paths[-1])
    return paths


CLASSIFY_DRAWINGS = """async (urls) => {
  // each PNG drawn onto a canvas, preprocessed and classified by the static site's engine
  await window.lenet5.ready;
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const answers = [];
  for (const url of urls) {
    const bitmap = await createImageBitmap(await (await fetch(url)).blob());
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    context.drawImage(bitmap, 0, 0);
    const pixels = LeNet5Engine.preprocess(context.getImageData(0, 0, bitmap.width,
                                                                bitmap.height));
    answers.push({ pixels: btoa(String.fromCharCode(...pixels)),
                   label: window.lenet5.classify(pixels).label });
  }
  return answers;
}"""
"""page.evaluate(CLASSIFY_DRAWINGS, urls) -> [{pixels: base64 of 784 bytes, label}] for PNGs
on the site."""


def settled(page) -> None:
    """Wait until the reading shows the answer to everything drawn (not to fewer strokes)."""
    from playwright import sync_api

    sync_api.expect(page.locator("#result")).to_have_attribute("aria-busy", "false")


def each_map_shows_its_part_of_the_strip(page) -> None:
    """Every C1 map on screen looks like its own 28 columns of the layer's strip, more than
    like any other's: no map shows its neighbour's part, or the whole strip squeezed. (Taken
    once the reading has settled and every map's picture is decoded: a map shot while a later
    answer replaced the strips had looked like no part of either.)"""
    settled(page)
    page.wait_for_function("[...document.querySelectorAll('#layers img')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    maps = page.locator("#layers figure[data-name='C1'] img")
    url = maps.first.get_attribute("src")
    strip = Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))).convert("L")
    parts = np.split(np.asarray(strip, dtype=float), maps.count(), axis=1)  # (28, 28) each
    for k in range(len(parts)):
        shot = Image.open(io.BytesIO(maps.nth(k).screenshot())).convert("L")
        seen = np.asarray(shot.resize((28, 28), Image.Resampling.BOX), dtype=float)
        misfit = [np.abs(seen - part)[2:-2, 2:-2].mean() for part in parts]  # no corners
        others = misfit[:k] + misfit[k + 1:]  # scaled 2.5x and back: its own is near
        assert misfit[k] < min(others) / 2, (k, misfit)
