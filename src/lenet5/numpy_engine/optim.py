"""SGD, Adam(W) and SDLM on dicts of NumPy arrays, updating parameters in place.

SGD and Adam(W) follow PyTorch's update rules step for step, so both engines agree to
rounding. SDLM is the stochastic diagonal Levenberg-Marquardt method of LeCun et al. 1998
(appendix C), which PyTorch does not have.
"""

from __future__ import annotations

import math

import numpy as np

from ..hparams import OPTIMIZER_SLOTS, SDLM_MU, OptimizerSpec


class Optimizer:
    """Holds per-parameter state; ``step`` applies one update with the given learning rate.

    The update rules run once on all parameters laid end to end (one flat array per state
    slot, and the gradients concatenated), not once per parameter: a handful of array
    operations per step instead of a dozen per parameter. ``state[slot][name]`` are views
    into those flat arrays."""

    def __init__(self, spec: OptimizerSpec, params: dict[str, np.ndarray]):
        self.spec = spec
        self.params = params
        self.steps = 0
        slots = OPTIMIZER_SLOTS[spec.name]
        ends = np.cumsum([p.size for p in params.values()])
        self._slices = {k: slice(end - p.size, end)
                        for (k, p), end in zip(params.items(), ends, strict=True)}
        self.flat = {slot: np.zeros(ends[-1], np.result_type(*params.values()))
                     for slot in slots}
        self.state = {slot: {k: flat[part].reshape(params[k].shape)
                             for k, part in self._slices.items()}
                      for slot, flat in self.flat.items()}

    def step(self, grads: dict[str, np.ndarray], lr: float, batch_size: int = 1) -> None:
        """One update from ``grads``, the gradients of the batch's MEAN loss; ``batch_size``
        (the images in that mean) matters to SDLM only, which steps on the batch's sum."""
        self.steps += 1
        g = self._flatten(grads)
        if self.spec.weight_decay and self.spec.name != "adamw":
            g += self.spec.weight_decay * self._flatten(self.params)  # L2, as torch adds it
        if self.spec.name == "sdlm":
            delta = self._sdlm(g, lr * batch_size)
        elif self.spec.name == "sgd":
            delta = self._sgd(g, lr)
        else:
            delta = self._adam(g, lr)
        for name, part in self._slices.items():
            param = self.params[name]
            if self.spec.name == "adamw" and self.spec.weight_decay:
                param *= 1 - lr * self.spec.weight_decay  # decoupled decay, before the step
            param -= delta[part].reshape(param.shape)

    def _flatten(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([arrays[name].ravel() for name in self._slices])

    def set_curvature(self, curvature: dict[str, np.ndarray]) -> None:
        """SDLM: the diagonal Gauss-Newton estimates h_kk for the pass about to start (the
        engine computes them on a sample before each pass)."""
        for name, h in curvature.items():
            np.copyto(self.state["curvature"][name], h)

    def _sdlm(self, g: np.ndarray, eps: float) -> np.ndarray:
        """p -= eps / (mu + h_kk) * g, the paper's per-parameter step.

        The paper updates after every image (batch size 1). Here ``g`` is a mini-batch's mean
        gradient and ``eps`` arrives multiplied by the batch size, so the step is eps/(mu+h)
        times the SUM of the per-image gradients: to first order, exactly the B one-image
        steps it replaces, taken from the batch's starting point. h_kk is the per-image
        curvature, as in the paper. This stays stable while B * eps * h/(mu + h) < 2 for
        every weight, i.e. for any B below 2/eps = 4,000 at the paper's largest eps.
        """
        return (eps / (SDLM_MU + self.flat["curvature"])) * g

    def _sgd(self, g: np.ndarray, lr: float) -> np.ndarray:
        s = self.spec
        if s.momentum:
            buf = self.flat["momentum_buffer"]
            if self.steps == 1:
                buf[...] = g
            else:
                buf *= s.momentum
                buf += g
            g = g + s.momentum * buf if s.nesterov else buf
        return lr * g

    def _adam(self, g: np.ndarray, lr: float) -> np.ndarray:
        s = self.spec
        m, v = self.flat["exp_avg"], self.flat["exp_avg_sq"]
        m *= s.beta1
        m += (1 - s.beta1) * g
        v *= s.beta2
        v += (1 - s.beta2) * g * g
        bias1 = 1 - s.beta1**self.steps
        bias2 = 1 - s.beta2**self.steps
        denom = np.sqrt(v) / math.sqrt(bias2) + s.eps  # a Python float keeps float32 float32
        return (lr / bias1) * (m / denom)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays for a safetensors file: ``<slot>.<param name>`` plus ``steps``."""
        flat = {f"{slot}.{k}": v for slot, arrays in self.state.items() for k, v in arrays.items()}
        flat["steps"] = np.array([self.steps], dtype=np.int64)
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray]) -> None:
        self.steps = int(flat["steps"][0])
        for slot, arrays in self.state.items():
            for k, v in arrays.items():
                np.copyto(v, flat[f"{slot}.{k}"])
