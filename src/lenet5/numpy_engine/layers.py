"""LeNet-5's layers in NumPy: each forward pass beside its hand-written backward pass.

Activations are kept channels-last, (N, H, W, C): a convolution is then one GEMM whose output
is already in layout, and pooling works on strided views without transposes. Parameters keep
the engine-neutral layouts of ``lenet5.arch`` (conv weights (out, in, k, k), dense (out, in)).
Every layer works in the dtype of its input: float32 to train, float64 for gradient checks.

``forward(x, train)`` keeps what ``backward`` needs only when ``train`` is true; ``backward(g)``
fills ``self.grads`` (same keys as ``self.params``) and returns the input gradient, or None
where nothing upstream needs it (the first layer).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Layer:
    params: dict[str, np.ndarray] = {}
    grads: dict[str, np.ndarray] = {}
    needs_input_grad = True

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError


class Conv2d(Layer):
    """Valid convolution, stride 1, as im2col + one GEMM. An optional (out, in) connection
    mask makes it a sparse convolution (the 1998 C3): masked weights stay zero."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mask: np.ndarray | None = None):
        self.params = {"weight": weight, "bias": bias}  # (O, C, k, k), (O,)
        self.mask = None if mask is None else mask[:, :, None, None].astype(weight.dtype)
        if self.mask is not None:
            weight *= self.mask

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        w = self.params["weight"]
        out_ch, in_ch, k, _ = w.shape
        n, h, wd, _ = x.shape  # (N, H, W, C)
        ho, wo = h - k + 1, wd - k + 1
        # (N, Ho, Wo, C, k, k): a view; the reshape makes the one contiguous copy (im2col)
        cols = sliding_window_view(x, (k, k), axis=(1, 2)).reshape(n * ho * wo, in_ch * k * k)
        y = cols @ w.reshape(out_ch, -1).T  # (N*Ho*Wo, O)
        y += self.params["bias"]
        if train:
            self.cols, self.in_shape = cols, x.shape
        return y.reshape(n, ho, wo, out_ch)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        w = self.params["weight"]
        out_ch, in_ch, k, _ = w.shape
        g = grad.reshape(-1, out_ch)  # (N*Ho*Wo, O)
        dw = (g.T @ self.cols).reshape(w.shape)
        if self.mask is not None:
            dw *= self.mask
        self.grads = {"weight": dw, "bias": g.sum(axis=0)}
        self.cols = None
        if not self.needs_input_grad:
            return None
        n, h, wd, _ = self.in_shape
        ho, wo = grad.shape[1:3]
        dcols = (g @ w.reshape(out_ch, -1)).reshape(n, ho, wo, in_ch, k, k)
        dx = np.zeros(self.in_shape, dtype=grad.dtype)  # (N, H, W, C)
        for i in range(k):  # scatter-add each kernel offset's slice: k*k array ops
            for j in range(k):
                dx[:, i:i + ho, j:j + wo, :] += dcols[..., i, j]
        return dx


class MaxPool2d(Layer):
    """Non-overlapping max-pool on strided views. Ties go to the first window position in
    row-major order, as PyTorch does, so gradients match it exactly."""

    def __init__(self, size: int = 2):
        self.size = size

    def _views(self, x: np.ndarray) -> list[np.ndarray]:
        s = self.size
        return [x[:, i::s, j::s, :] for i in range(s) for j in range(s)]  # each (N, H/s, W/s, C)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        views = self._views(x)
        out = views[0].copy()
        for v in views[1:]:
            np.maximum(out, v, out=out)
        if train:
            taken = np.zeros(out.shape, dtype=bool)
            self.routes = []
            for v in views:  # route each output to the first input that equals it
                route = (v == out) & ~taken
                taken |= route
                self.routes.append(route)
            self.in_shape = x.shape
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        dx = np.zeros(self.in_shape, dtype=grad.dtype)
        for view, route in zip(self._views(dx), self.routes, strict=True):
            np.multiply(grad, route, out=view)
        self.routes = None
        return dx


class ReLU(Layer):
    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        y = np.maximum(x, 0)
        if train:
            self.positive = y > 0
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self.positive


class Flatten(Layer):
    """(N, H, W, C) -> (N, C*H*W) in (C, H, W) order, the order dense weights are stored in."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.in_shape = x.shape
        return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        n, h, w, c = self.in_shape
        return grad.reshape(n, c, h, w).transpose(0, 2, 3, 1)


class Linear(Layer):
    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.params = {"weight": weight, "bias": bias}  # (O, I), (O,)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train:
            self.x = x
        return x @ self.params["weight"].T + self.params["bias"]  # (N, O)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        self.grads = {"weight": grad.T @ self.x, "bias": grad.sum(axis=0)}
        self.x = None
        return grad @ self.params["weight"] if self.needs_input_grad else None
