"""The torch engine: the networks of ``lenet5.arch`` as torch modules, and the training interface.

``TorchNet`` has one module per arch layer, registered under the layer's name, with its
parameters as ``weight`` and ``bias``: ``state_dict()`` keys are ``C1.weight``, ``C1.bias``,
... as in model files. Each module applies its layer's activation too, so its output is the
feature map NumpyNet reports for that layer. ``TorchEngine`` adds the optimizer and the
interface ``lenet5.training`` drives (``lenet5.engine.Engine``). Activations are (N, C, H, W).

Besides ``forward``, each module has ``backward_curvature``: SDLM's Gauss-Newton pass (the
backward pass with every Jacobian entry squared), as the NumPy layers' of the same name.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from .. import arch as A
from ..arch import TANH_AMPLITUDE, TANH_SLOPE
from ..errors import Lenet5Error
from ..hparams import DEVICES, OptimizerSpec
from ..threads import part_slices, run_parts, user_set_threads
from .losses import LOSSES, map_curvature, softmax_curvature
from .optim import TorchOptimizer


def scaled_tanh(a: torch.Tensor) -> torch.Tensor:
    """LeCun et al. 1998, section II-A: f(a) = 1.7159 tanh(2a/3)."""
    return TANH_AMPLITUDE * torch.tanh(TANH_SLOPE * a)


# arch.ACTIVATIONS name -> (f, f' as a function of the output y = f(a))
ACTIVATIONS = {
    A.RELU: (F.relu, lambda y: (y > 0).to(y.dtype)),
    A.TANH: (torch.tanh, lambda y: 1 - y * y),
    A.SIGMOID: (torch.sigmoid, lambda y: y * (1 - y)),
    A.SCALED_TANH: (scaled_tanh, lambda y: (TANH_SLOPE / TANH_AMPLITUDE)
                    * (TANH_AMPLITUDE**2 - y * y)),
}

Curvatures = tuple[torch.Tensor, dict[str, torch.Tensor]]  # (input's, each parameter's)


class Layer(nn.Module):
    """One arch layer, its activation included."""

    def __init__(self, activation: str | None = None):
        super().__init__()
        self.activation = activation

    def activate(self, a: torch.Tensor) -> torch.Tensor:
        return a if self.activation is None else ACTIVATIONS[self.activation][0](a)

    def curvature_before_activation(self, curv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d2E/da2 from d2E/dy2 for y = f(a), Gauss-Newton: times f'(a)^2."""
        return curv if self.activation is None else curv * ACTIVATIONS[self.activation][1](y)**2

    def backward_curvature(self, curv: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                           ) -> Curvatures:
        """Given d2E/dy2 for this layer's output ``y`` (from input ``x``): d2E/dx2 and each
        parameter's d2E/dp2, both Gauss-Newton diagonals."""
        raise NotImplementedError


