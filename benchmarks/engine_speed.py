"""Where the NumPy engine's time goes, next to PyTorch on the same CPU, in one process.

For both architectures and batch sizes 64/128/256: forward and backward milliseconds of every
NumPy layer on one core (each worker thread of the engine runs BLAS on one thread), with the
GFLOP/s each convolution and dense layer achieves, both the layer's own arithmetic and what
its GEMMs execute (a banded convolution multiplies zeros too), against the machine's GEMM
peak (a 2048^3 float32 matmul on one and on all BLAS threads); the whole training step
(forward, backward, optimizer, on every core), images/s and the epoch time that implies; the
torch engine's step on the same batches; one epoch of the common PyTorch tutorial loop
(benchmarks/tutorial_loop.py) as the reference; and inference: one image end to end, and
batches of 1000 in both engines. Medians of interleaved repeats, since timings on a shared
machine are noisy; `--clock cpu` times the one-core figures by the thread's CPU time, which
other processes on a busy machine inflate far less than wall time.

    python benchmarks/engine_speed.py [--repeats 15] [--batches 64 128 256] [--clock cpu]

Writes benchmarks/results/engine_speed.md, or the file ``--out`` names.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import machine, write_results

from lenet5.arch import ARCHITECTURES, init_params
from lenet5.engine import make_engine
from lenet5.hparams import OptimizerSpec, Schedule, defaults_for
from lenet5.numpy_engine import layers as L
from lenet5.numpy_engine.model import NumpyNet
from lenet5.threads import one_blas_thread

RESULTS = Path(__file__).parent / "results" / "engine_speed.md"
TRAIN_IMAGES = 60_000


CLOCK = time.perf_counter  # the one-core figures' clock (--clock)


def median_ms(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()  # warm-up: caches, allocator, BLAS threads
    times = []
    for _ in range(repeats):
        started = clock()
        fn()
        times.append(clock() - started)
    return 1e3 * statistics.median(times)


def gemm_peak(threads: int | None, repeats: int = 5) -> float:
    """GFLOP/s of a 2048^3 float32 matmul, best of ``repeats``, on one BLAS thread (None: all
    of them, BLAS's default)."""
    from threadpoolctl import threadpool_limits

    n = 2048
    a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ b
        best = min(_timed(lambda: a @ b, CLOCK if threads == 1 else time.perf_counter)
                   for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn, clock) -> float:
    started = clock()
    fn()
    return clock() - started


def layer_flops(layer, x_shape: tuple, y_shape: tuple) -> tuple[float, float, float, float]:
    """(forward, backward) floating-point operations of a Conv or Dense layer for one batch:
    the layer's own arithmetic, then what its GEMMs execute; zeros for the other layers."""
    if isinstance(layer, L.Dense):
        n, i = x_shape
        fwd = 2 * n * i * y_shape[1]
        bwd = fwd * (2 if layer.needs_input_grad else 1)
        return fwd, bwd, fwd, bwd
    if not isinstance(layer, L.Conv):
        return 0, 0, 0, 0
    out_ch, in_ch, k, _ = layer.params["weight"].shape
    n, h, w, _ = x_shape
    ho, wo = h - k + 1, w - k + 1
    connected = in_ch if layer.mask is None else float(layer.mask.sum()) / out_ch
    fwd = 2 * n * ho * wo * out_ch * connected * k * k
    block = layer.block or wo
    rows = layer.rows_per_gemm_row
    gemm = (2 * (n * ho * wo // (rows * block)) * ((rows + k - 1) * (block + k - 1) * in_ch)
            * (rows * block * out_ch))
    b = L.input_grad_block(wo, k)  # its band's columns
    input_grad = 2 * n * ho * (wo // b) * (b * out_ch) * (k * (b + k - 1) * in_ch)
    if layer.needs_input_grad:
        return fwd, 2 * fwd, gemm, gemm + input_grad
    return fwd, fwd, gemm, gemm


def layer_times(arch, batch: int, repeats: int) -> list[tuple]:
    """(arch layer, NumPy layer class, forward ms, backward ms, forward and backward FLOPs,
    own then executed) for each NumPy layer, on one BLAS thread."""
    rng = np.random.default_rng(0)
    net = NumpyNet(arch, init_params(arch, 0))
    x = rng.normal(size=(batch, 1, 32, 32)).astype(np.float32).transpose(0, 2, 3, 1)
    labels = rng.integers(0, 10, batch)
    forward = {i: [] for i in range(len(net.layers))}
    backward = {i: [] for i in range(len(net.layers))}
    shapes = {}
    with one_blas_thread():
        for _ in range(repeats + 1):
            h = x
            for i, (_, layer) in enumerate(net.layers):
                started = CLOCK()
                out = layer.forward(h, True)
                forward[i].append(CLOCK() - started)
                shapes[i], h = (h.shape, out.shape), out
            _, grad = net.loss_fn(h, labels)
            for i, (_, layer) in reversed(list(enumerate(net.layers))):
                started = CLOCK()
                grad = layer.backward(grad)
                backward[i].append(CLOCK() - started)
    return [(name, type(layer).__name__, 1e3 * statistics.median(forward[i][1:]),
             1e3 * statistics.median(backward[i][1:]), *layer_flops(layer, *shapes[i]))
            for i, (name, layer) in enumerate(net.layers)]


def gflops(flops: float, ms: float) -> str:
    return f"{flops / ms / 1e6:.0f}" if flops else ""


def step_ms(engine_name: str, arch, batch: int, repeats: int) -> float:
    """Median milliseconds of one optimizer step on random rows of a bound dataset."""
    defaults = defaults_for(arch.name)
    engine = make_engine(engine_name, arch, init_params(arch, 0),
                         OptimizerSpec(defaults["optimizer"]), "cpu")
    # the rate of the first step of a default run: one large enough to blow the weights up
    # on random data would time overflowing arithmetic
    steps = math.ceil(TRAIN_IMAGES / batch)
    lr = Schedule(defaults["schedule"], defaults["lr"]).at(0, steps, steps * defaults["epochs"])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4096, 1, 32, 32)).astype(np.float32)
    engine.bind_training_data(x, rng.integers(0, 10, 4096))
    if defaults["optimizer"] == "sdlm":
        engine.estimate_curvature(np.arange(4096))
    batches = [rng.integers(0, 4096, batch) for _ in range(8)]
    counter = iter(range(10**9))

    def one_step() -> None:
        engine.train_step(batches[next(counter) % 8], lr)

    ms = median_ms(one_step, repeats)
    engine.take_train_metrics()  # the torch engine syncs here; its steps are queued until then
    return ms


def inference(repeats: int) -> list[tuple[str, str]]:
    from lenet5.arch import LENET5
    from lenet5.data.transforms import input_normalization
    from lenet5.model import Model

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8)
    meta = {"classes": list("0123456789"),
            "input_normalization": input_normalization(LENET5, images)}
    rows = []
    numpy_model = Model(make_engine("numpy", LENET5, init_params(LENET5, 0)), meta)
    single = median_ms(lambda: numpy_model.predict_proba(images[:1]), repeats * 4)
    rows.append(("numpy: one image, predict_proba end to end", f"{single:.2f} ms"))
    rates = {}
    for name in ("numpy", "torch"):
        try:
            model = Model(make_engine(name, LENET5, init_params(LENET5, 0), device="cpu"), meta)
        except Exception as exc:  # torch missing: report, keep the NumPy figures
            rows.append((f"{name}: batch 1000", f"not measured ({exc})"))
            continue
        ms = median_ms(lambda m=model: m.predict_proba(images), repeats)
        rates[name] = 1000 / (ms / 1e3)
        rows.append((f"{name}: batch 1000", f"{rates[name]:,.0f} images/s"))
    if len(rates) == 2:
        ratio = rates["numpy"] / rates["torch"]
        rows.append(("numpy / torch throughput at batch 1000", f"{ratio:.2f}x"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per figure")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch figures")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what times the one-core figures: wall time, or the thread's CPU "
                        "time (for a busy shared machine)")
    parser.add_argument("--out", default=str(RESULTS),
                        help="results file (default benchmarks/results/engine_speed.md)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    load_before = os.getloadavg()[0]
    peak_one, peak_all = gemm_peak(1), gemm_peak(None)
    lines = [f"Machine: {machine()}; OPENBLAS_NUM_THREADS="
             f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; load average "
             f"{load_before:.1f} at the start.",
             "Command: `" + " ".join(["python benchmarks/engine_speed.py", *sys.argv[1:]]) + "`",
             "",
             f"GEMM peak (2048^3 float32 matmul, best of 5): **{peak_one:.0f} GFLOP/s on one "
             f"BLAS thread** ({args.clock} clock), {peak_all:.0f} GFLOP/s on all "
             f"({os.cpu_count()}, wall clock). Layer figures below: one BLAS thread, "
             f"{args.clock} clock; GFLOP/s = the layer's own arithmetic / its GEMMs' (a "
             "banded convolution's GEMMs multiply zeros too); % = GEMMs' share of the one-"
             "thread peak.",
             ""]
    cases = [(arch, batch) for arch in ARCHITECTURES.values() for batch in args.batches]
    # NumPy first: torch's OpenMP threads keep spinning for a while after torch work, and a
    # NumPy step timed right after it loses a core to them
    numpy_steps = [step_ms("numpy", arch, batch, args.repeats) for arch, batch in cases]
    detail = []
    for arch, batch in cases:
        detail += [f"\n{arch.name}, batch {batch}: NumPy layers on one core (ms)\n",
                   "| layer | op | forward | backward | forward GFLOP/s | backward GFLOP/s | "
                   "% of peak (fwd, bwd) |", "|---|---|---:|---:|---:|---:|---:|"]
        for name, op, fw, bw, f_own, b_own, f_gemm, b_gemm in layer_times(arch, batch,
                                                                           args.repeats):
            rates = (f"{gflops(f_own, fw)} / {gflops(f_gemm, fw)} | "
                     f"{gflops(b_own, bw)} / {gflops(b_gemm, bw)} | "
                     f"{100 * f_gemm / fw / 1e6 / peak_one:.0f}%, "
                     f"{100 * b_gemm / bw / 1e6 / peak_one:.0f}%") if f_gemm else " | |"
            detail.append(f"| {name} | {op} | {fw:.2f} | {bw:.2f} | {rates} |")
    tutorial_epoch, torch_steps = None, [None] * len(cases)
    if not args.no_torch:
        sys.path.insert(0, str(Path(__file__).parent))
        import tutorial_loop

        tutorial_epoch = tutorial_loop.train(1)["epoch_seconds"][0]
        lines.append(f"PyTorch tutorial loop (DataLoader, batch 128, Adam, `.item()` per step): "
                     f"**{tutorial_epoch:.2f} s per epoch**.")
        lines.append("")
        torch_steps = [step_ms("torch", arch, batch, args.repeats) for arch, batch in cases]
    summary = ["| arch | batch | numpy step | numpy images/s | numpy epoch | torch-engine epoch |"
               " numpy / tutorial |", "|---|---:|---:|---:|---:|---:|---:|"]
    for (arch, batch), numpy_ms, torch_ms in zip(cases, numpy_steps, torch_steps, strict=True):
        epoch = numpy_ms / 1e3 * TRAIN_IMAGES / batch
        torch_epoch = "" if torch_ms is None else f"{torch_ms / 1e3 * TRAIN_IMAGES / batch:.2f} s"
        ratio = "" if tutorial_epoch is None else f"{epoch / tutorial_epoch:.2f}x"
        summary.append(f"| {arch.name} | {batch} | {numpy_ms:.2f} ms | "
                       f"{batch / numpy_ms * 1e3:,.0f} | {epoch:.2f} s | {torch_epoch} | "
                       f"{ratio} |")
        print(summary[-1], flush=True)
    infer = ["", "| inference (modern LeNet-5) | figure |", "|---|---:|",
             *[f"| {k} | {v} |" for k, v in inference(args.repeats)]]
    text = "\n".join(lines + summary + infer + detail) + "\n"
    write_results(Path(args.out), text)


if __name__ == "__main__":
    main()
