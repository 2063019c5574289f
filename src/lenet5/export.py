"""ONNX export, and onnxruntime as an inference-only engine.

An exported graph needs nothing but itself: input ``image`` float32 (N, 1, 28, 28) holding raw
pixel values 0-255 with MNIST's polarity (ink bright); padding to 32x32 and the model's input
normalisation happen inside; output ``logits`` (N, 10) whose argmax is the prediction (for
lenet5-1998, the negated RBF distances). The batch dimension is dynamic.

Two writers build the same graph: ``numpy_graph`` lays it out node by node from the
``lenet5.arch`` description with ``onnx.helper`` (no torch), ``torch_model`` traces the torch
engine's network with ``torch.onnx.export``. ``to_onnx`` adds the model file's metadata
(arch, dataset, classes, test accuracy, ...) as metadata props and runs ``onnx.checker``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from . import __version__, checkpoint
from . import arch as A
from .data.transforms import mean_std, prepare_inputs
from .engine import make_engine
from .errors import Lenet5Error, ModelFileError
from .model import Model, image_batch
from .numpy_engine.layers import ScaledTanh

OPSET = 17  # default opset: ONNX 1.12 (2022), run by onnxruntime 1.12 and newer
MIN_OPSET = 13  # Pad's pads and ReduceSum's axes became inputs in opset 13
TORCH_MAX_OPSET = 20  # the newest opset torch's TorchScript exporter writes (torch 2.13)
VIAS = ("numpy", "torch")
INPUT, OUTPUT = "image", "logits"
# Largest |logit difference| accepted between the graph and the NumPy engine, relative to the
# largest |logit| when that exceeds 1: float32 sums in another order differ by ~1e-6 of it.
TOLERANCE = 1e-4
# prepare_inputs with this "normalisation" yields the graph's input: (N, 1, 28, 28), 0-255.
RAW_PIXELS = {"kind": "mean_std", "pad": 0, "mean": 0.0, "std": 1.0 / 255.0}


def _import_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise Lenet5Error(f"ONNX needs the onnx and onnxruntime packages ({exc}); install them "
                          "with `pip install -e '.[onnx]'`.") from None
    return onnx, onnxruntime


def input_affine(norm: dict) -> tuple[float, float]:
    """(scale, shift) such that the network input is padded_pixels * scale - shift, the same
    float32 steps as ``data.transforms.prepare_inputs`` on uint8 images."""
    mean, std = mean_std(norm)
    return 1.0 / (255.0 * std), mean / std


# --- the NumPy path: the graph node by node -----------------------------------------------

def numpy_graph(arch: A.Architecture, params: dict[str, np.ndarray], norm: dict):
    """The whole network as an ``onnx.GraphProto``, from the arch description alone."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []

    def const(name: str, value, dtype=np.float32) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def activation(x: str, kind: str | None, prefix: str) -> str:
        if kind == A.RELU:
            return node("Relu", [x], f"{prefix}.relu")
        if kind == A.SCALED_TANH:  # A tanh(S a) = 1.7159 tanh(2a/3)
            a = node("Mul", [x, const(f"{prefix}.two_thirds", ScaledTanh.S)], f"{prefix}.scaled")
            t = node("Tanh", [a], f"{prefix}.tanh")
            return node("Mul", [t, const(f"{prefix}.amplitude", ScaledTanh.A)], f"{prefix}.act")
        return x

    p = norm["pad"]
    scale, shift = input_affine(norm)
    x = node("Pad", [INPUT, const("pads", [0, 0, p, p, 0, 0, p, p], np.int64)], "padded")
    x = node("Mul", [x, const("input_scale", scale)], "scaled")  # (N, 1, 32, 32)
    x = node("Sub", [x, const("input_shift", shift)], "normalized")
    spatial = True
    for layer in arch.layers:
        name = layer.name
        if spatial and isinstance(layer, (A.Dense, A.RBF)):  # (N, C, H, W) -> (N, C*H*W)
            x = node("Flatten", [x], f"{name}.flatten", axis=1)  # in (C, H, W) order
            spatial = False
        if isinstance(layer, A.Conv):
            weight = params[f"{name}.weight"]  # (O, C, k, k)
            if layer.table is not None:  # sparse C3: weights outside the table are ignored
                weight = weight * np.array(layer.table)[:, :, None, None]
            x = node("Conv", [x, const(f"{name}.weight", weight), const(f"{name}.bias",
                     params[f"{name}.bias"])], f"{name}.conv")
        elif isinstance(layer, A.MaxPool):
            s = layer.size
            x = node("MaxPool", [x], f"{name}.pool", kernel_shape=[s, s], strides=[s, s])
        elif isinstance(layer, A.Subsample):
            # sum of each s x s block times a per-map coefficient, plus a per-map bias: a
            # depthwise convolution whose kernel is the coefficient everywhere
            s, c = layer.size, layer.channels
            kernel = np.broadcast_to(params[f"{name}.weight"][:, None, None, None], (c, 1, s, s))
            x = node("Conv", [x, const(f"{name}.weight", kernel), const(f"{name}.bias",
                     params[f"{name}.bias"])], f"{name}.subsample", group=c,
                     kernel_shape=[s, s], strides=[s, s])
        elif isinstance(layer, A.Dense):
            x = node("Gemm", [x, const(f"{name}.weight", params[f"{name}.weight"]),
                     const(f"{name}.bias", params[f"{name}.bias"])], f"{name}.gemm", transB=1)
        elif isinstance(layer, A.RBF):
            centres = A.rbf_centres_of(layer)  # (K, F) fixed +-1 bitmaps
            x = node("Unsqueeze", [x, const(f"{name}.axis", [1], np.int64)], f"{name}.rows")
            d = node("Sub", [x, const(f"{name}.centres", centres)], f"{name}.diff")  # (N,K,F)
            d = node("Mul", [d, d], f"{name}.squared")
            d = node("ReduceSum", [d, const(f"{name}.sum_axis", [2], np.int64)],
                     f"{name}.distance", keepdims=0)  # (N, K)
            x = node("Neg", [d], f"{name}.negated")
        else:
            raise Lenet5Error(f"ONNX export does not know layer type {type(layer).__name__}.")
        x = activation(x, getattr(layer, "activation", None), name)
    nodes.append(helper.make_node("Identity", [x], [OUTPUT], name=OUTPUT))
    return helper.make_graph(
        nodes, arch.name, initializer=initializers,
        inputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, 28, 28])],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                               ["N", arch.num_classes])])