class Conv(Layer):
    """Valid convolution, stride 1. With a connection table (the 1998 C3) the weights are
    multiplied by the (out, in) mask, so masked weights have no effect and get no gradient."""

    def __init__(self, spec: A.Conv):
        super().__init__(spec.activation)
        k = spec.kernel
        self.weight = nn.Parameter(torch.zeros(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        mask = None if spec.table is None else torch.tensor(spec.table)[:, :, None, None]
        self.register_buffer("mask", mask, persistent=False)  # (O, C, 1, 1) bool or None

    def effective_weight(self) -> torch.Tensor:
        return self.weight if self.mask is None else self.weight * self.mask

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias)  # (N, O, H-k+1, W-k+1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre_activation(x))

    def backward_curvature(self, curv: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                           ) -> Curvatures:
        curv = self.curvature_before_activation(curv, y)  # (N, O, Ho, Wo)
        w = self.effective_weight()
        dw = conv2d_weight(x * x, w.shape, curv)  # each output reads each weight once
        if self.mask is not None:
            dw = dw * self.mask
        return conv2d_input(x.shape, w * w, curv), {"weight": dw, "bias": curv.sum((0, 2, 3))}


class MaxPool(Layer):
    """Non-overlapping max-pool; torch routes ties to the first position, as NumpyNet does.

    Without autograd it is the elementwise maximum of the size*size strided views: the same
    values, and several times faster on CPU than torch's channels-last pooling kernel, which
    vectorises over the channels (only 6 or 16 here)."""

    def __init__(self, spec: A.MaxPool):
        super().__init__()
        self.size = spec.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return F.max_pool2d(x, self.size)  # (N, C, H/s, W/s), remembers where each max was
        s = self.size
        h, w = x.shape[2] // s * s, x.shape[3] // s * s  # as max_pool2d, drop a ragged edge
        views = [x[:, :, i:h:s, j:w:s] for i in range(s) for j in range(s)]
        return functools.reduce(torch.maximum, views)  # (N, C, H/s, W/s)

    def backward_curvature(self, curv: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                           ) -> Curvatures:
        _, taken = F.max_pool2d(x, self.size, return_indices=True)  # Jacobian entries 0 or 1
        return F.max_unpool2d(curv, taken, self.size, output_size=x.shape[-2:]), {}


class AvgPool(Layer):
    """Non-overlapping mean pooling."""

    def __init__(self, spec: A.AvgPool):
        super().__init__()
        self.size = spec.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.size)  # (N, C, H/s, W/s)

    def backward_curvature(self, curv: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                           ) -> Curvatures:
        per_input = curv / self.size**4  # every Jacobian entry is 1/s^2
        return per_input.repeat_interleave(self.size, 2).repeat_interleave(self.size, 3), {}


class Subsample(Layer):
    """1998 sub-sampling: per map c, each size x size block's sum times weight[c], plus
    bias[c], then the activation."""

    def __init__(self, spec: A.Subsample):
        super().__init__(spec.activation)
        self.size = spec.size
        self.weight = nn.Parameter(torch.zeros(spec.channels))
        self.bias = nn.Parameter(torch.zeros(spec.channels))

    def block_sums(self, x: torch.Tensor) -> torch.Tensor:
        # mean times size^2 (exact in floating point) rather than divisor_override=1, which
        # torch.onnx.export writes as a plain mean (pytorch/pytorch#105349)
        return F.avg_pool2d(x, self.size) * self.size**2  # (N, C, H/s, W/s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.block_sums(x) * self.weight[:, None, None] + self.bias[:, None, None]
        return self.activate(a)

    def backward_curvature(self, curv: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                           ) -> Curvatures:
        curv = self.curvature_before_activation(curv, y)  # (N, C, H/s, W/s)
        sums = self.block_sums(x)
        per_input = curv * (self.weight**2)[:, None, None]
        dx = per_input.repeat_interleave(self.size, 2).repeat_interleave(self.size, 3)
        return dx, {"weight": (curv * sums**2).sum((0, 2, 3)), "bias": curv.sum((0, 2, 3))}


