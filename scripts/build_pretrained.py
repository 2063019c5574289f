"""Rebuild the model shipped as `pretrained` (src/lenet5/pretrained/model.safetensors).

Trains the default recipe with five seeds (`lenet5 sweep --recipe default --seeds 5`, resumed
if DIR already holds it), takes the seed whose test accuracy is nearest the five seeds' mean
(not the luckiest), and ships its model file with the recipe, the seed and the five seeds'
statistics added to its metadata.

    python scripts/build_pretrained.py --out runs/pretrained-sweep
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet5 import checkpoint, pretrained
from lenet5.files import read_metrics
from lenet5.recipes import load_recipe
from lenet5.sweep import run_sweep

RECIPE, SEEDS = "default", 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pretrained-sweep"),
                        help="the sweep's folder (default runs/pretrained-sweep)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    args = parser.parse_args()
    summary = run_sweep(load_recipe(RECIPE).config({}), {}, SEEDS, args.out,
                        workers=args.workers)
    [setting] = summary["settings"]
    if setting["n"] != SEEDS:
        raise SystemExit(f"only {setting['n']} of {SEEDS} runs finished; run again")
    mean = setting["test_acc"]["mean"]
    accuracy = {run: read_metrics(args.out / run)[-1]["test_acc"] for run in setting["runs"]}
    chosen = min(accuracy, key=lambda run: (abs(accuracy[run] - mean), run))
    params, metadata = checkpoint.load_model(args.out / chosen)
    seed = setting["seeds"][setting["runs"].index(chosen)]
    metadata["pretrained"] = {
        "recipe": RECIPE, "seed": seed, "test_accuracy": accuracy[chosen],
        "seeds": {"n": SEEDS, "mean": mean, "std": setting["test_acc"]["std"],
                  "min": setting["test_acc"]["min"], "max": setting["test_acc"]["max"]},
        "chosen": "the seed whose test accuracy is nearest the mean of the five",
        "rebuild": "python scripts/build_pretrained.py"}
    checkpoint.save_model(pretrained.path(), params, metadata)
    print(f"pretrained: seed {seed}, test accuracy {100 * accuracy[chosen]:.2f}% (seeds' mean "
          f"{100 * mean:.2f}% +- {100 * setting['test_acc']['std']:.2f}) -> {pretrained.path()}")


if __name__ == "__main__":
    main()
