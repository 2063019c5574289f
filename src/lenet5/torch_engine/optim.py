"""``OptimizerSpec`` in torch's fused kernels, with the NumPy engine's flat state format.

SGD, Adam and AdamW run the kernels torch.optim's own classes run with ``fused=True``
(``torch._fused_sgd_``, ``torch._fused_adam_``, ``torch._fused_adamw_``), called with the
arguments those classes pass for one group of parameters, so each update is bit for bit
torch.optim's (tests check it). The classes themselves are not used: creating one imports
``torch._dynamo``, 1.5-2 s of every training command's start on the 2-core machine (about a
tenth of `lenet5 train --recipe fast --engine torch`). SDLM (LeCun et al. 1998, appendix C),
which torch lacks, is a few tensor operations with the NumPy engine's rule. The state is
saved under ``hparams.OPTIMIZER_SLOTS``' names (``<slot>.<param name>`` plus ``steps``), so a
state file reads the same in both engines.
"""

from __future__ import annotations

import numpy as np
import torch

from ..hparams import OPTIMIZER_SLOTS, SDLM_MU, OptimizerSpec


class TorchOptimizer:
    """One update rule over named parameters; ``step(lr)`` updates them from the gradients
    already in their ``.grad`` (every parameter has one: the engine computes them all)."""

    def __init__(self, spec: OptimizerSpec, params: dict[str, torch.nn.Parameter]):
        self.spec = spec
        self.params = params
        self.steps = 0
        self.tensors = tensors = list(params.values())
        # every slot zeros until the first step, in its parameter's layout (the kernels
        # assume they match); SGD's momentum buffer starts as the first gradient, as torch's
        self.slots = {slot: [torch.zeros_like(p) for p in tensors]
                      for slot in OPTIMIZER_SLOTS[spec.name]}
        # Adam's step count, per parameter, as torch's fused Adam keeps it
        self.step_counts = [torch.zeros((), dtype=torch.float32, device=p.device)
                            for p in tensors] if spec.name in ("adam", "adamw") else []

    def zero_grad(self) -> None:
        for p in self.tensors:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float | torch.Tensor, batch_size: int = 1) -> None:
        """One update; ``batch_size`` (the images in the mean loss) matters to SDLM only,
        which steps on the batch's sum, as the NumPy engine's. ``lr`` may be a one-value
        tensor on the parameters' device, as a recorded CUDA graph needs: the fused kernels
        (SGD, Adam, AdamW) and SDLM's arithmetic then read the rate where the update runs."""
        spec, first = self.spec, self.steps == 0
        self.steps += 1
        grads = [p.grad for p in self.tensors]
        if spec.name == "sgd":
            torch._fused_sgd_(self.tensors, grads,
                              self.slots["momentum_buffer"] if spec.momentum else [],
                              weight_decay=spec.weight_decay, momentum=spec.momentum, lr=lr,
                              dampening=0.0, nesterov=spec.nesterov, maximize=False,
                              is_first_step=first and spec.momentum != 0,
                              grad_scale=None, found_inf=None)
        elif spec.name == "sdlm":
            for p, g, h in zip(self.tensors, grads, self.slots["curvature"], strict=True):
                if spec.weight_decay:
                    g = g + spec.weight_decay * p
                p -= (lr * batch_size / (SDLM_MU + h)) * g
        else:
            torch._foreach_add_(self.step_counts, 1)
            fused = torch._fused_adamw_ if spec.name == "adamw" else torch._fused_adam_
            fused(self.tensors, grads, self.slots["exp_avg"], self.slots["exp_avg_sq"], [],
                  self.step_counts, amsgrad=False, lr=lr, beta1=spec.beta1, beta2=spec.beta2,
                  weight_decay=spec.weight_decay, eps=spec.eps, maximize=False,
                  grad_scale=None, found_inf=None)

    def set_curvature(self, curvature: dict[str, torch.Tensor]) -> None:
        """SDLM: the diagonal Gauss-Newton estimates for the pass about to start."""
        for h, name in zip(self.slots["curvature"], self.params, strict=True):
            h.copy_(curvature[name])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays ``<slot>.<param name>`` plus ``steps``, as the NumPy engine's, in the
        parameters' dtype (zeros before the first step)."""
        flat = {f"{slot}.{name}": np.array(value.detach().cpu().numpy(), order="C")
                for slot, values in self.slots.items()
                for name, value in zip(self.params, values, strict=True)}
        flat["steps"] = np.array([self.steps], dtype=np.int64)
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray]) -> None:
        self.steps = int(flat["steps"][0])
        for slot, values in self.slots.items():
            for name, value in zip(self.params, values, strict=True):
                value.copy_(torch.from_numpy(np.asarray(flat[f"{slot}.{name}"])))
        for count in self.step_counts:
            count.fill_(float(self.steps))
