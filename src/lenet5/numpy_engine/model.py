"""The NumPy engine: a network built from an ``Architecture`` and the training interface.

``NumpyNet`` only computes (forward, backward); ``NumpyEngine`` adds the optimizer and the
small interface ``lenet5.training`` drives (see ``lenet5.engine.Engine``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys

import numpy as np
from threadpoolctl import ThreadpoolController

from .. import arch as A
from ..engine import THREAD_VARIABLES
from ..hparams import OptimizerSpec
from . import layers as L
from .losses import map_curvature, map_loss, softmax_cross_entropy, softmax_curvature

LOSSES = {"cross_entropy": softmax_cross_entropy, "map": map_loss}
ACTIVATIONS = {A.RELU: L.ReLU, A.SCALED_TANH: L.ScaledTanh}
POOLS = (L.MaxPool2d, L.Subsample2d)
SDLM_SAMPLES = 500  # images the curvature is re-estimated on before each pass (paper, app. C)
ONE_BLAS_THREAD_BELOW = 64  # training steps on fewer images run on one BLAS thread


class NumpyNet:
    """Forward and backward through the whole network. Inputs (N, 1, H, W), outputs (N, K)
    whose argmax is the prediction (for lenet5-1998, the negated RBF penalties -y_i, whose
    softmax is the posterior exp(-y_i) / sum_k exp(-y_k)). Parameters live in ``self.params``
    under the names of ``lenet5.arch``; layers hold references to them, so in-place updates
    reach every layer."""

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 dtype: type = np.float32):
        self.arch = arch
        self.params = {k: np.array(v, dtype=dtype) for k, v in params.items()}
        self.layers: list[tuple[str, L.Layer]] = []  # (arch layer name, layer)
        self.deferred_activations: dict[str, L.Layer] = {}  # arch layer -> its moved activation
        spatial, deferred = True, None
        for i, spec in enumerate(arch.layers):
            following = arch.layers[i + 1] if i + 1 < len(arch.layers) else None
            prefix = spec.name + "."
            p = {k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)}
            if spatial and isinstance(spec, (A.Dense, A.RBF)):  # the first vector layer
                self.layers.append((spec.name, L.Flatten()))
                spatial = False
            if isinstance(spec, A.Conv):
                mask = None if spec.table is None else np.array(spec.table, dtype=bool)
                self.layers.append((spec.name, L.Conv2d(p["weight"], p["bias"], mask)))
            elif isinstance(spec, A.MaxPool):
                self.layers.append((spec.name, L.MaxPool2d(spec.size)))
            elif isinstance(spec, A.Subsample):
                self.layers.append((spec.name, L.Subsample2d(p["weight"], p["bias"], spec.size)))
            elif isinstance(spec, A.Dense):
                self.layers.append((spec.name, L.Linear(p["weight"], p["bias"])))
            elif isinstance(spec, A.RBF):
                centres = A.rbf_centres_of(spec).astype(dtype)  # (10, 84), fixed
                self.layers.append((spec.name, L.RBF(centres)))
            else:
                raise TypeError(f"{spec.name}: unknown layer kind {type(spec).__name__}")
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
        self._split_pooled_convolutions()
        self.loss_fn = LOSSES[arch.loss]

    def _split_pooled_convolutions(self) -> None:
        """Each convolution that feeds a pooling layer through elementwise layers only writes
        its output in the layout that pooling reads fastest (``layers.Conv2d.split``)."""
        conv = None
        for _, layer in self.layers:
            if isinstance(layer, L.Conv2d):
                conv = layer
            elif isinstance(layer, POOLS) and conv is not None:
                conv.split, layer.split_input = layer.size, True
                conv = None
            elif not isinstance(layer, tuple(ACTIVATIONS.values())):
                conv = None

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

    def loss_and_grads(self, x: np.ndarray, labels: np.ndarray):
        """(mean loss, outputs, parameter gradients) for one batch."""
        out = self.forward(x, train=True)
        loss, grad = self.loss_fn(out, labels)
        return loss, out, self.backward(grad)

    def curvature(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """SDLM's diagonal Gauss-Newton curvature of the loss, averaged over the images of
        ``x``: per parameter, the mean over images of sum (d out/d p)^2 d2E/d out^2 as
        back-propagated by the layers' ``backward_gn`` (appendix C). It needs no labels."""
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
            curv = layer.backward_gn(curv)
        return {f"{name}.{k}": h for name, layer in self.layers
                for k, h in layer.curvatures.items()}

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Each arch layer's output, (N, C, H, W) or (N, F), for pictures of what it sees."""
        maps: dict[str, np.ndarray] = {}
        h = x.transpose(0, 2, 3, 1)
        split = 1  # the width split of h (layers.Conv2d.split)
        for name, layer in self.layers:
            h = layer.forward(h, train=False)
            if isinstance(layer, L.Flatten):
                continue
            split = layer.split if isinstance(layer, L.Conv2d) else (
                1 if isinstance(layer, POOLS) else split)
            shown = h if split == 1 else L.unsplit_width(h, split)
            if name in self.deferred_activations:  # show the arch layer's own output
                shown = self.deferred_activations[name].forward(shown, train=False)
            maps[name] = shown.transpose(0, 3, 1, 2) if shown.ndim == 4 else shown
        return list(maps.items())


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB for reuse (True where it did), once per
    process, unless the user tuned it with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_.

    Every step allocates the same few-MB temporaries. glibc's default thresholds adapt to
    that only partly: blocks still go back to the kernel (unmapped, or trimmed off the heap)
    and each step faults them in again page by page, a third of a LeNet-5 training step on a
    2-core machine. Fixed higher thresholds keep them in the heap for reuse (and turn the
    adaptation off); the process keeps up to 256 MiB of free heap instead of returning it.
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


