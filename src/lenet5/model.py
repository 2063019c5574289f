"""A trained model for notebooks and tools: load a file, feed raw images, get probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import checkpoint
from .arch import Architecture, arch_of
from .data.transforms import prepare_inputs
from .engine import Engine, batched_logits, make_engine
from .errors import Lenet5Error
from .files import is_onnx_file
from .outputs import probabilities

if TYPE_CHECKING:  # images, and scipy with them, load when a picture is read
    from .images.decode import Picture


def image_batch(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) from one image (28, 28) or a batch, channel axis (N, 1, 28, 28) or not."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    return images


class Model:
    """A network plus the input normalisation it was trained with. Images are MNIST-style:
    uint8 0-255 or float 0-1, bright ink on a dark background, (N, 28, 28) or (28, 28).
    ``normalization``: what the engine reads, where it is not the training's (an ONNX graph
    normalises inside and reads raw pixels)."""

    def __init__(self, engine: Engine, metadata: dict, normalization: dict | None = None):
        self.engine = engine
        self.metadata = metadata
        self.arch: Architecture = engine.arch
        self.classes: list[str] = list(metadata["classes"])
        self.normalization: dict = normalization or metadata["input_normalization"]

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """The array the engine reads: (N, 1, 32, 32) float32 for the trained network."""
        return prepare_inputs(image_batch(images), self.normalization)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return batched_logits(self.engine, self.inputs(images))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities."""
        return probabilities(self.logits(images))

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images).argmax(axis=1)

    def read(self, source: Picture, *, top_k: int = 3, threshold: float | None = None) -> dict:
        """Every digit in a picture (a path, bytes, a stream, a PIL image or an array, as
        `preprocess_image` takes), in reading order, as `lenet5 predict --json` answers:
        {"text", "digits": [{"label", "confidence", "box", "top"}], "label", "confidence",
        "top", "rejected"}. Something that is not a digit is refused ("label" and "text"
        None, "rejected" says why); `threshold` overrides the model's refusal threshold.
        Raises ImageError when the picture cannot be read or holds no ink."""
        from .reading import read

        return read(self, source, top_k=top_k, threshold=threshold).answer

    def feature_maps(self, images: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Every layer's output for these images: [(layer name, (N, C, H, W) or (N, F))]."""
        return self.engine.feature_maps(self.inputs(images))


def load(path: str | Path, engine: str | None = None, device: str = "auto") -> Model:
    """Load ``model.safetensors`` (or a run directory holding one) into either engine; with
    ``engine="onnx"`` run it, or a file from `lenet5 export`, through onnxruntime. The engine
    by default: onnx for an ``.onnx`` file, else numpy."""
    if engine is None:
        engine = "onnx" if is_onnx_file(path) else "numpy"
    if engine == "onnx":
        from .onnx_engine import load_onnx
        from .onnx_graph import RAW_PIXELS

        graph, metadata = load_onnx(path, device)
        return Model(graph, metadata, RAW_PIXELS)
    if is_onnx_file(path):
        raise Lenet5Error(f"{path} is an ONNX file, which the {engine} engine does not read; "
                          "run it with the onnx engine (--engine onnx; engine='onnx' in "
                          "Python), or give the model's .safetensors file.")
    params, metadata = checkpoint.load_model(path)
    net = make_engine(engine, arch_of(metadata), params, device=device)
    return Model(net, metadata)
