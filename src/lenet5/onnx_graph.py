"""A model as an ONNX graph that needs nothing but itself.

Input ``image`` float32 (N, 1, 28, 28) holding raw pixel values 0-255 with MNIST's polarity
(ink bright); padding to 32x32 and the model's input normalisation happen inside; output
``logits`` (N, 10) whose argmax is the prediction (for lenet5-1998, the negated RBF
distances). The batch dimension is dynamic.

Two writers build the same graph: ``numpy_graph`` lays it out node by node from the
``lenet5.arch`` description with ``onnx.helper`` (no torch), ``torch_model`` traces the torch
engine's network with ``torch.onnx.export``. ``to_onnx`` adds the model file's metadata
(arch, dataset, classes, test accuracy, ...) as metadata props and runs ``onnx.checker``.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from . import arch as A
from .checkpoint import GRAPH_CHECKSUM, METADATA_CHECKSUM, encode_metadata, metadata_sha256
from .data.transforms import mean_std
from .errors import Lenet5Error
from .version import __version__

if TYPE_CHECKING:  # onnx is an extra: imported where it is used
    import onnx

OPSET = 17  # default opset: ONNX 1.12 (2022), run by onnxruntime 1.12 and newer
MIN_OPSET = 13  # Pad's pads and ReduceSum's axes became inputs in opset 13
TORCH_MAX_OPSET = 20  # the newest opset torch's TorchScript exporter writes (torch 2.13)
VIAS = ("numpy", "torch")
INPUT, OUTPUT = "image", "logits"
# prepare_inputs with this "normalisation" yields the graph's input: (N, 1, 28, 28), 0-255.
RAW_PIXELS = {"kind": "mean_std", "pad": 0, "mean": 0.0, "std": 1.0 / 255.0}


def import_onnx() -> tuple[ModuleType, ModuleType]:
    """(onnx, onnxruntime), or a Lenet5Error that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):  # Ctrl-C while its
            raise KeyboardInterrupt from None  # extension loaded: "initialization failed"
        raise Lenet5Error(f"ONNX needs the onnx and onnxruntime packages ({exc}); install them "
                          "with `pip install -e '.[onnx]' -c constraints.txt`.") from None
    return onnx, onnxruntime


def input_affine(norm: dict) -> tuple[float, float]:
    """(scale, shift) such that the network input is padded_pixels * scale - shift, the same
    float32 steps as ``data.transforms.prepare_inputs`` on uint8 images."""
    mean, std = mean_std(norm)
    return 1.0 / (255.0 * std), mean / std


# --- the NumPy path: the graph node by node -----------------------------------------------

PLAIN_ACTIVATIONS = {A.RELU: "Relu", A.TANH: "Tanh", A.SIGMOID: "Sigmoid"}  # one ONNX op each

class _GraphBuilder:
    """Nodes and initializers of one graph; each node's output is named after the node."""

    def __init__(self, params: dict[str, np.ndarray]):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.params = params
        self.nodes, self.initializers = [], []

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def bias(self, layer: A.Layer) -> str:
        return self.const(f"{layer.name}.bias", self.params[f"{layer.name}.bias"])

    def activation(self, x: str, kind: str | None, prefix: str) -> str:
        if kind in PLAIN_ACTIVATIONS:
            return self.node(PLAIN_ACTIVATIONS[kind], [x], f"{prefix}.{kind}")
        if kind == A.SCALED_TANH:  # TANH_AMPLITUDE tanh(TANH_SLOPE a) = 1.7159 tanh(2a/3)
            a = self.node("Mul", [x, self.const(f"{prefix}.slope", A.TANH_SLOPE)],
                          f"{prefix}.scaled")
            t = self.node("Tanh", [a], f"{prefix}.tanh")
            return self.node("Mul", [t, self.const(f"{prefix}.amplitude", A.TANH_AMPLITUDE)],
                             f"{prefix}.act")
        return x


def _conv(g: _GraphBuilder, layer: A.Conv, x: str) -> str:
    weight = g.params[f"{layer.name}.weight"]  # (O, C, k, k)
    if layer.table is not None:  # sparse C3: weights outside the table are ignored
        weight = weight * np.array(layer.table)[:, :, None, None]
    return g.node("Conv", [x, g.const(f"{layer.name}.weight", weight), g.bias(layer)],
                  f"{layer.name}.conv")


def _max_pool(g: _GraphBuilder, layer: A.MaxPool, x: str) -> str:
    s = layer.size
    return g.node("MaxPool", [x], f"{layer.name}.pool", kernel_shape=[s, s], strides=[s, s])


def _avg_pool(g: _GraphBuilder, layer: A.AvgPool, x: str) -> str:
    s = layer.size
    return g.node("AveragePool", [x], f"{layer.name}.pool", kernel_shape=[s, s], strides=[s, s])


def _subsample(g: _GraphBuilder, layer: A.Subsample, x: str) -> str:
    """The sum of each s x s block times a per-map coefficient, plus a per-map bias: a
    depthwise convolution whose kernel is the coefficient everywhere."""
    s, c = layer.size, layer.channels
    kernel = np.broadcast_to(g.params[f"{layer.name}.weight"][:, None, None, None], (c, 1, s, s))
    return g.node("Conv", [x, g.const(f"{layer.name}.weight", kernel), g.bias(layer)],
                  f"{layer.name}.subsample", group=c, kernel_shape=[s, s], strides=[s, s])


