"""Measure number reading and refusal on held-out pictures a model never saw, in any form.

    python benchmarks/read_numbers.py RUN_DIR [--numbers 300] [--nondigits 200]
                                              [--singles 500] [--keep DIR]

Trains nothing. It makes three kinds of JPEG photos on unevenly lit paper, each set from a seed
of its own, none shared with what `lenet5 train` generates to train and calibrate the refusal:

- numbers: 2-6 MNIST *test* digits in a row (`tests/number_photos.py`): mixed sizes, a slant
  and a slight rotation, some touching or overlapping, some with a stroke broken in two (as
  often as makes a plain connected-components reader score what issue 15 measured, 64%);
  and "hard numbers", with twice as many touching and three times as many broken; and the
  numbers' digits again (the same seed), once written with none touching and once with no
  stroke broken, to show what each costs (the photos differ from the first number whose layout
  does: the generator's later draws differ);
- non-digits (`tests/nondigit_photos.py`): printed letters in Debian's DejaVu and Liberation
  fonts (`nondigit_photos.FONTS`: the same pictures on every machine that has them), hand-drawn
  letters, signs, scribbles, hatching, shapes, smudges, empty paper;
- single digits: MNIST test digits photographed one per picture (`tests/photo_digits.py`);

writes them as files and reads each with `lenet5.predict.predict_file`, the code behind
`lenet5 predict --json`, scored as issue 15 will score it: a number on its "text", a refusal as
"label" null with no "text" (or an error entry), a single digit on its "label". Times are per
picture after the model is loaded (read, decode, segment, one forward pass, best path), for
the 4-digit numbers. Writes benchmarks/results/read_numbers.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import machine, picture_folder, write_results

from lenet5.data import load as load_dataset
from lenet5.model import load as load_model
from lenet5.predict import predict_file
from lenet5.refusal import threshold

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the generators
from nondigit_photos import make_nondigit_set  # noqa: E402
from number_photos import HARD, make_number_set  # noqa: E402
from photo_digits import make_photo_set  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "read_numbers.md"
SEEDS = {"numbers": 2601, "nondigits": 2602, "singles": 2603, "hard numbers": 2604}
"""Evaluation seeds, looked at only for the figures reported; the design was tuned on sets of
other seeds (1501-1504), tests use others again, and training's generators share nothing with
these."""


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two digit strings."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _read_right(results: list[dict], texts: list[str]) -> np.ndarray:
    """(n,) bool: each number read exactly."""
    return np.array([r.get("text") == t for r, t in zip(results, texts, strict=True)])


def score_numbers(results: list[dict], texts: list[str]
                  ) -> tuple[float, float, float, dict[int, float]]:
    """(share read exactly, digit-level accuracy, share refused, exact share by length)."""
    read = [r.get("text") or "" for r in results]
    right = _read_right(results, texts)
    errors = sum(edit_distance(a, b) for a, b in zip(read, texts, strict=True))
    lengths = sorted({len(t) for t in texts})
    by_length = {n: float(np.mean([ok for ok, t in zip(right, texts, strict=True)
                                   if len(t) == n])) for n in lengths}
    return (float(np.mean(right)), 1 - errors / sum(len(t) for t in texts),
            float(np.mean([refused(r) for r in results])), by_length)


def error_kinds(results: list[dict], texts: list[str]) -> Counter[str]:
    """How the numbers read wrong went wrong: refused; read with as many digits, one or more
    of them wrong; read with fewer digits (two touching digits read as one, say, or a faint
    one left out) or with more (a broken digit read as two, say)."""
    kinds: Counter[str] = Counter()
    for result, text in zip(results, texts, strict=True):
        read = result.get("text")
        if read == text:
            continue
        if refused(result):
            kinds["refused"] += 1
        elif len(read) == len(text):
            kinds["as many digits, misread"] += 1
        else:
            kinds["fewer digits" if len(read) < len(text) else "more digits"] += 1
    return kinds


def refused(result: dict) -> bool:
    return "error" in result or (result["label"] is None and not result["text"])


def run(model, files: list[Path]) -> tuple[list[dict], list[float], list[float]]:
    """Each file's result, wall and CPU milliseconds."""
    results, wall, cpu = [], [], []
    for file in files:
        started, started_cpu = time.perf_counter(), time.process_time()
        result, _ = predict_file(model, file)
        wall.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.process_time() - started_cpu))
        results.append(result)
    return results, wall, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--numbers", type=int, default=300)
    parser.add_argument("--nondigits", type=int, default=200)
    parser.add_argument("--singles", type=int, default=500)
    parser.add_argument("--hard", type=int, default=150, help="hard numbers")
    parser.add_argument("--keep", default=None, help="write the pictures into this folder")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    data = load_dataset("mnist", log=lambda _: None)
    model = load_model(args.run_dir)
    def numbers(n: int, seed: int, **chances: float) -> list[tuple[bytes, str]]:
        return [(jpeg, text) for jpeg, text, _ in make_number_set(
            data.test_images, data.test_labels, n, seed, **chances)]

    sets = {"numbers": numbers(args.numbers, SEEDS["numbers"]),
            "nondigits": make_nondigit_set(args.nondigits, SEEDS["nondigits"]),
            "singles": make_photo_set(data.test_images, data.test_labels, args.singles,
                                      SEEDS["singles"]),
            "hard numbers": numbers(args.hard, SEEDS["hard numbers"], **HARD),
            "numbers set apart": numbers(args.numbers, SEEDS["numbers"], touching=0.0),
            "numbers unbroken": numbers(args.numbers, SEEDS["numbers"], broken=0.0)}
    with picture_folder(args.keep, "read-numbers-") as folder:
        files: dict[str, list[Path]] = {}
        for name, items in sets.items():
            (folder / name.replace(" ", "-")).mkdir(parents=True, exist_ok=True)
            files[name] = []
            for i, (jpeg, truth) in enumerate(items):
                files[name].append(folder / name.replace(" ", "-") /
                                   f"{i:03d}-{truth}.jpg".replace(" ", "_"))
                files[name][-1].write_bytes(jpeg)

        results, wall, cpu = {}, {}, {}
        for name in sets:
            results[name], wall[name], cpu[name] = run(model, files[name])

    texts = [text for _, text in sets["numbers"]]
    exact, digit_acc, numbers_refused, exact_by_length = score_numbers(
        results["numbers"], texts)
    by_length = Counter(len(t) for t in texts)
    right = _read_right(results["numbers"], texts)
    variants = {}  # the same digits written otherwise: (exact, digit-level, right only there)
    for name in ("numbers set apart", "numbers unbroken"):
        assert [text for _, text in sets[name]] == texts, "the generator drew other digits"
        exact_there, digits_there, _, _ = score_numbers(results[name], texts)
        right_there = _read_right(results[name], texts)
        variants[name] = (exact_there, digits_there, int(np.sum(right_there & ~right)),
                          int(np.sum(right & ~right_there)))
    wrong_kinds = error_kinds(results["numbers"], texts)
    hard_exact, hard_digits, hard_refused, _ = score_numbers(
        results["hard numbers"], [text for _, text in sets["hard numbers"]])
    kinds = [kind for _, kind in sets["nondigits"]]
    nd_refused = [refused(r) for r in results["nondigits"]]
    by_kind = {k: (sum(x for x, kk in zip(nd_refused, kinds, strict=True) if kk == k),
                   kinds.count(k)) for k in dict.fromkeys(kinds)}
    single_labels = [label for _, label in sets["singles"]]
    single_refused = np.mean([refused(r) for r in results["singles"]])
    single_right = np.mean([r.get("label") == t for r, t in zip(results["singles"],
                                                                 single_labels, strict=True)])
    four = [i for i, t in enumerate(texts) if len(t) == 4]
    ms_wall = float(np.median([wall["numbers"][i] for i in four]))
    ms_cpu = float(np.median([cpu["numbers"][i] for i in four]))
    ms_single = float(np.median(cpu["singles"]))

    rows = [
        ("numbers read exactly", f"{100 * exact:.1f}%", ">= 90% (bar 85%)"),
        ("digit-level accuracy (1 - edit distance / digits)", f"{100 * digit_acc:.1f}%", ""),
        ("numbers refused", f"{100 * numbers_refused:.1f}%", ""),
        ("the same digits written with none touching: numbers read exactly",
         f"{100 * variants['numbers set apart'][0]:.1f}%", ""),
        ("none touching: digit-level accuracy",
         f"{100 * variants['numbers set apart'][1]:.1f}%", ""),
        ("the same digits written with no stroke broken: numbers read exactly",
         f"{100 * variants['numbers unbroken'][0]:.1f}%", ""),
        ("none broken: digit-level accuracy", f"{100 * variants['numbers unbroken'][1]:.1f}%",
         ""),
        ("hard numbers read exactly", f"{100 * hard_exact:.1f}%", ""),
        ("hard numbers: digit-level accuracy", f"{100 * hard_digits:.1f}%", ""),
        ("hard numbers refused", f"{100 * hard_refused:.1f}%", ""),
        ("non-digits refused", f"{100 * np.mean(nd_refused):.1f}%", ">= 90%"),
        ("single digits refused", f"{100 * single_refused:.1f}%", "<= 2%"),
        ("single digits right", f"{100 * single_right:.1f}%", ">= 98%"),
        ("ms per 4-digit number, median wall", f"{ms_wall:.1f}", "<= 50"),
        ("ms per 4-digit number, median CPU", f"{ms_cpu:.1f}", ""),
        ("ms per single digit photo, median CPU", f"{ms_single:.1f}", ""),
    ]
    meta = model.metadata
    lines = [
        "# Reading numbers, refusing non-digits",
        "",
        f"Model: `{args.run_dir}` ({meta['arch']}, {meta.get('epochs')} epochs, MNIST test "
        f"accuracy {100 * meta.get('test_accuracy', float('nan')):.2f}%), refusal threshold "
        f"{threshold(meta):.3f} ("
        + (f"calibrated: {meta['refusal']}" if "refusal" in meta else "the default") + ").",
        f"Sets (`benchmarks/read_numbers.py`, seeds {SEEDS}): {args.numbers} numbers of 2-6 "
        f"MNIST test digits, {args.hard} hard numbers, {args.nondigits} non-digits, "
        f"{args.singles} single-digit photos; and the numbers' digits again (seed "
        f"{SEEDS['numbers']}), {args.numbers} written with none touching and {args.numbers} "
        "with no stroke broken.",
        "",
        "| measure | result | target |",
        "|---|---:|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "Numbers read exactly, by length: " + ", ".join(
            f"{n} digits {100 * v:.0f}% ({by_length[n]})" for n, v in exact_by_length.items())
        + ".",
        "",
        "The same digits written with none touching, or none broken, are other photos (the "
        "generator's draws differ from the first number whose layout does). Numbers read "
        "right only that way, and only as generated: none touching "
        f"{variants['numbers set apart'][2]} and {variants['numbers set apart'][3]}, none "
        f"broken {variants['numbers unbroken'][2]} and {variants['numbers unbroken'][3]} (two "
        f"independent sets of {args.numbers} numbers, {100 * exact:.0f}% of them read exactly, "
        f"differ by {100 * np.sqrt(2 * exact * (1 - exact) / args.numbers):.1f} points, one "
        "standard deviation, by chance alone; these share their digits, so less).",
        "",
        f"Numbers read wrong ({sum(wrong_kinds.values())}), by what went wrong: " + ", ".join(
            f"{kind} {count}" for kind, count in wrong_kinds.most_common()) + ".",
        "",
        "Non-digits refused, by kind: " + ", ".join(
            f"{k} {r}/{n}" for k, (r, n) in by_kind.items()) + ".",
        "",
        f"Machine: {machine()}, shared with other work (wall times are upper bounds; CPU time "
        f"is what a picture costs), OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS', '-')}.",
        "",
    ]
    write_results(Path(args.out), "\n".join(lines))
    if args.keep:
        folder = Path(args.keep)
        wrong = [f"{f.name}: read {r.get('text')!r} {r.get('rejected') or r.get('error') or ''}"
                 for f, r, t in zip(files["numbers"], results["numbers"], texts, strict=True)
                 if r.get("text") != t]
        accepted = [f"{f.name}: {r.get('text')!r}" for f, r, x in
                    zip(files["nondigits"], results["nondigits"], nd_refused, strict=True)
                    if not x]
        (folder / "numbers-wrong.txt").write_text("\n".join(wrong) + "\n")
        (folder / "nondigits-accepted.txt").write_text("\n".join(accepted) + "\n")


if __name__ == "__main__":
    main()
