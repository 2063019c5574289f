"""``OptimizerSpec`` on torch.optim, with the NumPy engine's flat state format.

torch.optim's SGD, Adam and AdamW are the rules the NumPy engine reimplements, so the spec
maps onto them one to one. Their state is saved under the NumPy engine's names
(``<slot>.<param name>`` plus ``steps``), so a run's state file reads the same in both engines.
"""

from __future__ import annotations

import numpy as np
import torch

from ..hparams import OptimizerSpec

SLOTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
         "adamw": ("exp_avg", "exp_avg_sq")}


class TorchOptimizer:
    """Wraps one torch optimizer over named parameters; ``step(lr)`` sets the rate and updates
    (the gradients must already be in ``.grad``)."""

    def __init__(self, spec: OptimizerSpec, params: dict[str, torch.nn.Parameter]):
        self.spec = spec
        self.params = params
        self.steps = 0
        # fused kernels exist for CPU and CUDA float tensors; one kernel per step over all params
        kwargs = {"lr": 0.0, "weight_decay": spec.weight_decay, "fused": True}
        tensors = list(params.values())
        if spec.name == "sgd":
            self.optimizer = torch.optim.SGD(tensors, momentum=spec.momentum,
                                             nesterov=spec.nesterov, **kwargs)
        else:
            cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
            self.optimizer = cls(tensors, betas=(spec.beta1, spec.beta2), eps=spec.eps, **kwargs)

    def step(self, lr: float) -> None:
        self.steps += 1
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat float32 arrays ``<slot>.<param name>`` plus ``steps``, as the NumPy engine's.
        A slot torch has not created yet (before the first step) is saved as zeros."""
        flat = {}
        for slot in SLOTS[self.spec.name]:
            for name, p in self.params.items():
                value = self.optimizer.state.get(p, {}).get(slot)
                flat[f"{slot}.{name}"] = (np.zeros(p.shape, np.float32) if value is None
                                          else np.array(value.detach().cpu(), dtype=np.float32))
        flat["steps"] = np.array([self.steps], dtype=np.int64)
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray]) -> None:
        self.steps = int(flat["steps"][0])
        state = {}
        if self.steps and (self.spec.name != "sgd" or self.spec.momentum):
            for i, name in enumerate(self.params):
                state[i] = {slot: torch.from_numpy(np.array(flat[f"{slot}.{name}"]))
                            for slot in SLOTS[self.spec.name]}
                if self.spec.name != "sgd":
                    state[i]["step"] = torch.tensor(float(self.steps))
        # torch.optim moves each slot to its parameter's device and dtype
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
