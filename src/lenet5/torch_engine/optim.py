"""``OptimizerSpec`` on torch.optim, with the NumPy engine's flat state format.

torch.optim's SGD, Adam and AdamW are the rules the NumPy engine reimplements, so the spec
maps onto them one to one; SDLM (LeCun et al. 1998, appendix C), which torch lacks, is a small
torch.optim.Optimizer here with the NumPy engine's rule. The state is saved under
``hparams.OPTIMIZER_SLOTS``' names (``<slot>.<param name>`` plus ``steps``), so a state file
reads the same in both engines.
"""

from __future__ import annotations

import numpy as np
import torch

from ..hparams import OPTIMIZER_SLOTS, SDLM_MU, OptimizerSpec


class SDLM(torch.optim.Optimizer):
    """Stochastic diagonal Levenberg-Marquardt: p -= lr / (mu + h) * g per parameter, with
    h the curvature set by ``set_curvature`` (zero until then). As in the NumPy engine, ``lr``
    is the paper's eps times the batch size, and g the batch's mean gradient."""

    def __init__(self, params, weight_decay: float = 0.0, mu: float = SDLM_MU):
        super().__init__(params, {"lr": 0.0, "weight_decay": weight_decay, "mu": mu})
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["curvature"] = torch.zeros_like(p)

    def set_curvature(self, curvatures: list[torch.Tensor]) -> None:
        params = [p for group in self.param_groups for p in group["params"]]
        for p, h in zip(params, curvatures, strict=True):
            self.state[p]["curvature"].copy_(h)

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * p
                p -= (group["lr"] / (group["mu"] + self.state[p]["curvature"])) * g


class TorchOptimizer:
    """One torch optimizer over named parameters; ``step(lr)`` sets the rate and updates
    (the gradients must be in ``.grad`` already)."""

    def __init__(self, spec: OptimizerSpec, params: dict[str, torch.nn.Parameter]):
        self.spec = spec
        self.params = params
        self.steps = 0
        self.tensors = tensors = list(params.values())
        # fused: one kernel per step over all parameters, on CPU and CUDA
        common = {"lr": 0.0, "weight_decay": spec.weight_decay}
        if spec.name == "sdlm":
            self.optimizer = SDLM(tensors, spec.weight_decay)
        elif spec.name == "sgd":
            self.optimizer = torch.optim.SGD(tensors, momentum=spec.momentum,
                                             nesterov=spec.nesterov, fused=True, **common)
        else:
            cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
            self.optimizer = cls(tensors, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                                 fused=True, **common)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, lr: float, batch_size: int = 1) -> None:
        """One update; ``batch_size`` (the images in the mean loss) matters to SDLM only,
        which steps on the batch's sum, as the NumPy engine's."""
        self.steps += 1
        for group in self.optimizer.param_groups:
            group["lr"] = lr * batch_size if self.spec.name == "sdlm" else lr
        self.optimizer.step()

    def set_curvature(self, curvature: dict[str, torch.Tensor]) -> None:
        """SDLM: the diagonal Gauss-Newton estimates for the pass about to start."""
        self.optimizer.set_curvature([curvature[name] for name in self.params])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays ``<slot>.<param name>`` plus ``steps``, as the NumPy engine's, in the
        parameters' dtype. A slot torch has not created yet (before the first step) is zeros."""
        flat = {}
        for slot in OPTIMIZER_SLOTS[self.spec.name]:
            for name, p in self.params.items():
                value = self.optimizer.state.get(p, {}).get(slot, torch.zeros_like(p))
                flat[f"{slot}.{name}"] = np.array(value.detach().cpu().numpy(), order="C")
        flat["steps"] = np.array([self.steps], dtype=np.int64)
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray]) -> None:
        self.steps = int(flat["steps"][0])
        name = self.spec.name
        state = {}
        # torch's SGD and Adam create their slots at the first step; SDLM's always exist
        if name == "sdlm" or (self.steps and (name != "sgd" or self.spec.momentum)):
            for i, (param_name, p) in enumerate(self.params.items()):
                # like the parameter in memory layout too: fused kernels assume they match
                state[i] = {slot: torch.empty_like(p).copy_(
                    torch.from_numpy(np.asarray(flat[f"{slot}.{param_name}"])))
                    for slot in OPTIMIZER_SLOTS[name]}
                if name in ("adam", "adamw"):
                    state[i]["step"] = torch.tensor(float(self.steps))
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
