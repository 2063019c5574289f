"""onnxruntime as an inference-only engine for exported graphs (``--engine onnx``).

Its inputs are raw pixels (N, 1, 28, 28) float32 0-255 (``onnx_graph.RAW_PIXELS``), since
the graph pads and normalises them itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import arch as A
from . import checkpoint
from .engine import require_cpu
from .errors import Lenet5Error, ModelFileError
from .files import is_onnx_file
from .onnx_graph import INPUT, OUTPUT, graph_sha256, import_onnx, to_onnx


class OnnxEngine:
    """An exported graph run by onnxruntime on the CPU."""

    name = "onnx"
    device = "cpu"
    has_feature_maps = False

    def __init__(self, arch: A.Architecture, data: bytes, source: str):
        _, onnxruntime = import_onnx()
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        self.arch = arch
        try:
            self.session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        except (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
                ort_errors.InvalidProtobuf, ort_errors.NotImplemented) as exc:
            reason = str(exc).splitlines()[0]
            raise ModelFileError(f"onnxruntime cannot run {source} ({reason}); export it again "
                                 "with `lenet5 export`.") from None

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: x})[0]

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        raise Lenet5Error("feature maps are not available for --engine onnx (the graph "
                          "outputs logits only); use --engine numpy or torch.")


def read_onnx(path: str | Path) -> tuple[bytes, dict]:
    """(serialised graph, lenet5 metadata) of an exported file; clear errors when unusable."""
    onnx, _ = import_onnx()
    from google.protobuf.message import DecodeError

    try:
        data = Path(path).read_bytes()
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path} ({exc.strerror or exc}); pass an .onnx file "
                             "written by `lenet5 export`.") from None
    except (DecodeError, onnx.checker.ValidationError) as exc:
        reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path} is not a valid ONNX file ({reason}); it may be truncated "
                             "or corrupt: export it again with `lenet5 export`.") from None
    metadata = {p.key: p.value for p in proto.metadata_props}
    again = "export it again with `lenet5 export`"
    graph_checksum = metadata.get(checkpoint.GRAPH_CHECKSUM)
    if graph_checksum is not None and graph_checksum != graph_sha256(proto.graph):
        raise ModelFileError(f"{path} is damaged: its graph does not match the checksum stored "
                             f"in it ({checkpoint.GRAPH_CHECKSUM}); {again}.")
    checkpoint.check_metadata_checksum(Path(path), metadata, again)
    return data, checkpoint.check_metadata(Path(path), metadata, "it is truncated or was not "
                                           "written by `lenet5 export`: export it again")


def load_onnx(path: str | Path, device: str = "auto") -> tuple[OnnxEngine, dict]:
    """(engine, metadata) for an ``.onnx`` file, or a model file / run directory exported in
    memory."""
    require_cpu(device, "--engine onnx runs on CPU")
    if is_onnx_file(path):  # a run directory named x.onnx is a run directory
        data, metadata = read_onnx(path)
    else:
        params, metadata = checkpoint.load_model(path)
        data = to_onnx(params, metadata).SerializeToString()
    return OnnxEngine(A.arch_of(metadata), data, str(path)), metadata
