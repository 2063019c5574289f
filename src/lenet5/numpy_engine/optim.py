"""SGD, Adam(W) and SDLM on dicts of NumPy arrays, updating parameters in place.

SGD and Adam(W) follow PyTorch's update rules step for step, so both engines agree to
rounding. SDLM is the stochastic diagonal Levenberg-Marquardt method of LeCun et al. 1998
(appendix C), which PyTorch does not have.
"""

from __future__ import annotations

import numpy as np

from ..hparams import OptimizerSpec

SDLM_MU = 0.02  # the paper's mu: keeps steps bounded where the curvature is tiny


class Optimizer:
    """Holds per-parameter state; ``step`` applies one update with the given learning rate."""

    def __init__(self, spec: OptimizerSpec, params: dict[str, np.ndarray]):
        self.spec = spec
        self.params = params
        self.steps = 0
        slots = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
                 "adamw": ("exp_avg", "exp_avg_sq"), "sdlm": ("curvature",)}[spec.name]
        self.state = {slot: {k: np.zeros_like(p) for k, p in params.items()} for slot in slots}

    def step(self, grads: dict[str, np.ndarray], lr: float, batch_size: int = 1) -> None:
        """One update from ``grads``, the gradients of the batch's MEAN loss; ``batch_size``
        (the images in that mean) matters to SDLM only, which steps on the batch's sum."""
        self.steps += 1
        if self.spec.name == "sdlm":
            for name, param in self.params.items():
                self._sdlm(name, param, grads[name], lr * batch_size)
            return
        update = self._sgd if self.spec.name == "sgd" else self._adam
        for name, param in self.params.items():
            update(name, param, grads[name], lr)

    def set_curvature(self, curvature: dict[str, np.ndarray]) -> None:
        """SDLM: the diagonal Gauss-Newton estimates h_kk for the pass about to start (the
        engine computes them on a sample before each pass)."""
        for name, h in curvature.items():
            np.copyto(self.state["curvature"][name], h)

    def _sdlm(self, name: str, p: np.ndarray, g: np.ndarray, eps: float) -> None:
        """p -= eps / (mu + h_kk) * g, the paper's per-parameter step.

        The paper updates after every image (batch size 1). Here ``g`` is a mini-batch's mean
        gradient and ``eps`` arrives multiplied by the batch size, so the step is eps/(mu+h)
        times the SUM of the per-image gradients: to first order, exactly the B one-image
        steps it replaces, taken from the batch's starting point. h_kk is the per-image
        curvature, as in the paper. This stays stable while B * eps * h/(mu + h) < 2 for
        every weight, i.e. for any B below 2/eps = 4,000 at the paper's largest eps.
        """
        if self.spec.weight_decay:
            g = g + self.spec.weight_decay * p
        p -= (eps / (SDLM_MU + self.state["curvature"][name])) * g

    def _sgd(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        s = self.spec
        if s.weight_decay:
            g = g + s.weight_decay * p
        if s.momentum:
            buf = self.state["momentum_buffer"][name]
            if self.steps == 1:
                buf[...] = g
            else:
                buf *= s.momentum
                buf += g
            g = g + s.momentum * buf if s.nesterov else buf
        p -= lr * g

    def _adam(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        s = self.spec
        if s.weight_decay and s.name == "adamw":
            p *= 1 - lr * s.weight_decay  # decoupled decay
        elif s.weight_decay:
            g = g + s.weight_decay * p  # L2, as torch.optim.Adam
        m, v = self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
        m *= s.beta1
        m += (1 - s.beta1) * g
        v *= s.beta2
        v += (1 - s.beta2) * g * g
        bias1 = 1 - s.beta1**self.steps
        bias2 = 1 - s.beta2**self.steps
        denom = np.sqrt(v) / np.sqrt(bias2) + s.eps
        p -= (lr / bias1) * (m / denom)

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
