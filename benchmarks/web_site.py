"""The static site of `lenet5 export --format web` in headless Chromium: its size, its time to
first prediction, the JavaScript forward pass per image, and how often its JavaScript
preprocessing of a canvas drawing gets Python's label.

    python benchmarks/web_site.py RUN_OR_MODEL [RUN_OR_MODEL ...] [--images 1000]
                                  [--drawings 500] [--loads 7]

Each model is exported into a temporary folder, served by Python's http.server on 127.0.0.1
and opened in Debian's chromium (headless; every request that is not to that server is
aborted, and counted). Measured, per model:

- size: the site's files, as written and gzipped (as most static hosts send them);
- first prediction: from navigation start until window.lenet5.ready has resolved and a first
  classify() has returned, timed in the page; median of --loads page loads, each in a fresh
  browser context (nothing cached);
- forward pass: classify() on --images MNIST test images, mean ms per image; and the page's
  whole answer to a drawing (preprocessing a 112x112 canvas, the forward pass and the 5
  pictures: the input and a strip of feature maps per layer), median of 200;
- preprocessing: --drawings MNIST test digits drawn large on a 280x280 white canvas
  (tests/browser.py draw_large), preprocessed by the page's JavaScript and by
  lenet5.preprocess_image, each classified by the same model: how often the labels agree.

Needs PYTHONPATH=src (or lenet5 installed), playwright and /usr/bin/chromium. Writes
benchmarks/results/web_site.md.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import machine, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser kit
from browser import CLASSIFY_DRAWINGS, chromium, draw_large, offline_page, serve_folder  # noqa: E402

from lenet5.data import load as load_dataset  # noqa: E402
from lenet5.images import preprocess_image  # noqa: E402
from lenet5.model import load  # noqa: E402
from lenet5.site import write_site  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "web_site.md"

FIRST_PREDICTION = """(digit) => {
  // catch app.js setting window.lenet5, and time its first answer from navigation start
  Object.defineProperty(window, "lenet5", { configurable: true, set(hook) {
    Object.defineProperty(window, "lenet5", { value: hook, writable: true });
    hook.ready.then(() => {
      const ready = performance.now();
      hook.classify(digit);
      window.firstPrediction = { ready, first: performance.now() };
    });
  } });
}"""

FORWARD = """async (url) => {
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  const started = performance.now();
  for (let i = 0; i < bytes.length; i += 784) lenet5.classify(bytes.subarray(i, i + 784));
  return (performance.now() - started) / (bytes.length / 784);
}"""

PAGE_ANSWER = """() => {
  // the page's own work for one drawing: preprocess its 112x112 canvas, compute, picture
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 112;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  paintStrokes(context, 112, 112, [[[0.28, 0.22], [0.72, 0.22], [0.44, 0.82]]]);
  const times = [];
  for (let i = 0; i < 200; i++) {
    const started = performance.now();
    localAnswer(LeNet5Engine.preprocess(context.getImageData(0, 0, 112, 112)));
    times.push(performance.now() - started);
  }
  return times.sort((a, b) => a - b)[100];
}"""


def sizes(folder: Path, files: list[str]) -> tuple[int, int]:
    """(bytes, gzipped bytes) of the site's files."""
    data = [(folder / name).read_bytes() for name in files]
    return sum(map(len, data)), sum(len(gzip.compress(d, 9)) for d in data)


def first_predictions(browser, base_url: str, digit: list[int], loads: int) -> list[dict]:
    timings = []
    for _ in range(loads):
        page, blocked, errors = offline_page(browser, base_url)
        page.add_init_script(f"({FIRST_PREDICTION})({digit})")
        page.goto(base_url + "/")
        page.wait_for_function("window.firstPrediction")
        timings.append({**page.evaluate("window.firstPrediction"), "blocked": len(blocked),
                        "errors": errors})
        page.context.close()
    return timings


