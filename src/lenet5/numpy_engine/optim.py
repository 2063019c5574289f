"""SGD and Adam(W) on dicts of NumPy arrays, updating parameters in place.

The update rules are PyTorch's, step for step, so both engines agree to rounding.
"""

from __future__ import annotations

import numpy as np

from ..hparams import OptimizerSpec


class Optimizer:
    """Holds per-parameter state; ``step`` applies one update with the given learning rate."""

    def __init__(self, spec: OptimizerSpec, params: dict[str, np.ndarray]):
        self.spec = spec
        self.params = params
        self.steps = 0
        slots = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
                 "adamw": ("exp_avg", "exp_avg_sq")}[spec.name]
        self.state = {slot: {k: np.zeros_like(p) for k, p in params.items()} for slot in slots}

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        self.steps += 1
        update = self._sgd if self.spec.name == "sgd" else self._adam
        for name, param in self.params.items():
            update(name, param, grads[name], lr)

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
