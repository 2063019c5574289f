"""The torch engine against the common tutorial loop, back to back on this machine.

Each repeat runs, one after the other and each in a fresh process:
  1. ``lenet5 train --engine torch --device DEVICE --epochs 2 --out TMP`` (the seconds of each
     epoch are read from the run's metrics.jsonl);
  2. ``benchmarks/tutorial_loop.py --epochs 2`` (DataLoader, batch 128, Adam 1e-3, .item()).
Then inference: the last run's model through ``lenet5.load(run, engine="torch")``, the 10,000
MNIST test images at batch 1000. The table gives medians over every epoch of every repeat,
the ratio of the two loops (target <= 0.7 on CPU; NumPy <= 0.8) and images/s (target >= 20,000
on CPU).
``--with-numpy`` adds ``lenet5 train --engine numpy`` to each repeat. ``--equal-work`` adds each
engine's run with ``--nondigits 0``: an epoch of the default recipe holds the 60,000 training
digits and 12,000 made-up non-digits (for "not a digit"), the tutorial's only the digits, so
these runs compare the engines with the tutorial on the same pictures.

On a shared machine, whole runs minutes apart see different loads. The last line is steadier:
blocks of 10 training steps of each loop (same data, batch 128, Adam), alternated in this one
process, the median milliseconds per step of each and their ratio.

    python benchmarks/torch_speed.py [--repeats 3] [--device cpu] [--threads N] [--with-numpy]
                                     [--out benchmarks/results/torch_speed.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import child_env, machine, time_tutorial, write_results

RESULTS = Path(__file__).parent / "results" / "torch_speed.md"
EQUAL_WORK = ("--nondigits", "0")

THREADS: int | None = None  # --threads


def time_lenet5_train(engine: str, device: str, epochs: int, out: Path,
                      options: tuple[str, ...] = ()) -> dict:
    """Seconds per epoch and final test accuracy of ``lenet5 train``, from metrics.jsonl."""
    subprocess.run([sys.executable, "-m", "lenet5", "train", "--engine", engine, "--device",
                    device, "--epochs", str(epochs), "--batch-size", "128", "--no-report",
                    *options, "--out", str(out)],
                   check=True, env=child_env(THREADS), stdout=subprocess.DEVNULL)
    from lenet5.files import read_metrics

    rows = read_metrics(out)
    return {"epoch_seconds": [r["seconds"] for r in rows], "test_acc": rows[-1]["test_acc"]}


def inference_rate(run: Path, device: str, repeats: int = 5) -> float:
    """Images/s of ``batched_logits`` on the MNIST test set at batch 1000 (median)."""
    import lenet5
    from lenet5.data import load
    from lenet5.engine import batched_logits

    model = lenet5.load(run, engine="torch", device=device)
    x = model.inputs(load("mnist", log=lambda _: None).test_images)  # (10000, 1, 32, 32)
    batched_logits(model.engine, x[:1000], batch_size=1000)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        batched_logits(model.engine, x, batch_size=1000)
        rates.append(len(x) / (time.perf_counter() - started))
    return statistics.median(rates)


def interleaved_steps(device: str, engine_name: str = "torch", blocks: int = 20,
                      steps: int = 10) -> tuple[float, float]:
    """Median ms per training step of (lenet5 engine, tutorial loop), alternating blocks."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from tutorial_loop import LeNet5, mnist_tensors
    from tutorial_loop import step as tutorial_step

    from lenet5.arch import LENET5, init_params
    from lenet5.engine import make_engine
    from lenet5.hparams import OptimizerSpec

    x, y, _, _ = mnist_tensors()
    engine = make_engine(engine_name, LENET5, init_params(LENET5, 0), OptimizerSpec("adam"),
                         device if engine_name == "torch" else "cpu")
    engine.bind_training_data(x.numpy(), y.numpy())
    order = np.random.default_rng(0).permutation(len(x))
    model = LeNet5().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)
    batches = iter(loader)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    step = 0

    def engine_steps() -> None:
        nonlocal step
        for _ in range(steps):
            b = step % (len(x) // 128)
            engine.train_step(order[b * 128:(b + 1) * 128], 1e-3)
            step += 1

    def tutorial_steps() -> None:
        nonlocal batches
        for _ in range(steps):
            images, labels = next(batches, (None, None))
            if images is None:
                batches = iter(loader)
                images, labels = next(batches)
            tutorial_step(model, optimizer, images, labels, device)

    times: dict = {engine_steps: [], tutorial_steps: []}
    for block in range(blocks + 1):  # the first block of each warms up and is not counted
        for run in times:
            started = time.perf_counter()
            run()
            sync()
            if block:
                times[run].append((time.perf_counter() - started) * 1000 / steps)
    return statistics.median(times[engine_steps]), statistics.median(times[tutorial_steps])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="back-to-back pairs (default 3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every loop (OMP_NUM_THREADS; default: torch's "
                             "own choice, one per core); a thread count set this way also "
                             "turns off lenet5 train's split of each batch over threads, as "
                             "any user's does, while the in-process step timings keep it")
    parser.add_argument("--out", default=str(RESULTS),
                        help="results file (default benchmarks/results/torch_speed.md)")
    parser.add_argument("--with-numpy", action="store_true",
                        help="also time `lenet5 train --engine numpy` (default: off)")
    parser.add_argument("--equal-work", action="store_true",
                        help="also time each engine with --nondigits 0, on the tutorial's "
                             "60,000 digits per epoch (default: off)")
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads

    import torch

    if args.threads:  # for what is measured in this process: torch's threads, and BLAS's,
        from threadpoolctl import threadpool_limits  # which the NumPy engine's workers follow

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads, user_api="blas")

    # what each loop runs: (engine, lenet5 train's extra options), None for the tutorial loop
    runs: dict[str, tuple[str, tuple[str, ...]] | None] = {
        "lenet5 train --engine torch": ("torch", ()), "tutorial loop": None}
    if args.with_numpy:
        runs["lenet5 train --engine numpy"] = ("numpy", ())
    if args.equal_work:
        runs.update({f"{name} {' '.join(EQUAL_WORK)}": (spec[0], EQUAL_WORK)
                     for name, spec in list(runs.items()) if spec})
    loops: dict[str, list[float]] = {name: [] for name in runs}
    accuracy: dict[str, list[float]] = {name: [] for name in runs}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, (name, spec) in enumerate(runs.items()):
                if spec is None:
                    result = time_tutorial(args.device, args.epochs, THREADS)
                else:
                    engine, options = spec
                    device = args.device if engine == "torch" else "cpu"
                    out = Path(tmp) / f"{r}-{i}"
                    result = time_lenet5_train(engine, device, args.epochs, out, options)
                    if spec == ("torch", ()):
                        torch_run = out  # the last repeat's: inference is timed on it
                loops[name] += result["epoch_seconds"]
                accuracy[name].append(result["test_acc"])
                print(f"repeat {r + 1}/{args.repeats}  {name}: epochs "
                      + ", ".join(f"{s:.2f}" for s in result["epoch_seconds"]) + " s",
                      file=sys.stderr)
        images_per_s = inference_rate(torch_run, args.device)
    engine_ms, tutorial_ms = interleaved_steps(args.device)
    numpy_ms, numpy_tutorial_ms = interleaved_steps("cpu", "numpy") if args.with_numpy else (0, 0)

    device = (f"{torch.cuda.get_device_name()}, {time.strftime('%Y-%m-%d')}"
              if args.device == "cuda" else machine())
    lines = [f"command: python benchmarks/torch_speed.py {' '.join(sys.argv[1:])}",
             f"device: {args.device} ({device}); torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; {args.repeats} repeats x {args.epochs} epochs; "
             f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
             f"{'':42}{'s/epoch (median)':>18}{'min':>8}{'test acc':>10}"]
    for name, seconds in loops.items():
        lines.append(f"{name:42}{statistics.median(seconds):>18.2f}{min(seconds):>8.2f}"
                     f"{100 * statistics.median(accuracy[name]):>9.2f}%")
    tutorial = statistics.median(loops["tutorial loop"])
    for name, spec in runs.items():
        if spec:
            engine, options = spec
            what = f"ratio {engine}{' (60,000)' if options else ''} / tutorial"
            lines.append(f"{what:42}{statistics.median(loops[name]) / tutorial:>18.2f}   "
                         f"(target <= {0.7 if engine == 'torch' else 0.8})")
    lines.append(f"{'inference, batch 1000':42}{images_per_s:>18,.0f}   images/s "
                 "(target >= 20,000)")
    lines.append(f"{'interleaved steps, ms/step':42}{'engine':>10} {engine_ms:.2f}, tutorial "
                 f"{tutorial_ms:.2f}, ratio {engine_ms / tutorial_ms:.2f}")
    if args.with_numpy:
        lines.append(f"{'interleaved steps, ms/step':42}{'numpy':>10} {numpy_ms:.2f}, tutorial "
                     f"{numpy_tutorial_ms:.2f}, ratio {numpy_ms / numpy_tutorial_ms:.2f}")
    write_results(Path(args.out), "# The engines against the tutorials' PyTorch loop\n\n```\n"
                  + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
