"""The torch engine's network: one module per layer of a ``lenet5.arch`` description.

Each module is registered under its arch layer's name and keeps its parameters as ``weight``
and ``bias``, so ``state_dict()`` keys are ``C1.weight``, ``C1.bias``, ... as in model files.
Each module also applies its layer's activation, so a module's output is the feature map
NumpyNet reports for that layer. Activations are (N, C, H, W), the torch convention.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import arch as A
from ..errors import Lenet5Error
from ..hparams import OptimizerSpec
from .optim import TorchOptimizer


def scaled_tanh(a: torch.Tensor) -> torch.Tensor:
    """LeCun et al. 1998, section II-A: f(a) = 1.7159 tanh(2a/3)."""
    return 1.7159 * torch.tanh(a * (2.0 / 3.0))


def _identity(a: torch.Tensor) -> torch.Tensor:
    return a


ACTIVATIONS = {None: _identity, A.RELU: F.relu, A.SCALED_TANH: scaled_tanh}


class Conv(nn.Module):
    """Valid convolution, stride 1. With a connection table (the 1998 C3) the weights are
    multiplied by the (out, in) mask, so masked weights stay zero and get no gradient."""

    def __init__(self, spec: A.Conv):
        super().__init__()
        k = spec.kernel
        self.weight = nn.Parameter(torch.zeros(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        mask = None if spec.table is None else torch.tensor(spec.table)[:, :, None, None]
        self.register_buffer("mask", mask, persistent=False)  # (O, C, 1, 1) bool or None
        self.activation = ACTIVATIONS[spec.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.mask is None else self.weight * self.mask
        return self.activation(F.conv2d(x, w, self.bias))  # (N, O, H-k+1, W-k+1)


class MaxPool(nn.Module):
    """Non-overlapping max-pool; torch routes ties to the first position, as NumpyNet does."""

    def __init__(self, spec: A.MaxPool):
        super().__init__()
        self.size = spec.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.size)  # (N, C, H/s, W/s)


class Dense(nn.Module):
    """Fully connected; a spatial input is flattened in (C, H, W) order first."""

    def __init__(self, spec: A.Dense):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(spec.out_features, spec.in_features))
        self.bias = nn.Parameter(torch.zeros(spec.out_features))
        self.activation = ACTIVATIONS[spec.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x.flatten(1), self.weight, self.bias))  # (N, O)


MODULES = {A.Conv: Conv, A.MaxPool: MaxPool, A.Dense: Dense}


class TorchNet(nn.Module):
    """The whole network: inputs (N, 1, H, W), outputs (N, K) whose argmax is the prediction."""

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        self.arch = arch
        for spec in arch.layers:
            module = MODULES.get(type(spec))
            if module is None:
                raise NotImplementedError(f"{type(spec).__name__} is not in the torch engine")
            self.add_module(spec.name, module(spec))
        self.to(dtype=dtype, device=device)
        self.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()})
        with torch.no_grad():
            for module in self.children():
                if getattr(module, "mask", None) is not None:
                    module.weight.mul_(module.mask)  # a file's masked weights are ignored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x

    def feature_maps(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Each arch layer's output, (N, C, H, W) or (N, F)."""
        maps = []
        for name, module in self.named_children():
            x = module(x)
            maps.append((name, x))
        return maps


LOSSES = {"cross_entropy": F.cross_entropy}  # each: (outputs, labels) -> mean loss


def resolve_device(device: str) -> str:
    """``auto`` -> CUDA when torch sees a GPU, else CPU; ``cuda`` without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Lenet5Error("--device cuda needs a CUDA GPU, but PyTorch sees none (this torch is "
                          f"{torch.__version__}); use --device cpu or --device auto.")
    if device not in ("cpu", "cuda"):
        raise Lenet5Error(f"unknown --device {device!r}; choose one of: auto, cpu, cuda.")
    return device


class TorchEngine:
    """``TorchNet`` plus its optimizer behind the ``lenet5.engine.Engine`` interface. The
    training data stays on the device for the whole run; each step indexes it, and the
    metrics add up on the device until ``take_train_metrics`` reads them once."""

    name = "torch"

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 optimizer: OptimizerSpec | None = None, device: str = "auto",
                 dtype: torch.dtype = torch.float32):
        self.arch = arch
        self.device = resolve_device(device)
        self.dtype = dtype
        self.net = TorchNet(arch, params, dtype, self.device)
        self.optimizer = TorchOptimizer(optimizer or OptimizerSpec(),
                                        dict(self.net.named_parameters()))
        self.loss_fn = LOSSES[arch.loss]
        self._bound: tuple[np.ndarray, np.ndarray] | None = None  # the arrays last bound
        self._metrics = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss, correct
        self._seen = 0

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def logits(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        return np.concatenate([self.net(self._tensor(x[i:i + batch_size])).cpu().numpy()
                               for i in range(0, len(x), batch_size)])

    @torch.inference_mode()
    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
                 ) -> tuple[float, np.ndarray]:
        """(sum of per-image losses, predicted labels), read back from the device once."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        preds = []
        for i in range(0, len(x), batch_size):
            out = self.net(self._tensor(x[i:i + batch_size]))
            labels = torch.as_tensor(y[i:i + batch_size], device=self.device)
            loss_sum += self.loss_fn(out, labels) * len(out)
            preds.append(out.argmax(dim=1))
        return float(loss_sum), torch.cat(preds).cpu().numpy()

    def bind_training_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Copy the epoch's data to the device, unless these very arrays are there already."""
        if self._bound is not None and self._bound[0] is x and self._bound[1] is y:
            return
        self._bound = (x, y)
        self.train_x = self._tensor(x)  # (N, 1, H, W); on CPU it shares x's memory
        self.train_y = torch.as_tensor(y, dtype=torch.int64, device=self.device)

    def train_step(self, batch: np.ndarray, lr: float) -> None:
        rows = torch.as_tensor(batch, device=self.device)
        x, y = self.train_x[rows], self.train_y[rows]
        out = self.net(x)  # (B, K)
        loss = self.loss_fn(out, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step(lr)
        with torch.no_grad():
            self._metrics[0] += loss.detach() * len(batch)
            self._metrics[1] += (out.argmax(dim=1) == y).sum()
        self._seen += len(batch)

    def take_train_metrics(self) -> tuple[float, int, int]:
        loss_sum, correct = self._metrics.tolist()  # the epoch's one wait for the device
        seen = self._seen
        self._metrics.zero_()
        self._seen = 0
        return loss_sum, int(correct), seen

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: np.array(v.detach().cpu(), dtype=np.float32)
                for k, v in self.net.named_parameters()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.optimizer.load_state_dict(state)

    @torch.inference_mode()
    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        return [(name, m.cpu().numpy()) for name, m in self.net.feature_maps(self._tensor(x))]
