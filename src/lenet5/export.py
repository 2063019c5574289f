"""``lenet5 export``: a model file as a self-contained ONNX file, checked before it is written.

The graph (``onnx_graph``) must reproduce the NumPy engine's logits under onnxruntime, or
nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import checkpoint
from .arch import arch_of
from .engine import make_engine
from .errors import Lenet5Error
from .files import TEMPORARY, is_onnx_file, remove_abandoned, write_atomic
from .model import Model
from .onnx_engine import OnnxEngine
from .onnx_graph import OPSET, RAW_PIXELS, VIAS, to_onnx

# Largest |logit difference| accepted between the graph and the NumPy engine, relative to the
# largest |logit| when that exceeds 1: float32 sums in another order differ by ~1e-6 of it.
TOLERANCE = 1e-4


def export(model_path: str | Path, out: str | Path, via: str = "numpy",
           opset: int = OPSET) -> dict:
    """Write ``model_path`` (a model file or run directory) as ONNX to ``out``, after checking
    that onnxruntime reproduces the NumPy engine's logits; returns facts about the file. Only
    a file named .onnx is written (again): never the model itself, a photo, or a name no
    command reads back as ONNX."""
    if not str(out):
        raise Lenet5Error("-o is empty; name the file to write, e.g. model.onnx.")
    if Path(out).is_dir() or str(out).endswith(("/", os.sep)):  # Path drops a last "/"
        raise Lenet5Error(f"-o {out} is a folder; name the file to write, e.g. "
                          f"{Path(out) / 'model.onnx'}.")
    if not is_onnx_file(out):  # lenet5 (and most tools) know ONNX by its suffix
        stem = Path(out).stem.strip(".")
        named = Path(out).with_name(f"{stem if stem.lower() not in ('', 'onnx') else 'model'}"
                                    ".onnx")
        raise Lenet5Error(f"-o {out} does not end in .onnx, by which lenet5 knows an ONNX "
                          f"file; name it e.g. {named}.")
    params, metadata = checkpoint.load_model(model_path)
    data = to_onnx(params, metadata, via, opset).SerializeToString()
    arch = arch_of(metadata)
    reference = Model(make_engine("numpy", arch, params), metadata)
    graph = Model(OnnxEngine(arch, data, f"the graph for {out}"), metadata, RAW_PIXELS)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    expected, got = reference.logits(images), graph.logits(images)  # (64, K) each
    max_diff = float(np.abs(got - expected).max())
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not max_diff <= allowed:
        raise Lenet5Error(f"the exported graph's logits differ from the NumPy engine's by "
                          f"{max_diff:.3g} (more than {allowed:.3g}); {out} was not written. "
                          f"Try --via {next(v for v in VIAS if v != via)}, and please report "
                          "this.")
    remove_abandoned(Path(out).parent, TEMPORARY, {Path(out).name})  # killed exports' files
    write_atomic(Path(out), data)
    return {"path": str(out), "bytes": len(data), "via": via, "opset": opset,
            "arch": arch.name, "max_abs_logit_diff": max_diff}
