"""Measure a trained model on digits as users bring them: photos and browser-canvas drawings.

    python benchmarks/real_world.py RUN_DIR [--n 1000] [--seed 0] [--keep DIR]

Trains nothing. From MNIST *test* digits (never seen in training) it makes

- photos: `tests/photo_digits.py` (dark ink on uneven, textured paper, off-centre, 15-60% of the
  frame, rotated up to 12 degrees, blurred, specks, JPEG quality 60-90);
- canvas drawings: each digit redrawn as a browser canvas exports it: a round pen of 12-28 px
  along the digit's centre line (Zhang-Suen thinning of the upscaled digit), black with
  anti-aliased alpha on a transparent 280x280 RGBA PNG, at a random size and place;

writes them as files and classifies each with `lenet5.predict.predict_file`, the code behind
`lenet5 predict` (read, decode, preprocess_image, one forward pass). Reports accuracy on each
set, the model's accuracy on the same digits as MNIST had them (what preprocessing can at
best reach), and the latency per image after the model is loaded, including a 12-megapixel
phone-sized JPEG. Writes benchmarks/results/real_world.md; with --keep, the images and a list
of the digits read wrongly only as pictures stay in DIR.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import machine, picture_folder, write_results
from PIL import Image
from scipy import ndimage

from lenet5.data import load as load_dataset
from lenet5.model import load as load_model
from lenet5.predict import predict_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the photo generator
from photo_digits import make_photo, to_jpeg  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "real_world.md"
CANVAS = 280
PEN_WIDTH = (12.0, 28.0)  # px on the 280 px canvas
DIGIT_SIDE = (100, 250)  # px, the drawing's longer side


def thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: a (H, W) bool mask -> its 1 px wide, still connected centre line.
    Each pass peels removable border pixels everywhere at once."""
    image = np.pad(mask, 1).astype(np.uint8)  # (H+2, W+2), so every pixel has 8 neighbours
    while True:
        changed = False
        for first_pass in (True, False):
            p = np.pad(image, 1)
            # neighbours clockwise from north: P2 P3 P4 P5 P6 P7 P8 P9, each (H+2, W+2)
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2],
                 p[1:-1, :-2], p[:-2, :-2]]
            count = sum(n)
            transitions = sum((n[i] == 0) & (n[(i + 1) % 8] == 1) for i in range(8))
            if first_pass:
                side = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                side = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            remove = (image == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                image[remove] = 0
                changed = True
        if not changed:
            return image[1:-1, 1:-1].astype(bool)


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
    line = thin(ink > 0.45)  # (h', w') the pen's path
    rows, cols = np.nonzero(line)
    line = line[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # (h, w) centre line box
    pen = rng.uniform(*PEN_WIDTH)
    margin = int(np.ceil(pen / 2)) + 1  # the pen's edge stays on the canvas
    h, w = min(line.shape[0], CANVAS - 2 * margin), min(line.shape[1], CANVAS - 2 * margin)
    top = int(rng.integers(margin, CANVAS - margin - h + 1))
    left = int(rng.integers(margin, CANVAS - margin - w + 1))
    canvas_line = np.zeros((CANVAS, CANVAS), bool)  # (280, 280)
    canvas_line[top:top + h, left:left + w] = line[:h, :w]
    to_line = ndimage.distance_transform_edt(~canvas_line)  # (280, 280)
    alpha = np.clip(pen / 2 + 0.5 - to_line, 0.0, 1.0)  # anti-aliased round pen
    rgba = np.zeros((CANVAS, CANVAS, 4), np.uint8)  # black ink; transparent elsewhere
    rgba[..., 3] = np.rint(alpha * 255)
    return Image.fromarray(rgba, "RGBA")


UNREADABLE, REFUSED = -1, -2


def classify_folder(model, files: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted labels (UNREADABLE, or REFUSED for "not a digit" or a reading of several
    digits), wall and CPU seconds per image."""
    predicted, wall, cpu = [], [], []
    for file in files:
        started, started_cpu = time.perf_counter(), time.thread_time()
        result, _ = predict_file(model, file)
        wall.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        label = result.get("label", UNREADABLE) if "error" not in result else UNREADABLE
        predicted.append(REFUSED if label is None else label)
    return np.array(predicted), np.array(wall), np.array(cpu)


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
    rng = np.random.default_rng(args.seed)
    chosen, files, read = {}, {}, {}  # per set: digits, files, (predicted, wall, cpu)
    with picture_folder(args.keep, "lenet5-real-world-") as folder:
        for name, suffix in (("photos", "jpg"), ("drawings", "png")):
            (folder / name).mkdir(exist_ok=True)
            chosen[name] = rng.choice(len(data.test_images), size=args.n, replace=False)  # (n,)
            files[name] = []
            for i, index in enumerate(chosen[name]):
                digit, label = data.test_images[index], data.test_labels[index]
                files[name].append(folder / name / f"{i:05d}-{label}.{suffix}")
                if name == "photos":
                    files[name][-1].write_bytes(to_jpeg(make_photo(digit, rng), rng))
                else:
                    make_drawing(digit, rng).save(files[name][-1])
        predict_file(model, files["photos"][0])  # warm up caches before timing
        for name in files:
            read[name] = classify_folder(model, files[name])
        phone = folder / "phone-12mp.jpg"
        Image.open(files["photos"][0]).convert("RGB").resize(
            (4000, 3000), Image.Resampling.BICUBIC).save(phone, quality=90)
        _, wall, cpu = classify_folder(model, [phone] * 11)

    mnist_predicted = model.predict(data.test_images)  # (10000,)
    rows = []
    for name, target in (("photos", 0.98), ("drawings", 0.93)):
        (predicted, set_wall, set_cpu), labels = read[name], data.test_labels[chosen[name]]
        # The same digits as MNIST had them: what the model reads with perfect preprocessing.
        original = mnist_predicted[chosen[name]]  # (n,)
        lost = (predicted != labels) & (original == labels)  # wrong only as a picture
        answered = predicted >= 0
        rows.append(f"| {name} | {100 * np.mean(predicted == labels):.2f}% | "
                    f">= {100 * target:.0f}% | {np.sum(predicted == UNREADABLE)} | "
                    f"{100 * np.mean(predicted == REFUSED):.2f}% | "
                    f"{100 * np.mean(predicted[answered] == labels[answered]):.2f}% | "
                    f"{100 * np.mean(original == labels):.2f}% | {lost.sum()} | "
                    f"{1000 * np.median(set_wall):.1f} | "
                    f"{1000 * np.percentile(set_wall, 90):.1f} | "
                    f"{1000 * np.median(set_cpu):.1f} |")
        if args.keep:
            (Path(args.keep) / f"{name}-lost.txt").write_text("".join(
                f"{i:05d}-{label} read as {p}\n" for i, (label, p, bad)
                in enumerate(zip(labels, predicted, lost, strict=True)) if bad))

    mnist_accuracy = np.mean(mnist_predicted == data.test_labels)
    epochs = model.metadata.get("epochs", "?")
    lines = [
        f"Model: `{args.run_dir}` ({model.arch.name}, {epochs} epochs, {args.engine} engine; "
        f"MNIST test accuracy {100 * mnist_accuracy:.2f}%).",
        f"Sets: {args.n} images each from MNIST test digits, seed {args.seed}, made by "
        "`benchmarks/real_world.py` (photos: `tests/photo_digits.py`; drawings: round-pen "
        "strokes on a transparent 280x280 canvas).",
        "",
        "| set | accuracy | target | unreadable | refused | right among those answered "
        "| same digits as MNIST had them | wrong only as pictures | median ms / image | p90 ms "
        "| median CPU ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "| one 12-megapixel JPEG (4000x3000), 11 runs | | | | | | | | "
        f"{1000 * np.median(wall):.1f} "
        f"| | {1000 * np.median(cpu):.1f} |",
        "",
        "*accuracy* counts a refused digit (\"not a digit\", or read as several digits) as "
        "wrong; *same digits as MNIST had them*: the model on the original 28x28 digits, the "
        "most that preprocessing can deliver; *wrong only as pictures*: digits the model reads "
        "correctly from MNIST but not from the picture, i.e. errors preprocessing (or the "
        "distortion) causes. Latency is end to end per file after the model is loaded (read, "
        "decode, preprocess_image, forward pass), target <= 50 ms. "
        f"Machine: {machine()}, shared with other work (wall times are upper bounds; CPU "
        "time is what one image costs), "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '-')}.",
    ]
    text = "# Real-world digits: photos and canvas drawings\n\n" + "\n".join(lines) + "\n"
    write_results(Path(args.out), text)


if __name__ == "__main__":
    main()