# --- the torch path: torch.onnx.export on the torch engine's network ----------------------

def torch_model(arch: A.Architecture, params: dict[str, np.ndarray], norm: dict, opset: int):
    """The torch engine's network behind the same padding and normalisation, as ONNX."""
    try:
        import torch
        import torch.nn.functional as F

        from .torch_engine.model import TorchNet
    except ImportError as exc:
        raise Lenet5Error(f"--via torch needs PyTorch ({exc}); install it with "
                          "`pip install -e '.[torch]' -c constraints.txt`, or use --via numpy."
                          ) from None
    import onnx

    if opset > TORCH_MAX_OPSET:
        raise Lenet5Error(f"--via torch writes opsets up to {TORCH_MAX_OPSET}, not {opset}; "
                          f"choose --opset {TORCH_MAX_OPSET} or lower, or --via numpy.")
    p = norm["pad"]
    scale, shift = input_affine(norm)

    class RawPixelNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TorchNet(arch, params)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = F.pad(image, (p, p, p, p))  # (N, 1, 32, 32)
            return self.net(x * scale - shift)

    buffer = io.BytesIO()
    # The TorchScript exporter: the newer dynamo exporter needs onnxscript, which lenet5 does
    # not depend on. Its deprecation notice, and its note that the Slice it makes for F.pad
    # cannot be constant-folded, are for developers, not for a user's terminal.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(RawPixelNet().eval(), (torch.zeros(1, 1, 28, 28),), buffer,
                          dynamo=False, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}},
                          opset_version=opset)
    return onnx.load_model_from_string(buffer.getvalue())


# --- export -------------------------------------------------------------------------------

def to_onnx(params: dict[str, np.ndarray], metadata: dict, via: str = "numpy",
            opset: int = OPSET):
    """A checked ``onnx.ModelProto`` of this model; the model file's metadata (arch, dataset,
    classes, input_normalization, test_accuracy, ...) becomes its metadata props."""
    onnx, _ = _import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise Lenet5Error(f"--opset {opset} is not supported; choose {MIN_OPSET} to {newest} "
                          f"(default {OPSET}).")
    arch = A.get_arch(metadata["arch"])
    norm = metadata["input_normalization"]
    if via == "numpy":
        opsets = [onnx.helper.make_opsetid("", opset)]
        proto = onnx.helper.make_model(
            numpy_graph(arch, params, norm), opset_imports=opsets,
            ir_version=onnx.helper.find_min_ir_version_for(opsets))  # oldest IR: widest reach
    elif via == "torch":
        proto = torch_model(arch, params, norm, opset)
    else:
        raise Lenet5Error(f"unknown --via {via!r}; choose one of: {', '.join(VIAS)}.")
    proto.producer_name, proto.producer_version = "lenet5", __version__
    proto.doc_string = (f"{arch.name} ({arch.description}). Input {INPUT!r}: float32 "
                        "(N, 1, 28, 28), raw pixels 0-255, ink bright on dark. Output "
                        f"{OUTPUT!r}: (N, {arch.num_classes}), argmax = predicted class.")
    props = {k: v for k, v in metadata.items() if k not in ("format", "format_version")}
    props.update(export_via=via, exported_by=f"lenet5 {__version__}")
    onnx.helper.set_model_props(proto, checkpoint._encode(props))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model_path: str | Path, out: str | Path, via: str = "numpy",
           opset: int = OPSET) -> dict:
    """Write ``model_path`` (a model file or run directory) as ONNX to ``out``, after checking
    that onnxruntime reproduces the NumPy engine's logits; returns facts about the file."""
    if Path(out).is_dir():
        raise Lenet5Error(f"-o {out} is a folder; name the file to write, e.g. "
                          f"{Path(out) / 'model.onnx'}.")
    params, metadata = checkpoint.load_model(model_path)
    data = to_onnx(params, metadata, via, opset).SerializeToString()
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    engine = make_engine("numpy", A.get_arch(metadata["arch"]), params)
    expected = Model(engine, metadata).logits(images)  # (64, K)
    got = onnx_model(data, metadata, f"the graph for {out}").logits(images)
    max_diff = float(np.abs(got - expected).max())
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if not max_diff <= allowed:
        raise Lenet5Error(f"the exported graph's logits differ from the NumPy engine's by "
                          f"{max_diff:.3g} (more than {allowed:.3g}); {out} was not written. "
                          "Try --via numpy, and please report this.")
    checkpoint.write_atomic(Path(out), data)
    return {"path": str(out), "bytes": len(data), "via": via, "opset": opset,
            "arch": metadata["arch"], "max_abs_logit_diff": max_diff}


