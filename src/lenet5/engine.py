"""The small interface the training loop and the public API drive, and the engine factory."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .arch import Architecture
from .errors import Lenet5Error
from .hparams import OptimizerSpec

ENGINES = ("numpy", "torch")
# Where users set BLAS/OpenMP thread counts; where any is set, lenet5 leaves threads alone.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# onnx runs an exported graph through onnxruntime (lenet5.export): predictions only, no training
INFERENCE_ENGINES = (*ENGINES, "onnx")


class Engine(Protocol):
    """One network plus its optimizer. Inputs are prepared (padded, normalised) float32
    arrays (N, 1, H, W); outputs (N, K) have the prediction at their argmax."""

    name: str
    device: str
    arch: Architecture

    def logits(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray: ...

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
                 ) -> tuple[float, np.ndarray]:
        """(sum of per-image losses, predicted labels)."""

    def bind_training_data(self, x: np.ndarray, y: np.ndarray) -> None:
        """Copy the training inputs where the engine computes (e.g. to the GPU). Called once
        for clean inputs, and each epoch for augmented ones, which the loop refills in place."""

    def start_epoch(self, order: np.ndarray) -> None:
        """Before each pass, with its shuffled row order: SDLM re-estimates its curvature on
        the first 500 rows; other optimizers do nothing."""

    def train_step(self, batch: np.ndarray, lr: float) -> None:
        """One optimizer step on the bound rows ``batch``; metrics accumulate on the engine's
        side so that no step has to wait for the device."""

    def take_train_metrics(self) -> tuple[float, int, int]:
        """(loss sum, correct, seen) since the last call."""

    def parameters(self) -> dict[str, np.ndarray]: ...

    def optimizer_state(self) -> dict[str, np.ndarray]: ...

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]: ...


def make_engine(name: str, arch: Architecture, params: dict[str, np.ndarray],
                optimizer: OptimizerSpec | None = None, device: str = "auto") -> Engine:
    if name == "numpy":
        if device == "cuda":
            raise Lenet5Error("--device cuda needs --engine torch; the numpy engine runs on CPU.")
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