def measure(model_path: str, images: np.ndarray, digits: np.ndarray, labels: np.ndarray,
            loads: int, browser, site: Path) -> dict:
    facts = write_site(model_path, site)
    model = load(model_path)
    (site / "images.u8").write_bytes(images.tobytes())
    paths = draw_large(digits, site / "drawings")
    python_pixels = np.array([preprocess_image(p) for p in paths])
    python_labels = model.predict(python_pixels)
    size, zipped = sizes(site, facts["files"])
    with serve_folder(site) as base_url:
        firsts = first_predictions(browser, base_url, images[0].ravel().tolist(), loads)
        page, blocked, errors = offline_page(browser, base_url)
        page.goto(base_url + "/")
        page.evaluate("() => lenet5.ready.then(() => null)")
        forward_ms = page.evaluate(FORWARD, "images.u8")
        answer_ms = page.evaluate(PAGE_ANSWER)
        answers = page.evaluate(CLASSIFY_DRAWINGS, [f"drawings/{p.name}" for p in paths])
    js_labels = np.array([a["label"] for a in answers])
    js_pixels = np.array([np.frombuffer(base64.b64decode(a["pixels"]), np.uint8)
                          for a in answers]).reshape(-1, 28, 28)
    return {
        "model": model_path, "arch": facts["arch"], "files": len(facts["files"]),
        "size": size, "gzipped": zipped,
        "model_bytes": (site / "model.safetensors").stat().st_size,
        "ready_ms": statistics.median(t["ready"] for t in firsts),
        "first_ms": statistics.median(t["first"] for t in firsts),
        "first_range": (min(t["first"] for t in firsts), max(t["first"] for t in firsts)),
        "loads": loads, "forward_ms": forward_ms, "images": len(images),
        "answer_ms": answer_ms,
        "agree": float((js_labels == python_labels).mean()), "drawings": len(paths),
        "js_acc": float((js_labels == labels).mean()),
        "py_acc": float((python_labels == labels).mean()),
        "pixel_diff": float(np.abs(js_pixels.astype(int) - python_pixels).mean()),
        "blocked": len(blocked) + sum(t["blocked"] for t in firsts),
        "errors": errors + [e for t in firsts for e in t["errors"]],
    }


def report(rows: list[dict], load_before: float, load_after: float, browser_version: str) -> str:
    lines = ["| measure | " + " | ".join(f"`{r['arch']}`" for r in rows) + " |",
             "|---|" + "---:|" * len(rows)]

    def row(name: str, cell) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(r) for r in rows) + " |")

    row("site: files, size (gzipped)", lambda r: f"{r['files']} files, {r['size'] / 1024:.0f} KiB"
        f" ({r['gzipped'] / 1024:.0f} KiB)")
    row("of which model.safetensors", lambda r: f"{r['model_bytes'] / 1024:.0f} KiB")
    row("navigation start -> model ready (median)", lambda r: f"{r['ready_ms']:.0f} ms")
    row("navigation start -> first prediction (median, min-max)",
        lambda r: f"{r['first_ms']:.0f} ms ({r['first_range'][0]:.0f}-"
                  f"{r['first_range'][1]:.0f}) of {r['loads']} loads")
    row("forward pass, `lenet5.classify` (mean)",
        lambda r: f"{r['forward_ms']:.2f} ms/image over {r['images']}")
    row("the page's answer to a drawing: preprocess + forward + 5 pictures (median)",
        lambda r: f"{r['answer_ms']:.1f} ms")
    row("JS vs Python preprocessing: same label",
        lambda r: f"{100 * r['agree']:.1f}% of {r['drawings']}")
    row("accuracy on those drawings: JS / Python preprocessing",
        lambda r: f"{100 * r['js_acc']:.1f}% / {100 * r['py_acc']:.1f}%")
    row("mean absolute 28x28 pixel difference (0-255)", lambda r: f"{r['pixel_diff']:.2f}")
    row("requests blocked (non-local) / page errors",
        lambda r: f"{r['blocked']} / {len(r['errors'])}")
    models = ", ".join(f"`{r['model']}`" for r in rows)
    lines += ["", f"Models: {models}.", "",
              f"Machine: {machine()}; load average {load_before:.1f} before / "
              f"{load_after:.1f} after, Chromium {browser_version} headless."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="+", help="model.safetensors files or run directories")
    parser.add_argument("--images", type=int, default=1000, help="MNIST test images timed")
    parser.add_argument("--drawings", type=int, default=500, help="canvas drawings compared")
    parser.add_argument("--loads", type=int, default=7, help="page loads timed")
    args = parser.parse_args()
    mnist = load_dataset("mnist", log=lambda _: None)
    images = mnist.test_images[:args.images]
    digits = mnist.test_images[-args.drawings:]  # other digits than the timed ones
    labels = mnist.test_labels[-args.drawings:]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work, chromium() as browser:
        rows = [measure(m, images, digits, labels, args.loads, browser, Path(work) / str(i))
                for i, m in enumerate(args.models)]
        version = browser.version
    text = report(rows, load_before, os.getloadavg()[0], version)
    write_results(RESULTS, text)


if __name__ == "__main__":
    main()
