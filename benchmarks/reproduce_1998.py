"""Reproduce LeCun, Bottou, Bengio, Haffner (1998) with `lenet5 train --arch lenet5-1998`:
20 passes without distortions (paper: 0.95% test error) and with random affine distortions
(paper: 0.8%). Runs the real command in a child process per setting and reads its run
directory.

    python benchmarks/reproduce_1998.py [--epochs 20] [--limit N] [--engine numpy]
                                        [--settings none,affine] [--out DIR]

Writes benchmarks/results/reproduce_1998.md. With fewer than 20 epochs or a --limit the table
says it is a short run, not the reproduction. The settings train at the same time, one child
process each, each with one BLAS thread unless OPENBLAS_NUM_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine, write_results

from lenet5.arch import LENET5_1998
from lenet5.files import read_metrics

RESULTS = Path(__file__).parent / "results" / "reproduce_1998.md"
PAPER_TEST_ERROR = {"none": 0.95, "affine": 0.80}  # percent, section III of the paper
PAPER_PARAMS, PAPER_CONNECTIONS, PAPER_PASSES = 60_000, 340_908, 20
SETTING_NAMES = {"none": "no distortions", "affine": "affine distortions (--augment affine)",
                 "elastic": "affine + elastic (--augment elastic; not in the paper)"}


def run_setting(augment: str, args: argparse.Namespace, root: Path) -> dict:
    out = root / f"lenet5-1998-{augment}"
    command = [sys.executable, "-m", "lenet5", "train", "--arch", "lenet5-1998",
               "--engine", args.engine, "--epochs", str(args.epochs), "--augment", augment,
               "--out", str(out)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    # the settings train side by side: one BLAS/OpenMP thread each, or they fight for the cores
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **os.environ}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - started
    rows = read_metrics(out)
    config = json.loads((out / "config.json").read_text())
    shown = ["lenet5", *command[3:]]
    shown[shown.index("--out") + 1] = "DIR"
    return {"augment": augment, "rows": rows, "wall": wall, "command": " ".join(shown),
            "train_images": config.get("train_images")}


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    counts = LENET5_1998.layer_counts()
    params = sum(r["params"] for r in counts)
    connections = sum(r["connections"] for r in counts)
    short = args.epochs < PAPER_PASSES or args.limit
    lines = ["# LeNet-5 (1998): ours vs the paper", ""]
    if short:
        lines += [f"**Short run** ({args.epochs} epochs"
                  + (f", {args.limit:,} training images" if args.limit else "")
                  + "): it shows the pipeline works; it is not the 20-pass reproduction.", ""]
    lines += ["| setting | paper test error | ours test error | passes | training images | "
              "epoch time (median) | wall time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        last = res["rows"][-1]
        paper = PAPER_TEST_ERROR.get(res["augment"])
        lines.append(
            f"| {SETTING_NAMES[res['augment']]} | "
            + (f"{paper:.2f}%" if paper is not None else "—")
            + f" | {100 * (1 - last['test_acc']):.2f}% | {last['epoch']} | "
            f"{res['train_images']:,} | "
            f"{statistics.median(r['seconds'] for r in res['rows']):.0f} s | "
            f"{res['wall']:.0f} s |")
    lines += ["", "| | ours | paper |", "|---|---:|---:|",
              f"| trainable parameters | {params:,} | {PAPER_PARAMS:,} |",
              f"| connections | {connections:,} | {PAPER_CONNECTIONS:,} |",
              f"| passes | {args.epochs} | {PAPER_PASSES} |", "",
              f"Machine: {machine()}; engine {args.engine}. Times are wall-clock on that "
              "machine (upper bounds where it was shared).", "", "Commands:", ""]
    lines += [f"    {res['command']}" for res in results]
    for res in results:
        lines += ["", f"### {SETTING_NAMES[res['augment']]}", "",
                  "| epoch | lr (eps) | train loss | train error | test error | seconds |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['epoch']} | {r['lr']:.2g} | {r['train_loss']:.4f} | "
                  f"{100 * (1 - r['train_acc']):.2f}% | {100 * (1 - r['test_acc']):.2f}% | "
                  f"{r['seconds']:.0f} |" for r in res["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=PAPER_PASSES, help="passes (default 20)")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N images only (default: all 60,000)")
    parser.add_argument("--engine", default="numpy", help="numpy or torch (default numpy)")
    parser.add_argument("--settings", default="none,affine",
                        help="comma-separated --augment values (default: none,affine)")
    parser.add_argument("--out", default=None, help="folder for the run directories "
                        "(default: a temporary one)")
    args = parser.parse_args()
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTING_NAMES]
    if unknown:
        parser.error(f"unknown --settings {unknown}; choose from {', '.join(SETTING_NAMES)}")
    root = Path(args.out or tempfile.mkdtemp(prefix="lenet5-1998-"))
    with ThreadPoolExecutor(len(settings)) as pool:  # threads only wait on the children
        results = list(pool.map(lambda augment: run_setting(augment, args, root), settings))
    text = markdown(results, args)
    write_results(RESULTS, text)


if __name__ == "__main__":
    main()