# --- onnxruntime as an inference engine ---------------------------------------------------

class OnnxEngine:
    """An exported graph run by onnxruntime (CPU). Inference only: its inputs are raw pixels
    (N, 1, 28, 28) float32 0-255, since the graph pads and normalises them itself."""

    name = "onnx"
    device = "cpu"

    def __init__(self, arch: A.Architecture, data: bytes, source: str):
        _, onnxruntime = _import_onnx()
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        self.arch = arch
        try:
            self.session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        except (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
                ort_errors.InvalidProtobuf, ort_errors.NotImplemented) as exc:
            reason = str(exc).splitlines()[0]
            raise ModelFileError(f"onnxruntime cannot run {source} ({reason}); export it again "
                                 "with `lenet5 export`.") from None

    def logits(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        return np.concatenate([self.session.run([OUTPUT], {INPUT: x[i:i + batch_size]})[0]
                               for i in range(0, len(x), batch_size)])

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
                 ) -> tuple[float, np.ndarray]:
        """(sum of per-image losses, predicted labels); the loss is the NumPy engine's."""
        from .numpy_engine.model import LOSSES

        out = self.logits(x, batch_size)  # (N, K)
        return LOSSES[self.arch.loss](out, y)[0] * len(out), out.argmax(axis=1)

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        raise Lenet5Error("feature maps are not available for --engine onnx (the graph "
                          "outputs logits only); use --engine numpy or torch.")


class OnnxModel(Model):
    """A ``Model`` whose engine is onnxruntime: it feeds the graph raw pixels."""

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """The (N, 1, 28, 28) float32 0-255 array the graph reads."""
        return prepare_inputs(image_batch(images), RAW_PIXELS)


def onnx_model(data: bytes, metadata: dict, source: str) -> OnnxModel:
    return OnnxModel(OnnxEngine(A.get_arch(metadata["arch"]), data, source), metadata)


def read_onnx(path: str | Path) -> tuple[bytes, dict]:
    """(serialised graph, lenet5 metadata) of an exported file; clear errors when unusable."""
    onnx, _ = _import_onnx()
    from google.protobuf.message import DecodeError

    try:
        data = Path(path).read_bytes()
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path} ({exc.strerror or exc}); pass an .onnx file "
                             "written by `lenet5 export`.") from None
    except (DecodeError, onnx.checker.ValidationError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path} is not a valid ONNX file ({reason}); it may be truncated "
                             "or corrupt: export it again with `lenet5 export`.") from None
    metadata = checkpoint._decode({p.key: p.value for p in proto.metadata_props})
    missing = [k for k in ("arch", "classes", "input_normalization") if k not in metadata]
    if missing:
        raise ModelFileError(f"{path} lacks lenet5 metadata ({', '.join(missing)}); it is "
                             "truncated or was not written by `lenet5 export`: export it again.")
    return data, metadata


def load_onnx(path: str | Path, device: str = "auto") -> OnnxModel:
    """An ``.onnx`` file, or a model file / run directory exported in memory, run by
    onnxruntime."""
    if device == "cuda":
        raise Lenet5Error("--device cuda needs --engine torch; --engine onnx runs on CPU.")
    if Path(path).suffix.lower() == ".onnx":
        data, metadata = read_onnx(path)
    else:
        params, metadata = checkpoint.load_model(path)
        data = to_onnx(params, metadata).SerializeToString()
    return onnx_model(data, metadata, str(path))