@functools.cache
def _blas_threads() -> ThreadpoolController | None:
    """threadpoolctl's view of the BLAS libraries loaded, or None where the user chose the
    thread count in the environment (then it is theirs)."""
    if set(THREAD_VARIABLES) & set(os.environ):
        return None
    return ThreadpoolController()


def one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS on one thread inside the block (unless the user set the thread count), so that
    what is computed there does not depend on the machine's core count: OpenBLAS splits a
    GEMM differently on more threads, and the last bits of float32 results change (9e-7 in
    the weights after 500 lenet5-1998 steps, 2 threads vs 1), which 20 passes amplify into a
    different run."""
    controller = _blas_threads()
    return contextlib.nullcontext() if controller is None else controller.limit(
        limits=1, user_api="blas")


def blas_threads_for(batch_size: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for a training step on fewer than ONE_BLAS_THREAD_BELOW images, all of
    them for larger ones. The second core buys nothing measurable at that size (16-image
    lenet5-1998 steps, A/B in one process: 3.59 ms on one thread, 3.54 ms on two), while a
    128-image lenet5 step gains from it (11.8 vs 15.0 ms); so small-batch runs, the 1998
    network's default among them, give the same result on any number of cores for free."""
    return one_blas_thread() if batch_size < ONE_BLAS_THREAD_BELOW else contextlib.nullcontext()


class NumpyEngine:
    name = "numpy"
    device = "cpu"

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 optimizer: OptimizerSpec | None = None):
        from .optim import Optimizer

        keep_freed_memory()
        self.arch = arch
        self.net = NumpyNet(arch, params)
        self.optimizer = Optimizer(optimizer or OptimizerSpec(), self.net.params)
        self._metrics = np.zeros(3)  # loss sum, correct, seen

    def logits(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        return np.concatenate([self.net.forward(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
                 ) -> tuple[float, np.ndarray]:
        """(sum of per-image losses, predicted labels)."""
        loss_sum, preds = 0.0, []
        for i in range(0, len(x), batch_size):
            out = self.net.forward(x[i:i + batch_size])
            loss_sum += self.net.loss_fn(out, y[i:i + batch_size])[0] * len(out)
            preds.append(out.argmax(axis=1))
        return loss_sum, np.concatenate(preds)

    def bind_training_data(self, x: np.ndarray, y: np.ndarray) -> None:
        self.train_x, self.train_y = x, y

    def start_epoch(self, order: np.ndarray) -> None:
        """Called by the training loop before each pass, after ``bind_training_data``, with
        the pass's shuffled row order. SDLM re-estimates its curvature on the first
        SDLM_SAMPLES rows of it (the paper: 500 patterns before each pass); other optimizers
        need nothing."""
        if self.optimizer.spec.name == "sdlm":
            rows = order[:SDLM_SAMPLES]
            with one_blas_thread():  # a few ms; the same curvature on any number of cores
                self.optimizer.set_curvature(self.net.curvature(self.train_x[rows]))

    def train_step(self, batch: np.ndarray, lr: float) -> None:
        x, y = self.train_x[batch], self.train_y[batch]
        with blas_threads_for(len(batch)):
            loss, out, grads = self.net.loss_and_grads(x, y)
            self.optimizer.step(grads, lr, batch_size=len(batch))
        self._metrics += (loss * len(batch), np.count_nonzero(out.argmax(axis=1) == y), len(batch))

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
