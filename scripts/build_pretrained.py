"""Rebuild the model shipped as `pretrained` (src/lenet5/pretrained/model.safetensors).

Trains the default recipe with five seeds (`lenet5 sweep --recipe default --seeds 5`, resumed
if DIR already holds it), takes the seed whose test accuracy is nearest the five seeds' mean
(not the luckiest), and ships its model file with the recipe, the seed and the five seeds'
statistics added to its metadata.

    python scripts/build_pretrained.py --out runs/pretrained-sweep

With --recalibrate it trains nothing: the shipped model's "not a digit" threshold is
calibrated again as its training run calibrated it (the same digits and seed, one BLAS thread
as in the sweep), for when the way a digit's confidence is measured (`lenet5.refusal`) changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lenet5
from lenet5 import checkpoint, pretrained
from lenet5.files import read_metrics
from lenet5.recipes import load_recipe
from lenet5.refusal import METADATA_KEY
from lenet5.sweep import run_sweep
from lenet5.threads import one_blas_thread
from lenet5.training import calibration_again

RECIPE, SEEDS = "default", 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pretrained-sweep"),
                        help="the sweep's folder (default runs/pretrained-sweep)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="only calibrate the shipped model's refusal threshold again")
    args = parser.parse_args()
    if args.recalibrate:
        recalibrate()
        return
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


def recalibrate() -> None:
    """The shipped model's refusal metadata calibrated again (weights and all else kept)."""
    params, metadata = checkpoint.load_model(pretrained.path())
    config = load_recipe(RECIPE).config({"seed": metadata["pretrained"]["seed"]})
    with one_blas_thread():  # as each run of the sweep computed
        refusal = calibration_again(lenet5.load(pretrained.NAME), config)
    print(f"refusal threshold {metadata[METADATA_KEY]['threshold']:.4f} -> "
          f"{refusal['threshold']:.4f}")
    metadata[METADATA_KEY] = refusal
    checkpoint.save_model(pretrained.path(), params, metadata)


if __name__ == "__main__":
    main()
