"""Every recipe, trained with several seeds: ours (mean +- std) against its source's figure.

Runs `lenet5 sweep --recipe NAME --seeds N` for each recipe (one BLAS thread per run, --workers
runs at once), then writes benchmarks/results/recipes.md and the recipes' `measured` block
(src/lenet5/recipes/measured.json, which `lenet5 recipes` shows). A recipe already swept in
--out is not trained again (sweeps resume).

    python benchmarks/recipes.py                       # every recipe, 5 seeds
    python benchmarks/recipes.py --recipes default lenet5-1998 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from common import machine, write_results

from lenet5 import recipes
from lenet5.recipes import MEASURED_FILE, load_recipe
from lenet5.sweep import run_sweep

RESULTS = Path(__file__).parent / "results" / "recipes.md"
MEASURED = Path(recipes.__file__).parent / MEASURED_FILE


def measure(name: str, seeds: int, out: Path, workers: int) -> dict:
    started = time.perf_counter()
    summary = run_sweep(load_recipe(name).config({}), {}, seeds, out / name, workers=workers,
                        log=lambda message: print(f"  {message}", flush=True))
    [setting] = summary["settings"]
    acc = setting["test_acc"]
    measured = {"n": setting["n"], "failed": len(setting["failed"]),
                "command": f"lenet5 sweep --recipe {name} --seeds {seeds} --out DIR",
                "machine": machine(), "commit": commit(),
                "sweep_wall_seconds": round(time.perf_counter() - started)}
    if setting["failed"]:  # a recipe that does not train here is a result too
        measured["failure"] = setting["failed"][0]["error"]
    if setting["n"]:
        measured.update(
            mean=100 * acc["mean"], std=100 * (acc["std"] or 0.0), min=100 * acc["min"],
            max=100 * acc["max"], ci95=[100 * v for v in acc["ci95"]] if acc["ci95"] else None,
            seconds_per_run=setting["train_seconds"]["mean"])
    return measured


def commit() -> str:
    """The code a recipe was measured with: a seed's result depends on it."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=Path(recipes.__file__).parent).stdout.strip() or "?"


def table(measured: dict) -> str:
    lines = ["| recipe | source's published test accuracy | ours, mean +- std (n) | "
             "ours min - max | source inside our range? | training time per run |",
             "|---|---:|---:|---:|---|---:|"]
    for name, m in measured.items():
        figure = load_recipe(name).reference["figure"]
        if not m["n"]:
            lines.append(f"| `{name}` | {'-' if figure is None else f'{figure:.2f}%'} | "
                         f"not reproduced: all {m['failed']} runs failed | | no: "
                         f"{m['failure'].split(':')[0]} at chance accuracy | |")
            continue
        gap = (m["mean"] - figure) if figure is not None else 0.0
        inside = "-" if figure is None else (
            "yes" if m["min"] <= figure <= m["max"] else
            f"no: our mean is {abs(gap):.2f} pt {'higher' if gap > 0 else 'lower'}")
        lines.append(f"| `{name}` | {'-' if figure is None else f'{figure:.2f}%'} | "
                     f"{m['mean']:.2f}% +- {m['std']:.2f} ({m['n']}) | "
                     f"{m['min']:.2f}% - {m['max']:.2f}% | {inside} | "
                     f"{m['seconds_per_run']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=recipes.names(),
                        help="recipes to measure (default: all)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per recipe (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"),
                        help="where the sweeps' runs go (default runs/recipes)")
    args = parser.parse_args()
    measured = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
    for name in args.recipes:
        print(f"{name}:", flush=True)
        measured[name] = measure(name, args.seeds, args.out, args.workers)
        MEASURED.write_text(json.dumps(dict(sorted(measured.items())), indent=2) + "\n")
    write_table(dict(sorted(measured.items())))


def write_table(measured: dict) -> None:
    text = ("# Recipes: ours over seeds against their sources\n\n" + table(measured) + "\n\n"
            "Each row: `lenet5 sweep --recipe NAME --seeds N --out DIR` (seeds 0..N-1, one BLAS "
            "thread per run, two runs at once); std is the sample standard deviation; training "
            "time per run is the sum of its epochs' training seconds (evaluation and data "
            "loading excluded) with two runs sharing the two cores, and other work on the "
            "machine at times (the 1998 and pytorch-tutorial sweeps ran beside other jobs): "
            "read the times as upper bounds.\n\n"
            "Machines: " + "; ".join(sorted({m["machine"] for m in measured.values()})) + ".\n\n"
            "Code: " + ", ".join(f"`{name}` at {m.get('commit', '?')}"
                                 for name, m in measured.items()) + ".\n")
    write_results(RESULTS, text)


if __name__ == "__main__":
    main()
