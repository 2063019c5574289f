"""The small interface the training loop and the public API drive, and the engine factory.

An engine is one network plus its optimizer, behind the methods of ``Engine``: the NumPy
engine (``lenet5.numpy_engine``), the torch engine (``lenet5.torch_engine``) and, for
inference only, onnxruntime (``lenet5.onnx_engine``). Batching over a dataset is done here,
once, for every engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from .arch import Architecture
from .errors import Lenet5Error
from .hparams import OptimizerSpec
from .outputs import mean_loss

ENGINES = ("numpy", "torch")
# onnx runs an exported graph through onnxruntime (lenet5.export): predictions only, no training
INFERENCE_ENGINES = (*ENGINES, "onnx")
EVAL_BATCH = 1000  # images per forward pass when a whole dataset is run


class Engine(Protocol):
    """Inputs are prepared (padded, normalised) float32 arrays (N, 1, H, W); outputs (N, K)
    have the prediction at their argmax."""

    name: str
    device: str
    arch: Architecture
    has_feature_maps: bool  # whether feature_maps answers (an ONNX graph outputs logits only)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The outputs of one batch, inference only."""

    def bind_training_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Copy the training inputs where the engine computes (e.g. to the GPU). Called once
        for clean inputs, and each epoch for augmented ones, which the loop refills in place.
        Whoever changes bound inputs binds them again before the next step: an engine may
        compute on a copy made at binding (the GPU's, or a NumPy worker process's view)."""

    def estimate_curvature(self, rows: np.ndarray) -> None:
        """SDLM, before each pass: re-estimate the curvature on these bound rows."""

    def train_step(self, batch: np.ndarray, lr: float) -> None:
        """One optimizer step on the bound rows ``batch``; metrics accumulate on the engine's
        side so that no step has to wait for the device."""

    def take_train_metrics(self) -> tuple[float, int, int]:
        """(loss sum, correct, seen) since the last call."""

    def parameters(self) -> dict[str, np.ndarray]: ...

    def optimizer_state(self) -> dict[str, np.ndarray]: ...

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]: ...


def _batches(engine: Engine, x: np.ndarray, batch_size: int) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, their outputs (B, K)) for all of ``x``, ``batch_size`` images at a time."""
    for i in range(0, len(x), batch_size):
        rows = slice(i, i + batch_size)
        yield rows, engine.forward(x[rows])


def batched_logits(engine: Engine, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The outputs (N, K) for all of ``x`` (none for none: a picture may hold no candidate)."""
    outputs = [out for _, out in _batches(engine, x, batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, engine.arch.num_classes),
                                                            np.float32)


def evaluate(engine: Engine, x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH
             ) -> tuple[float, np.ndarray]:
    """(sum of per-image losses, predicted labels) over all of ``x``; the loss adds up batch
    by batch, each batch's mean in the outputs' dtype, as the NumPy engine's training does."""
    loss_sum, predictions = 0.0, []
    for rows, out in _batches(engine, x, batch_size):
        loss_sum += mean_loss(out, y[rows], engine.arch.loss) * len(out)
        predictions.append(out.argmax(axis=1))
    return loss_sum, np.concatenate(predictions)


def require_cpu(device: str, why: str) -> None:
    """Refuse a --device other than auto or cpu for an engine that runs on the CPU only,
    saying `why` (which engine, and that it runs on the CPU)."""
    if device not in ("auto", "cpu"):
        raise Lenet5Error(f"--device {device} needs --engine torch; {why}.")


def make_engine(name: str, arch: Architecture, params: dict[str, np.ndarray],
                optimizer: OptimizerSpec | None = None, device: str = "auto") -> Engine:
    if name == "numpy":
        require_cpu(device, "the numpy engine runs on the CPU")
        from .numpy_engine.model import NumpyEngine

        return NumpyEngine(arch, params, optimizer)
    if name == "torch":
        try:
            from .torch_engine import TorchEngine
        except ImportError as exc:
            raise Lenet5Error(
                f"the torch engine (--engine torch, engine=\"torch\") needs PyTorch ({exc}); "
                "install it with `pip install -e '.[torch]' -c constraints.txt`.") from None
        return TorchEngine(arch, params, optimizer, device)
    if name == "onnx":
        raise Lenet5Error("--engine onnx only runs trained models (evaluate, predict); train "
                          "with --engine numpy or torch.")
    raise Lenet5Error(f"unknown --engine {name!r}; choose one of: {', '.join(ENGINES)}.")