class Dense(Layer):
    """Fully connected; a spatial input is flattened in (C, H, W) order first."""

    def __init__(self, spec: A.Dense):
        super().__init__(spec.activation)
        self.weight = nn.Parameter(torch.zeros(spec.out_features, spec.in_features))
        self.bias = nn.Parameter(torch.zeros(spec.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(F.linear(x.flatten(1), self.weight, self.bias))  # (N, O)

    def backward_curvature(self, curv: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                           ) -> Curvatures:
        curv = self.curvature_before_activation(curv, y)  # (N, O)
        flat = x.flatten(1)
        dx = (curv @ self.weight**2).reshape(x.shape)
        return dx, {"weight": curv.T @ flat**2, "bias": curv.sum(0)}


class RBF(Layer):
    """Euclidean RBF output with the fixed centres of ``arch.rbf_centres``. It returns the
    NEGATED penalties -y_i = -sum_j (x_j - c_ij)^2, so its argmax is the prediction, as with
    logits. Nothing is trainable; its curvature is taken with the loss (``map_curvature``)."""

    def __init__(self, spec: A.RBF):
        super().__init__()
        centres = torch.from_numpy(A.rbf_centres_of(spec)).float()  # (K, F)
        self.register_buffer("centres", centres, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x.flatten(1)[:, None, :] - self.centres  # (N, K, F)
        return -(diff * diff).sum(dim=2)  # (N, K)


MODULES = {A.Conv: Conv, A.MaxPool: MaxPool, A.AvgPool: AvgPool, A.Subsample: Subsample,
           A.Dense: Dense, A.RBF: RBF}


class TorchNet(nn.Module):
    """The whole network: inputs (N, 1, H, W), outputs (N, K) whose argmax is the prediction."""

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        self.arch = arch
        for spec in arch.layers:
            self.add_module(spec.name, MODULES[type(spec)](spec))
        # (layer, max-pool computed before the layer's activation, or None): see forward
        self.stages: list[tuple[Layer, MaxPool | None]] = []
        layers = list(self.children())
        while layers:
            layer = layers.pop(0)
            if (isinstance(layer, Conv) and layer.activation is not None and layers
                    and isinstance(layers[0], MaxPool)):
                self.stages.append((layer, layers.pop(0)))
            else:
                self.stages.append((layer, None))
        self.to(dtype=dtype, device=device)
        self.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()})
        with torch.no_grad():
            for module in self.children():
                if getattr(module, "mask", None) is not None:
                    module.weight.mul_(module.mask)  # unconnected weights hold exact zeros

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A convolution and the max-pool after it run as conv, pool, activation, as the NumPy
        engine does: max commutes with every (non-decreasing) activation, and the activation
        touches a quarter of the values. For ReLU, outputs and gradients are conv -> ReLU ->
        pool's to the bit (a window's gradient goes to its first maximum either way, or is
        zero)."""
        for layer, pool in self.stages:
            x = layer(x) if pool is None else layer.activate(pool(layer.pre_activation(x)))
        return x

    def feature_maps(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Each arch layer's output, (N, C, H, W) or (N, F)."""
        maps = []
        for name, module in self.named_children():
            x = module(x)
            maps.append((name, x))
        return maps

    @torch.no_grad()
    def curvature(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """SDLM's diagonal Gauss-Newton curvature of the loss, averaged over the images of
        ``x`` (LeCun et al. 1998, appendix C), exactly as ``NumpyNet.curvature``."""
        names, outputs = zip(*self.feature_maps(x), strict=True)
        inputs = (x, *outputs[:-1])
        modules = list(self.children())
        if isinstance(modules[-1], RBF):  # the fixed RBF is part of the loss here
            curv = map_curvature(inputs[-1].flatten(1), modules[-1].centres)  # (N, F)
            modules.pop()
        else:
            curv = softmax_curvature(outputs[-1])  # (N, K)
        curv = curv / len(x)  # mean over images, as the gradients are
        found = {}
        for i in reversed(range(len(modules))):
            curv, per_param = modules[i].backward_curvature(curv, inputs[i], outputs[i])
            found.update({f"{names[i]}.{k}": h for k, h in per_param.items()})
        return found


def mps_available() -> bool:
    """Whether torch can compute on Apple silicon's GPU (Metal Performance Shaders)."""
    return torch.backends.mps.is_available()


def resolve_device(device: str) -> str:
    """``auto`` -> CUDA when torch sees a GPU, else Apple silicon's MPS, else CPU; a device
    that is asked for but absent is an error that says so."""
    if device not in DEVICES:
        raise Lenet5Error(f"unknown --device {device!r}; choose one of: {', '.join(DEVICES)}.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Lenet5Error("--device cuda needs a CUDA GPU, but PyTorch sees none (this torch is "
                          f"{torch.__version__}); use --device cpu or --device auto.")
    if device == "mps" and not mps_available():
        raise Lenet5Error("--device mps needs a Mac with Apple silicon (M1 or later, macOS 12.3 "
                          "or later) and a PyTorch built for it, but this torch "
                          f"({torch.__version__}) sees no MPS device; use --device cpu or "
                          "--device auto.")
    return device


class StepGraph:
    """One batch size's training step, recorded once as a CUDA graph and then replayed: the
    step's few dozen kernels start with one call instead of one each from Python, which on a GPU
    takes longer than they run. The graph reads fixed tensors, so each step first copies
    its rows and learning rate into them. As ``torch.cuda.graph`` asks, the steps before
    the recording run eagerly on a side stream, where cuDNN, cuBLAS and autograd do their
    lazy set-up."""

    EAGER_STEPS = 2

    def __init__(self, n: int, device: str):
        self.rows = torch.empty(n, dtype=torch.int64, device=device)
        self.lr = torch.empty((), dtype=torch.float32, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None  # set once a recording is whole
        self.eager_steps_run = 0

    def run(self, rows: torch.Tensor, lr: float,
            step: Callable[[torch.Tensor, torch.Tensor], None]) -> bool:
        """``step(rows, lr)``, eagerly, recorded or replayed; True where it was replayed."""
        self.rows.copy_(rows, non_blocking=True)
        self.lr.fill_(lr)
        if self.graph is not None:
            self.graph.replay()
            return True
        if self.eager_steps_run < self.EAGER_STEPS:
            self.eager_steps_run += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                step(self.rows, self.lr)
            torch.cuda.current_stream().wait_stream(side)
        else:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step(self.rows, self.lr)
            graph.replay()  # recording ran nothing
            self.graph = graph
        return False


class TorchEngine:
    """``TorchNet`` plus its optimizer behind the ``lenet5.engine.Engine`` interface. The
    training data stays on the device for the whole run; each step indexes it, and the
    metrics add up on the device until ``take_train_metrics`` reads them once.

    On CPU each batch is cut into one part per torch thread (``threads.part_slices``),
    computed at once on as many Python threads, each running torch on one thread, and the
    parts' gradients are added: torch releases the GIL, so the cores share every layer's
    work with one wait per step, where torch's own threads wait for each other in every
    operation (measurements: benchmarks/README.md)."""

    name = "torch"
    has_feature_maps = True

    def __init__(self, arch: A.Architecture, params: dict[str, np.ndarray],
                 optimizer: OptimizerSpec | None = None, device: str = "auto",
                 dtype: torch.dtype = torch.float32):
        self.arch = arch
        self.device = resolve_device(device)
        self.dtype = dtype
        self.net = TorchNet(arch, params, dtype, self.device)
        if self.device == "cpu":  # oneDNN's NHWC kernels are the faster ones here
            self.net.to(memory_format=torch.channels_last)
        self.optimizer = TorchOptimizer(optimizer or OptimizerSpec(),
                                        dict(self.net.named_parameters()))
        self.loss_fn = LOSSES[arch.loss]
        # loss sum, correct; MPS has no float64
        self._metrics = torch.zeros(2, dtype=torch.float32 if self.device == "mps"
                                    else torch.float64, device=self.device)
        self._seen = 0
        # CUDA: each batch size's step is recorded once as a graph and replayed (StepGraph);
        # None where every step runs op by op: CPU and MPS, and float64 weights (tests only),
        # whose fused kernels would get the graph's float32 rate
        self.step_graphs: dict[int, StepGraph] | None = (
            {} if self.device == "cuda" and dtype == torch.float32 else None)
        split = self.device == "cpu" and not user_set_threads()
        self.workers = torch.get_num_threads() if split else 1
        self._pool = ThreadPoolExecutor(self.workers - 1) if self.workers > 1 else None

    @contextlib.contextmanager
    def _one_thread_each(self):
        """Torch on one thread in this thread (and so in the workers, which set their own)
        for a whole step, its optimizer update included: a single parallel region would wake
        OpenMP's threads, which then spin on a core the workers need."""
        if self.workers == 1:
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def _in_parts(self, n: int, compute: Callable[[slice], object]) -> list:
        """``compute(part)`` for each part of range(n), at once on as many threads, each
        running torch on one thread (inside ``_one_thread_each``); the results in order."""
        parts = part_slices(n, self.workers)
        if len(parts) == 1:
            return [compute(parts[0])]

        def on_worker(_: int, part: slice) -> object:
            torch.set_num_threads(1)  # OpenMP's setting is per thread
            return compute(part)

        return run_parts(self._pool, parts, on_worker)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    @torch.inference_mode()
    def _outputs(self, x: np.ndarray) -> np.ndarray:
        return self.net(self._tensor(x)).cpu().numpy()

    def forward(self, x: np.ndarray) -> np.ndarray:
        with self._one_thread_each():
            outputs = self._in_parts(len(x), lambda part: self._outputs(x[part]))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def bind_training_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Copy the training data to the device (the loop calls this whenever it changes).
        Recorded step graphs read the bound tensors: data of the same shape is written over
        them, so that each epoch's new distortions need no new recording; data of another
        shape drops the graphs."""
        if self.step_graphs and self.train_x.shape == x.shape:
            self.train_x.copy_(torch.from_numpy(x))  # (N, 1, H, W)
            self.train_y.copy_(torch.from_numpy(y))
            return
        self.train_x = self._tensor(x)  # (N, 1, H, W); on CPU it shares x's memory
        self.train_y = torch.as_tensor(y, dtype=torch.int64, device=self.device)
        if self.step_graphs:
            self.step_graphs.clear()  # they read the tensors just replaced

    def estimate_curvature(self, rows: np.ndarray) -> None:
        """SDLM: the curvature for the pass about to start, from these bound rows."""
        self.optimizer.set_curvature(self.net.curvature(self.train_x[self._rows(rows)]))

    def _rows(self, rows: np.ndarray) -> torch.Tensor:
        """Row indices on the device. To CUDA through pinned memory, asynchronously: a plain
        copy from pageable memory would make every step wait for the GPU to catch up."""
        rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if self.device == "cuda":
            return rows.pin_memory().to(self.device, non_blocking=True)
        return rows.to(self.device)

    def _loss(self, rows: torch.Tensor) -> tuple:
        """(mean loss, correct) of the training rows ``rows``, on the device."""
        x, y = self.train_x.index_select(0, rows), self.train_y.index_select(0, rows)
        out = self.net(x)  # (B, K)
        return self.loss_fn(out, y), (out.argmax(dim=1) == y).sum()

    def _loss_and_grads(self, rows: torch.Tensor, batch_size: int) -> tuple:
        """(loss sum, correct, each parameter's gradient of the loss summed over these rows
        over ``batch_size``) for a part of a batch, its tensors left on the device."""
        loss, correct = self._loss(rows)
        grads = torch.autograd.grad(loss * (len(rows) / batch_size), self.optimizer.tensors)
        return loss.detach() * len(rows), correct, grads

    def _whole_step(self, rows: torch.Tensor, lr: float | torch.Tensor) -> None:
        """Forward, backward, update and the metrics' sums of one batch, on one thread."""
        loss, correct = self._loss(rows)
        self.optimizer.zero_grad()
        loss.backward()  # autograd accumulates into .grad directly
        self.optimizer.step(lr, batch_size=len(rows))
        with torch.no_grad():
            self._metrics[0] += loss.detach() * len(rows)
            self._metrics[1] += correct

    def train_step(self, batch: np.ndarray, lr: float) -> None:
        rows, n = self._rows(batch), len(batch)
        self._seen += n
        if self.step_graphs is not None:
            graph = self.step_graphs.get(n)
            if graph is None:
                graph = self.step_graphs[n] = StepGraph(n, self.device)
            if graph.run(rows, lr, self._whole_step):
                self.optimizer.steps += 1  # a replay runs no Python: count its update here
            return
        with self._one_thread_each():
            if self.workers == 1:
                self._whole_step(rows, lr)
                return
            parts = self._in_parts(n, lambda part: self._loss_and_grads(rows[part], n))
            for i, p in enumerate(self.optimizer.tensors):
                p.grad = torch.empty_like(p).copy_(parts[0][2][i])  # p's layout, as fused
                for _, _, grads in parts[1:]:  # optimizers expect
                    p.grad += grads[i]
            self.optimizer.step(lr, batch_size=n)
            with torch.no_grad():
                for loss_sum, correct, _ in parts:
                    self._metrics[0] += loss_sum
                    self._metrics[1] += correct

    def take_train_metrics(self) -> tuple[float, int, int]:
        loss_sum, correct = self._metrics.tolist()  # the epoch's one wait for the device
        seen = self._seen
        self._metrics.zero_()
        self._seen = 0
        return loss_sum, int(correct), seen

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: np.array(v.detach().cpu().numpy(), dtype=np.float32, order="C")
                for k, v in self.net.named_parameters()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.optimizer.load_state_dict(state)

    @torch.inference_mode()
    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        return [(name, m.cpu().numpy()) for name, m in self.net.feature_maps(self._tensor(x))]
