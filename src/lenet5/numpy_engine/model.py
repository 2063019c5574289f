"""The NumPy engine: a network built from an ``Architecture`` and the training interface.

``NumpyNet`` only computes (forward, backward); ``NumpyEngine`` adds the optimizer and the
small interface ``lenet5.training`` drives (see ``lenet5.engine.Engine``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import arch as A
from ..hparams import OptimizerSpec
from ..threads import (
    blas_threads_for,
    compute_workers,
    hold_one_blas_thread,
    is_shared,
    one_blas_thread,
    part_slices,
    run_parts,
    shared_copy,
    shared_empty,
)
from ..workers import ForkedParts, can_fork
from . import layers as L
from .losses import LOSSES, map_curvature, softmax_curvature
from .optim import Optimizer

ACTIVATIONS = {A.RELU: L.ReLU, A.TANH: L.Tanh, A.SIGMOID: L.Sigmoid,  # keys: arch.ACTIVATIONS
               A.SCALED_TANH: L.ScaledTanh}
POOLS = (L.MaxPool, L.AvgPool, L.Subsample)


def _conv(spec: A.Conv, p: dict, dtype: type) -> L.Layer:
    mask = None if spec.table is None else np.array(spec.table, dtype=bool)  # (O, C)
    return L.Conv(p["weight"], p["bias"], mask)


# arch layer kind -> its NumPy layer, from the spec, its parameters (``weight``, ``bias``) and dtype
BUILDERS = {
    A.Conv: _conv,
    A.MaxPool: lambda spec, p, dtype: L.MaxPool(spec.size),
    A.AvgPool: lambda spec, p, dtype: L.AvgPool(spec.size),
    A.Subsample: lambda spec, p, dtype: L.Subsample(p["weight"], p["bias"], spec.size),
    A.Dense: lambda spec, p, dtype: L.Dense(p["weight"], p["bias"]),
    A.RBF: lambda spec, p, dtype: L.RBF(A.rbf_centres_of(spec).astype(dtype)),  # (10, 84) fixed
}


class NumpyNet:
    """Forward and backward through the whole network. Inputs (N, 1, H, W), outputs (N, K)
    whose argmax is the prediction (for lenet5-1998, the negated RBF penalties -y_i, whose
    softmax is the posterior exp(-y_i) / sum_k exp(-y_k)). Parameters live in ``self.params``
    under the names of ``lenet5.arch``; layers hold references to them, so in-place updates
    reach every layer."""

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 dtype: type = np.float32, share: bool = False):
        """``share``: compute on the arrays of ``params`` themselves (another network's, for
        a replica that works on another part of each batch), not on copies."""
        self.arch = arch
        self.params = {k: (np.asarray if share else np.array)(v, dtype=dtype)
                       for k, v in params.items()}
        self.layers: list[tuple[str, L.Layer]] = []  # (arch layer name, layer)
        self.deferred_activations: dict[str, L.Layer] = {}  # arch layer -> its moved activation
        spatial, deferred = True, None
        for i, spec in enumerate(arch.layers):
            following = arch.layers[i + 1] if i + 1 < len(arch.layers) else None
            prefix = spec.name + "."
            p = {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}
            if spatial and isinstance(spec, A.VECTOR_LAYERS):  # the first vector layer
                self.layers.append((spec.name, L.Flatten()))
                spatial = False
            self.layers.append((spec.name, BUILDERS[type(spec)](spec, p, dtype)))
            if deferred is not None:  # the activation that was moved after this max-pool
                self.layers.append((spec.name, ACTIVATIONS[deferred]()))
                deferred = None
            activation = getattr(spec, "activation", None)
            if activation is not None and isinstance(following, A.MaxPool):
                # max-pool commutes with a non-decreasing activation, values and gradients
                # alike (ties included), and pooling first leaves it a quarter of the work
                deferred = activation
                self.deferred_activations[spec.name] = ACTIVATIONS[activation]()
            elif activation is not None:
                self.layers.append((spec.name, ACTIVATIONS[activation]()))
        self.layers[0][1].needs_input_grad = False  # nothing upstream of the first layer
        self._choose_layouts()
        self.loss_fn = LOSSES[arch.loss]

    def _choose_layouts(self) -> None:
        """Each convolution's GEMM rows are laid out by ``layers.gemm_layout``, and one that
        feeds a pooling layer through elementwise layers only writes its output in a layout
        that pooling reads fast (``layers.Conv.split``, ``layers.Conv.windowed``)."""
        widths = {spec.name: shape[-1] for spec, shape in
                  zip(self.arch.layers, self.arch.layer_shapes(), strict=True)}
        pooled = {}  # conv -> the pooling layer it feeds
        conv = None
        for _, layer in self.layers:
            if isinstance(layer, L.Conv):
                conv = layer
            elif isinstance(layer, POOLS) and conv is not None:
                pooled[conv] = layer
                conv = None
            elif not isinstance(layer, tuple(ACTIVATIONS.values())):
                conv = None
        for name, layer in self.layers:
            if isinstance(layer, L.Conv):
                pool = pooled.get(layer)
                out_ch, _, kernel, _ = layer.params["weight"].shape
                layer.split = pool.size if pool else 1
                layer.windowed, layer.block = L.gemm_layout(widths[name], out_ch, kernel,
                                                            layer.split)
                if pool:
                    pool.source = layer

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        h = x.transpose(0, 2, 3, 1)  # (N, 1, H, W) -> (N, H, W, 1)
        for _, layer in self.layers:
            h = layer.forward(h, train)
        return h

    def backward(self, grad: np.ndarray) -> dict[str, np.ndarray]:
        """Back-propagate d(loss)/d(outputs); returns every parameter's gradient."""
        for _, layer in reversed(self.layers):
            grad = layer.backward(grad)
        return {f"{name}.{k}": g for name, layer in self.layers for k, g in layer.grads.items()}

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray, batch_size: int | None = None
                       ) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
        """(mean loss, outputs, parameter gradients) for one batch. With ``batch_size``, the
        images are a part of a batch that size: the gradients are of their summed loss over
        ``batch_size``, so that the parts' gradients add up to the batch's."""
        out = self.forward(x, train=True)
        loss, grad = self.loss_fn(out, labels)
        if batch_size is not None:
            grad *= len(x) / batch_size
        return loss, out, self.backward(grad)

    def curvature(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """SDLM's diagonal Gauss-Newton curvature of the loss, averaged over the images of
        ``x``: per parameter, the mean over images of sum (d out/d p)^2 d2E/d out^2 as
        back-propagated by the layers' ``backward_curvature`` (appendix C). It needs no labels."""
        out = self.forward(x, train=True)
        layers = [layer for _, layer in self.layers]
        if isinstance(layers[-1], L.RBF):  # the fixed RBF is part of the loss here
            rbf = layers.pop()
            curv = map_curvature(rbf.x, rbf.centres)  # (N, 84)
            rbf.x = None
        else:
            curv = softmax_curvature(out)  # (N, K)
        curv /= len(x)  # mean over images, as the gradients are
        for layer in reversed(layers):
            curv = layer.backward_curvature(curv)
        return {f"{name}.{k}": h for name, layer in self.layers
                for k, h in layer.curvatures.items()}

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Each arch layer's output, (N, C, H, W) or (N, F), for pictures of what it sees."""
        maps: dict[str, np.ndarray] = {}
        h = x.transpose(0, 2, 3, 1)
        layout = None  # the Conv whose (split or windowed) layout h is stored in, if any
        for name, layer in self.layers:
            h = layer.forward(h, train=False)
            if isinstance(layer, L.Flatten):
                continue
            layout = layer if isinstance(layer, L.Conv) else (
                None if isinstance(layer, POOLS) else layout)
            shown = L.natural_order(h, layout)
            if name in self.deferred_activations:  # show the arch layer's own output
                shown = self.deferred_activations[name].forward(shown, train=False)
            maps[name] = shown.transpose(0, 3, 1, 2) if shown.ndim == 4 else shown
        return list(maps.items())


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB for reuse (True where it did), once per
    process, unless the user tuned it with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_.

    Every step allocates the same few-MB temporaries, and glibc's default thresholds still
    hand such blocks back to the kernel, so each step faults them in again page by page
    (what that costs: benchmarks/README.md). Fixed higher thresholds keep them in the heap;
    the process keeps up to 256 MiB of free heap instead of returning it.
    """
    tuned = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)
    if not sys.platform.startswith("linux") or tuned:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


def train_part(net: NumpyNet, x: np.ndarray, y: np.ndarray, rows: np.ndarray,
               batch_size: int) -> tuple[float, int, dict[str, np.ndarray]]:
    """(loss summed over the part's images, how many it got right, gradients) for the
    images ``rows`` of a batch of ``batch_size``: the parts' gradients add up to the batch's."""
    images, labels = x[rows], y[rows]  # (n, 1, H, W), (n,)
    loss, out, grads = net.loss_and_grads(images, labels, batch_size=batch_size)
    return loss * len(rows), int(np.count_nonzero(out.argmax(axis=1) == labels)), grads


# Images per forward pass at inference: the activations of larger batches outgrow the CPU's
# caches (37 vs 53 us per image at 128 vs 1000 on the machine of benchmarks/README.md).
FORWARD_CHUNK = 128


class NumpyEngine:
    """``NumpyNet`` plus its optimizer behind the ``lenet5.engine.Engine`` interface.

    Each batch is cut into up to ``threads.compute_workers()`` parts (``threads.part_slices``:
    one per core), computed at once, each with BLAS on one thread, and the parts' gradients
    are added in order. A training step's parts after the first go to worker processes
    forked from this one (``lenet5.workers``, where ``processes``: by default where the system can
    fork), each with its own GIL; elsewhere, and for inference, to replicas of the network
    on the same parameters in threads. NumPy and BLAS release the GIL for everything heavy,
    so the cores share every layer's work, elementwise ones included, with one wait per step
    instead of one per BLAS call (measurements: benchmarks/README.md). A run's numbers depend
    on the part sizes, so on the core count, as BLAS threading did; threads and processes
    give the same numbers to the last bit.
    """

    name = "numpy"
    device = "cpu"
    has_feature_maps = True

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 optimizer: OptimizerSpec | None = None, processes: bool | None = None):
        keep_freed_memory()
        self.arch = arch
        self.net = NumpyNet(arch, {k: shared_copy(v, np.float32) for k, v in params.items()},
                            share=True)  # in shared memory: workers see every update
        self.optimizer = Optimizer(optimizer or OptimizerSpec(), self.net.params)
        self.workers = compute_workers()
        self.nets = [self.net] + [NumpyNet(arch, self.net.params, share=True)
                                  for _ in range(self.workers - 1)]
        self._pool = ThreadPoolExecutor(self.workers - 1) if self.workers > 1 else None
        self.processes = (can_fork() if processes is None else processes) and self.workers > 1
        self._forked = ForkedParts(self, hold_one_blas_thread)
        self._worker_grads = [{name: shared_empty(p.shape, p.dtype)  # where worker i writes
                               for name, p in self.net.params.items()}
                              for _ in range(self.workers - 1 if self.processes else 0)]
        self.train_x: np.ndarray | None = None  # bound by bind_training_data
        self.train_y: np.ndarray | None = None
        self._metrics = np.zeros(3)  # loss sum, correct, seen

    def _in_parts(self, n: int, compute: Callable[[NumpyNet, slice], object]) -> list:
        """``compute(net, part)`` for each part of range(n), the parts at once on as many
        threads, each with its own replica of the network; the results in order."""
        slices = part_slices(n, self.workers)
        if len(slices) == 1:
            return [compute(self.net, slices[0])]
        with one_blas_thread():
            return run_parts(self._pool, slices, lambda i, part: compute(self.nets[i], part))

    def _worker_part(self, index: int, rows: np.ndarray, batch_size: int) -> tuple[float, int]:
        """In worker process ``index``: its part of a step, the gradients into shared memory."""
        loss, correct, grads = train_part(self.net, self.train_x, self.train_y, rows, batch_size)
        for name, g in grads.items():
            self._worker_grads[index][name][...] = g
        return loss, correct

    def forward(self, x: np.ndarray) -> np.ndarray:
        def outputs(net: NumpyNet, part: slice) -> np.ndarray:
            return np.concatenate([net.forward(x[i:min(i + FORWARD_CHUNK, part.stop)])
                                   for i in range(part.start, part.stop, FORWARD_CHUNK)])

        parts = self._in_parts(len(x), outputs)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def bind_training_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Workers read the arrays they were forked with: the same shared ones are read as
        they are now, any others as they were then, so new workers fork for them."""
        if not (x is self.train_x and y is self.train_y and is_shared(x) and is_shared(y)):
            self._forked.stop()
        self.train_x, self.train_y = x, y

    def estimate_curvature(self, rows: np.ndarray) -> None:
        """SDLM: the curvature for the pass about to start, from these bound rows."""
        with one_blas_thread():  # a few ms; the same curvature on any number of cores
            self.optimizer.set_curvature(self.net.curvature(self.train_x[rows]))

    def train_step(self, batch: np.ndarray, lr: float) -> None:
        n = len(batch)
        parts = part_slices(n, self.workers)

        def step_part(net: NumpyNet, part: slice) -> tuple[float, int, dict[str, np.ndarray]]:
            return train_part(net, self.train_x, self.train_y, batch[part], n)

        with blas_threads_for(n):  # no limit where there are parts: 64 images or more
            if self.processes and len(parts) > 1:  # on one BLAS thread while workers live
                first, rest = self._forked.run(batch, parts,
                                               lambda part: step_part(self.net, part),
                                               self._worker_part)
                results = [first, *[(loss, correct, self._worker_grads[i])
                                    for i, (loss, correct) in enumerate(rest)]]
            else:
                results = self._in_parts(n, step_part)
            grads = results[0][2]
            for _, _, more in results[1:]:
                for name, g in grads.items():
                    g += more[name]
            self.optimizer.step(grads, lr, batch_size=n)
        self._metrics += (sum(r[0] for r in results), sum(r[1] for r in results), n)

    def take_train_metrics(self) -> tuple[float, int, int]:
        loss_sum, correct, seen = self._metrics
        self._metrics = np.zeros(3)
        return float(loss_sum), int(correct), int(seen)

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32, copy=True) for k, v in self.net.params.items()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.optimizer.load_state_dict(state)

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        return self.net.feature_maps(x)
