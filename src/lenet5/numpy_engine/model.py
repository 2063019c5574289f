"""The NumPy engine: a network built from an ``Architecture`` and the training interface.

``NumpyNet`` only computes (forward, backward); ``NumpyEngine`` adds the optimizer and the
small interface ``lenet5.training`` drives (see ``lenet5.engine.Engine``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import numpy as np

from .. import arch as A
from ..hparams import OptimizerSpec
from ..threads import blas_threads_for, one_blas_thread
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
        self._split_pooled_convolutions()
        self.loss_fn = LOSSES[arch.loss]

    def _split_pooled_convolutions(self) -> None:
        """Each convolution that feeds a pooling layer through elementwise layers only writes
        its output in the layout that pooling reads fastest (``layers.Conv.split``)."""
        conv = None
        for _, layer in self.layers:
            if isinstance(layer, L.Conv):
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
        split = 1  # the width split of h (layers.Conv.split)
        for name, layer in self.layers:
            h = layer.forward(h, train=False)
            if isinstance(layer, L.Flatten):
                continue
            split = layer.split if isinstance(layer, L.Conv) else (
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


class NumpyEngine:
    name = "numpy"
    device = "cpu"

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 optimizer: OptimizerSpec | None = None):
        keep_freed_memory()
        self.arch = arch
        self.net = NumpyNet(arch, params)
        self.optimizer = Optimizer(optimizer or OptimizerSpec(), self.net.params)
        self._metrics = np.zeros(3)  # loss sum, correct, seen

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.net.forward(x)

    def bind_training_data(self, x: np.ndarray, y: np.ndarray) -> None:
        self.train_x, self.train_y = x, y

    def estimate_curvature(self, rows: np.ndarray) -> None:
        """SDLM: the curvature for the pass about to start, from these bound rows."""
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
