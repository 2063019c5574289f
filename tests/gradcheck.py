"""Central finite differences for checking hand-written backward passes in float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EPS = 1e-5  # truncation error ~eps^2, rounding ~1e-16/eps: both far below 1e-6


def numeric_grad(f: Callable[[], float], x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d f / d x by central differences, perturbing ``x`` in place one entry at a time."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def max_rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """Largest |a - n| / max(|a| + |n|, 1e-6): relative where gradients are large, absolute
    (scaled by 1e6) where both are tiny."""
    scale = np.maximum(np.abs(analytic) + np.abs(numeric), 1e-6)
    return float(np.max(np.abs(analytic - numeric) / scale))


def check_layer(layer, x: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Compare a layer's backward with finite differences of sum(forward(x) * R).

    Returns the max relative error for the input (key "x") and each parameter.
    """
    rng = np.random.default_rng(seed)
    out = layer.forward(x, train=True)
    weights = rng.normal(size=out.shape)  # random projection -> scalar loss

    def loss() -> float:
        return float(np.sum(layer.forward(x, train=False) * weights))

    layer.forward(x, train=True)
    dx = layer.backward(weights.copy())
    errors = {}
    if dx is not None:
        errors["x"] = max_rel_error(dx, numeric_grad(loss, x))
    grads = dict(layer.grads)
    for name, p in layer.params.items():
        errors[name] = max_rel_error(grads[name], numeric_grad(loss, p))
    return errors