def _dense(g: _GraphBuilder, layer: A.Dense, x: str) -> str:
    weight = g.const(f"{layer.name}.weight", g.params[f"{layer.name}.weight"])
    return g.node("Gemm", [x, weight, g.bias(layer)], f"{layer.name}.gemm", transB=1)


def _rbf(g: _GraphBuilder, layer: A.RBF, x: str) -> str:
    """Negated squared distances to the fixed +-1 centres (K, F)."""
    name = layer.name
    x = g.node("Unsqueeze", [x, g.const(f"{name}.axis", [1], np.int64)], f"{name}.rows")
    d = g.node("Sub", [x, g.const(f"{name}.centres", A.rbf_centres_of(layer))], f"{name}.diff")
    d = g.node("Mul", [d, d], f"{name}.squared")  # (N, K, F)
    d = g.node("ReduceSum", [d, g.const(f"{name}.sum_axis", [2], np.int64)],
               f"{name}.distance", keepdims=0)  # (N, K)
    return g.node("Neg", [d], f"{name}.negated")


NODES = {A.Conv: _conv, A.MaxPool: _max_pool, A.AvgPool: _avg_pool, A.Subsample: _subsample,
         A.Dense: _dense, A.RBF: _rbf}


def numpy_graph(arch: A.Architecture, params: dict[str, np.ndarray], norm: dict
                ) -> onnx.GraphProto:
    """The whole network as an ``onnx.GraphProto``, from the arch description alone."""
    from onnx import TensorProto

    g = _GraphBuilder(params)
    p = norm["pad"]
    scale, shift = input_affine(norm)
    x = g.node("Pad", [INPUT, g.const("pads", [0, 0, p, p, 0, 0, p, p], np.int64)], "padded")
    x = g.node("Mul", [x, g.const("input_scale", scale)], "scaled")  # (N, 1, 32, 32)
    x = g.node("Sub", [x, g.const("input_shift", shift)], "normalized")
    spatial = True
    for layer in arch.layers:
        if spatial and isinstance(layer, A.VECTOR_LAYERS):  # (N, C, H, W) -> (N, C*H*W)
            x = g.node("Flatten", [x], f"{layer.name}.flatten", axis=1)  # in (C, H, W) order
            spatial = False
        x = NODES[type(layer)](g, layer, x)
        x = g.activation(x, getattr(layer, "activation", None), layer.name)
    g.node("Identity", [x], OUTPUT)
    helper = g.helper
    return helper.make_graph(
        g.nodes, arch.name, initializer=g.initializers,
        inputs=[helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, 28, 28])],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                               ["N", arch.num_classes])])


# --- the torch path: torch.onnx.export on the torch engine's network ----------------------

def torch_model(arch: A.Architecture, params: dict[str, np.ndarray], norm: dict, opset: int
                ) -> onnx.ModelProto:
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

    p = norm["pad"]
    scale, shift = input_affine(norm)
    shift = torch.as_tensor(shift, dtype=torch.float32)  # a scalar, or an image (32, 32)

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


# --- the model file as a checked ONNX model ------------------------------------------------

def to_onnx(params: dict[str, np.ndarray], metadata: dict, via: str = "numpy",
            opset: int = OPSET) -> onnx.ModelProto:
    """A checked ``onnx.ModelProto`` of this model; the model file's metadata (arch, dataset,
    classes, input_normalization, test_accuracy, ...) becomes its metadata props."""
    onnx, _ = import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if via == "torch" and not MIN_OPSET <= opset <= min(newest, TORCH_MAX_OPSET):
        numpy_writes_it = MIN_OPSET <= opset <= newest
        raise Lenet5Error(f"--opset {opset} is not supported with --via torch (torch writes "
                          f"opsets up to {TORCH_MAX_OPSET}); choose {MIN_OPSET} to "
                          f"{min(newest, TORCH_MAX_OPSET)}"
                          + (", or --via numpy." if numpy_writes_it else "."))
    if not MIN_OPSET <= opset <= newest:
        raise Lenet5Error(f"--opset {opset} is not supported; choose {MIN_OPSET} to {newest} "
                          f"(default {OPSET}).")
    arch = A.arch_of(metadata)
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
    props = {k: v for k, v in metadata.items()
             if k not in ("format", "format_version", METADATA_CHECKSUM)}
    props.update(export_via=via, exported_by=f"lenet5 {__version__}",
                 **{GRAPH_CHECKSUM: graph_sha256(proto.graph)})
    encoded = encode_metadata(props)
    onnx.helper.set_model_props(proto, {**encoded, METADATA_CHECKSUM: metadata_sha256(encoded)})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def graph_sha256(graph: onnx.GraphProto) -> str:
    """SHA-256 of the graph (its nodes and weights) as serialised: a byte changed in an
    exported file's weights still makes a valid graph, one that answers wrong."""
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()
