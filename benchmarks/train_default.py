"""Measure what `lenet5 train` with its defaults delivers: accuracy, epochs to 99%, epoch time,
peak memory. Runs the real command in a child process and reads its run directory.

    python benchmarks/train_default.py [--epochs N] [extra `lenet5 train` flags...]

Writes benchmarks/results/train_default.md.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_results

from lenet5.files import read_metrics

RESULTS = Path(__file__).parent / "results" / "train_default.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args, extra = parser.parse_known_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="lenet5-bench-")) / "run"
    command = [sys.executable, "-m", "lenet5", "train", "--out", str(out), *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    rows = read_metrics(out)
    first_99 = next((r["epoch"] for r in rows if r["test_acc"] >= 0.99), None)
    table = [
        ("command", "`lenet5 train " + " ".join(["--out DIR", *extra]) + "`"),
        ("final test accuracy", f"{100 * rows[-1]['test_acc']:.2f}% after {len(rows)} epochs"),
        ("best test accuracy", f"{100 * max(r['test_acc'] for r in rows):.2f}%"),
        ("first epoch with >= 99.0%", str(first_99)),
        ("epoch time (median, training only)",
         f"{statistics.median(r['seconds'] for r in rows):.2f} s"),
        ("wall time (incl. data, evaluation, files)", f"{wall:.0f} s"),
        ("peak memory (max RSS)", f"{peak_mib:.0f} MiB"),
        ("machine", machine()),
    ]
    lines = ["| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in table]]
    per_epoch = ["", "| epoch | train loss | test acc | seconds |", "|---:|---:|---:|---:|",
                 *[f"| {r['epoch']} | {r['train_loss']:.4f} | {100 * r['test_acc']:.2f}% | "
                   f"{r['seconds']:.2f} |" for r in rows]]
    text = "\n".join(lines + per_epoch) + "\n"
    write_results(RESULTS, text)


if __name__ == "__main__":
    main()
