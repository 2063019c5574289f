"""Measure a trained model on digits as users bring them: photos and browser-canvas drawings.

    python benchmarks/real_world.py RUN_DIR [--n 1000] [--seed 0] [--keep DIR]

Trains nothing. From MNIST *test* digits (never seen in training) it makes

- photos: `lenet5.photo_digits.make_photo_set` (dark ink on uneven, textured paper, off-centre,
  15-60% of the frame, rotated up to 12 degrees, blurred, specks, JPEG quality 60-90);
- canvas drawings: each digit redrawn as a browser canvas exports it: a round pen of 12-28 px
  along the digit's centre line, black with anti-aliased alpha on a transparent 280x280 RGBA
  PNG, at a random size (100-250 px) and place;

writes them as files and classifies each with `lenet5.predict.predict_file`, the code behind
`lenet5 predict` (read, decode, preprocess_image, one forward pass). Reports accuracy on each
set, the model's accuracy on the same digits as MNIST had them (what preprocessing can at
best reach), and the median latency per image after the model is loaded, including a
12-megapixel phone-sized JPEG. Writes benchmarks/results/real_world.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from lenet5.data import load as load_dataset
from lenet5.model import load as load_model
from lenet5.photo_digits import make_photo, to_jpeg
from lenet5.predict import predict_file

RESULTS = Path(__file__).parent / "results" / "real_world.md"
CANVAS = 280
PEN_WIDTH = (12.0, 28.0)  # px on the 280 px canvas
DIGIT_SIDE = (100, 250)  # px, the drawing's longer side


def make_drawing(digit28: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 280x280 RGBA canvas export of an MNIST digit (28, 28) redrawn with a round pen."""
    rows, cols = np.nonzero(digit28 > 64)
    digit = digit28[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # (h, w) ink box
    side = rng.uniform(*DIGIT_SIDE)
    scale = side / max(digit.shape)
    size = max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale))  # (w, h)
    ink = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BICUBIC),
                     dtype=np.float32) / 255.0  # (h', w')
    ink = ndimage.gaussian_filter(ink, 0.08 * scale)  # smooth pixel steps before tracing
    mask = ink > 0.45
    depth = ndimage.distance_transform_edt(mask)  # (h', w') distance to the stroke's edge
    # The centre line: pixels (nearly) as deep as their neighbours; tiny fragments dropped.
    line = mask & (depth >= ndimage.maximum_filter(depth, size=3) - 0.8)
    labels, count = ndimage.label(line, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    line = (sizes >= 15)[labels] & line

    canvas_line = np.zeros((CANVAS, CANVAS), bool)  # (280, 280)
    pen = rng.uniform(*PEN_WIDTH)
    margin = int(pen)
    h, w = line.shape
    top = int(rng.integers(0, max(1, CANVAS - h - margin) + 1))
    left = int(rng.integers(0, max(1, CANVAS - w - margin) + 1))
    h, w = min(h, CANVAS - top), min(w, CANVAS - left)
    canvas_line[top:top + h, left:left + w] = line[:h, :w]
    to_line = ndimage.distance_transform_edt(~canvas_line)  # (280, 280)
    alpha = np.clip(pen / 2 + 0.5 - to_line, 0.0, 1.0)  # anti-aliased round pen
    rgba = np.zeros((CANVAS, CANVAS, 4), np.uint8)  # black ink; transparent elsewhere
    rgba[..., 3] = np.rint(alpha * 255)
    return Image.fromarray(rgba, "RGBA")


def classify_folder(model, files: list[Path]) -> tuple[np.ndarray, list[float]]:
    """Predicted labels (-1 for an unreadable image) and seconds per image."""
    predicted, seconds = [], []
    for file in files:
        started = time.perf_counter()
        result, _ = predict_file(model, file)
        seconds.append(time.perf_counter() - started)
        predicted.append(result.get("label", -1))
    return np.array(predicted), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run directory or model.safetensors")
    parser.add_argument("--n", type=int, default=1000, help="images per set")
    parser.add_argument("--seed", type=int, default=0, help="which digits and distortions")
    parser.add_argument("--engine", default="numpy", help="engine that computes")
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="write the images here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS), help="results file (Markdown)")
    args = parser.parse_args()

    data = load_dataset("mnist", log=lambda _: None)
    model = load_model(args.run_dir, engine=args.engine)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="lenet5-real-world-"))
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    (folder / "drawings").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    sets = {}
    for name, suffix in (("photos", "jpg"), ("drawings", "png")):
        chosen = rng.choice(len(data.test_images), size=args.n, replace=False)  # (n,)
        files = []
        for i, index in enumerate(chosen):
            digit, label = data.test_images[index], data.test_labels[index]
            files.append(folder / name / f"{i:05d}-{label}.{suffix}")
            if name == "photos":
                files[-1].write_bytes(to_jpeg(make_photo(digit, rng), rng))
            else:
                make_drawing(digit, rng).save(files[-1])
        sets[name] = files, data.test_labels[chosen].astype(np.int64), chosen
    # The same digits as MNIST had them: the ceiling that preprocessing can at best reach.
    ceiling = {name: np.mean(model.predict(data.test_images[chosen]) == labels)
               for name, (_, labels, chosen) in sets.items()}

    photo_files = sets["photos"][0]
    predict_file(model, photo_files[0])  # warm up caches before timing
    rows = []
    for name, target in (("photos", 0.98), ("drawings", 0.93)):
        files, labels, _ = sets[name]
        predicted, seconds = classify_folder(model, files)
        accuracy = float(np.mean(predicted == labels))
        rows.append((name, accuracy, target, int(np.sum(predicted < 0)), ceiling[name],
                     1000 * statistics.median(seconds), 1000 * np.percentile(seconds, 90)))
        wrong = [f.name for f, p, y in zip(files, predicted, labels, strict=True) if p != y]
        (folder / f"{name}-wrong.txt").write_text("\n".join(wrong) + "\n")

    phone = folder / "phone-12mp.jpg"
    Image.open(photo_files[0]).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)\
        .save(phone, quality=90)
    phone_ms = 1000 * statistics.median(classify_folder(model, [phone] * 11)[1])

    mnist_accuracy = np.mean(model.predict(data.test_images) == data.test_labels)
    epochs = model.metadata.get("epochs", "?")
    lines = [
        f"Model: `{args.run_dir}` ({model.arch.name}, {epochs} epochs, {args.engine} engine; "
        f"MNIST test accuracy {100 * mnist_accuracy:.2f}%).",
        f"Sets: {args.n} images each from MNIST test digits, seed {args.seed}; "
        f"images in `{folder}`.",
        "",
        "| set | accuracy | target | errors (unreadable) | same digits as MNIST had them "
        "| median ms / image | p90 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {name} | {100 * acc:.2f}% | >= {100 * target:.0f}% | {errors} | {100 * ceil:.2f}% "
          f"| {median:.1f} | {p90:.1f} |" for name, acc, target, errors, ceil, median, p90 in rows],
        f"| 12-megapixel JPEG (4000x3000) | | | | | {phone_ms:.1f} | |",
        "",
        "Latency is end to end per file after the model is loaded (read, decode, preprocess, "
        "forward), target <= 50 ms. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work, so times "
        f"are upper bounds), OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '-')}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
    ]
    text = "# Real-world digits: photos and canvas drawings\n\n" + "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
