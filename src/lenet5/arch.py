"""Engine-neutral description of each LeNet-5 architecture.

Both engines build their networks from these descriptions, and model files store parameters
under the names given here (``C1.weight``, ``C1.bias``, ...), so a file written by one engine
loads in the other. Nothing here computes activations: shapes, counts and initial values only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import Lenet5Error

# Activations (each engine maps these names to its own implementation)
RELU = "relu"
TANH = "tanh"
SIGMOID = "sigmoid"
SCALED_TANH = "scaled_tanh"  # f(a) = TANH_AMPLITUDE tanh(TANH_SLOPE a)
ACTIVATIONS = (RELU, TANH, SIGMOID, SCALED_TANH)
# The modern network's variants (the tutorials' comparisons): its activation and pooling
MODERN_ACTIVATIONS = (RELU, TANH, SIGMOID)
POOLS = ("max", "avg")
# LeCun et al. 1998, section II-A and appendix A: f(a) = 1.7159 tanh(2a/3), so f(+-1) = +-1
# and targets of +-1 sit where the curvature is largest.
TANH_AMPLITUDE, TANH_SLOPE = 1.7159, 2.0 / 3.0

# Losses: softmax cross-entropy, and the 1998 MAP criterion (section II-C, eq. 9) on the RBF
# penalties, E = y_D + log(e^-j + sum_i e^-y_i). The paper only says j is a positive constant.
# Read as a class, the e^-j term is a "rubbish" class whose penalty is fixed at j; a small j
# lets the competitive term push up only penalties already nearly as small as j (outputs close
# to a wrong centre), while y_D does most of the work, as in the paper's MSE criterion (eq. 8).
# 0.1 is also the value reimplementations commonly use.
LOSSES = ("cross_entropy", "map")
MAP_J = 0.1
# The label of a picture that is no class (a made-up non-digit, ``data.nondigits``): its target
# is the uniform distribution under cross-entropy, the paper's "rubbish" class under MAP.
NONDIGIT = -1


@dataclass(frozen=True)
class Conv:
    """Valid 2-D convolution, stride 1, square kernel, optional activation after it."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    activation: str | None
    # (out_channels, in_channels) bool: which input maps feed each output map; None = all.
    table: tuple[tuple[bool, ...], ...] | None = None

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _, h, w = shape
        return self.out_channels, h - self.kernel + 1, w - self.kernel + 1

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.kernel
        return {"weight": (self.out_channels, self.in_channels, k, k),
                "bias": (self.out_channels,)}

    def fan_in(self) -> np.ndarray | int:
        """Inputs feeding one unit of each output map (a sparse conv's maps differ)."""
        if self.table is None:
            return self.in_channels * self.kernel**2
        return np.array([sum(row) for row in self.table]) * self.kernel**2

    def counts(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(trainable parameters, connections) for this layer's output ``shape``."""
        params = connected_inputs(self) * self.kernel**2 + self.out_channels
        return params, params * shape[1] * shape[2]


@dataclass(frozen=True)
class MaxPool:
    name: str
    size: int = 2

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return c, h // self.size, w // self.size

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def counts(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return 0, self.size**2 * shape[0] * shape[1] * shape[2]


@dataclass(frozen=True)
class AvgPool:
    """The mean of each size x size block, nothing trainable (the tutorials' "average
    pooling", where the 1998 network's sub-sampling had a coefficient and a bias)."""

    name: str
    size: int = 2

    output_shape = MaxPool.output_shape
    param_shapes = MaxPool.param_shapes
    counts = MaxPool.counts


@dataclass(frozen=True)
class Subsample:
    """1998 sub-sampling: sum of each size x size block times a per-map coefficient plus bias."""

    name: str
    channels: int
    size: int = 2
    activation: str | None = SCALED_TANH

    output_shape = MaxPool.output_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.channels,), "bias": (self.channels,)}

    def fan_in(self) -> int:
        return self.size**2

    def counts(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return 2 * self.channels, (self.size**2 + 1) * self.channels * shape[1] * shape[2]


@dataclass(frozen=True)
class Dense:
    """Fully connected; its input is flattened in (C, H, W) order."""

    name: str
    in_features: int
    out_features: int
    activation: str | None

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.out_features,)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def fan_in(self) -> int:
        return self.in_features

    def counts(self, shape: tuple[int, ...]) -> tuple[int, int]:
        params = (self.in_features + 1) * self.out_features
        return params, params


@dataclass(frozen=True)
class RBF:
    """Euclidean RBF output: y_i = sum_j (x_j - c_ij)^2 with fixed centres (``rbf_centres``)."""

    name: str
    in_features: int
    out_features: int

    output_shape = Dense.output_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def counts(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return 0, self.in_features * self.out_features  # the centres are not trainable


Layer = Conv | MaxPool | AvgPool | Subsample | Dense | RBF
VECTOR_LAYERS = (Dense, RBF)  # layers that read a flat vector: a spatial input is flattened


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    input_size: int  # images are padded from 28 to this size
    layers: tuple[Layer, ...]
    loss: str  # one of LOSSES
    input_normalization: str  # "mean_std" (training-set statistics) or "lecun_1998"
    init: str  # "he_uniform" or "lecun_1998"
    pool: str = "max"  # the modern network's variant, one of POOLS (1998: "subsample")
    activation: str = RELU  # its hidden layers' activation (1998: "scaled_tanh")

    @property
    def variant(self) -> dict[str, str]:
        """What model files record besides the name to rebuild this architecture."""
        return {"pool": self.pool, "activation": self.activation}

    def layer_shapes(self) -> list[tuple[int, ...]]:
        """Output shape (C, H, W) or (F,) of each layer for one image."""
        shapes: list[tuple[int, ...]] = []
        shape: tuple[int, ...] = (1, self.input_size, self.input_size)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        return shapes

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every trainable parameter's name and shape (fixed RBF centres are not listed)."""
        return {f"{layer.name}.{kind}": shape for layer in self.layers
                for kind, shape in layer.param_shapes().items()}

    def layer_counts(self) -> list[dict]:
        """Per layer: name, output shape, trainable parameters and connections (as in the paper)."""
        rows = []
        for layer, shape in zip(self.layers, self.layer_shapes(), strict=True):
            params, connections = layer.counts(shape)
            rows.append({"name": layer.name, "output": list(shape), "params": params,
                         "connections": connections})
        return rows

    @property
    def pad(self) -> int:
        """Pixels added on each side of a 28x28 image to make the input."""
        return (self.input_size - 28) // 2

    @property
    def num_classes(self) -> int:
        return self.layer_shapes()[-1][0]


def connected_inputs(conv: Conv) -> int:
    """Number of (output map, input map) pairs that are connected."""
    if conv.table is None:
        return conv.in_channels * conv.out_channels
    return sum(sum(row) for row in conv.table)


def init_params(arch: Architecture, seed: int, weight_std: float | None = None
                ) -> dict[str, np.ndarray]:
    """Initial float32 parameters, identical for both engines given the same seed; with
    ``weight_std``, weights drawn from N(0, weight_std^2) and biases zero instead of the
    architecture's own initialisation."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for layer in arch.layers:
        for kind, shape in layer.param_shapes().items():
            name = f"{layer.name}.{kind}"
            if weight_std is not None:
                values = rng.normal(0.0, weight_std, size=shape) if kind == "weight" else (
                    np.zeros(shape))
            else:
                values = rng.uniform(-1.0, 1.0, size=shape) * _init_bound(arch, layer, kind,
                                                                          len(shape))
            params[name] = (values + 0.0).astype(np.float32)
            if kind == "weight" and getattr(layer, "table", None) is not None:
                # unconnected (output map, input map) pairs hold exact zeros in every engine/file
                params[name] *= np.array(layer.table, dtype=np.float32)[:, :, None, None]
    return params


def _init_bound(arch: Architecture, layer: Layer, kind: str, ndim: int) -> np.ndarray | float:
    """The half-width of the uniform initial values of one parameter: (out, 1, ...) or scalar."""
    fan_in = layer.fan_in()  # (out,) or scalar
    if arch.init == "lecun_1998":
        # Paper, appendix C: weights (biases too) uniform in +-2.4/F_i, F_i the unit's fan-in.
        bound = 2.4 / fan_in
    elif kind == "bias":
        bound = 0.0  # biases start at zero
    elif getattr(layer, "activation", None) == RELU:
        bound = np.sqrt(6.0 / fan_in)  # He uniform: keeps ReLU activations' variance
    else:
        bound = np.sqrt(3.0 / fan_in)  # LeCun uniform: unit variance through tanh, sigmoid, logits
    return np.reshape(bound, (-1,) + (1,) * (ndim - 1)) if np.ndim(bound) else bound


def modern_lenet5(pool: str = "max", activation: str = RELU) -> Architecture:
    """The modern LeNet-5, or one of the tutorials' variants of it."""
    if pool not in POOLS:
        raise Lenet5Error(f"unknown --pool {pool!r}; choose one of: {', '.join(POOLS)}.")
    if activation not in MODERN_ACTIVATIONS:
        raise Lenet5Error(f"unknown --activation {activation!r}; choose one of: "
                          f"{', '.join(MODERN_ACTIVATIONS)}.")
    pooling = MaxPool if pool == "max" else AvgPool
    return Architecture(
        name="lenet5",
        description=f"modern LeNet-5: {'ReLU' if activation == RELU else activation}, "
                    f"2x2 {pool}-pool, full C3, dense C5-F6, softmax",
        input_size=32,
        layers=(
            Conv("C1", 1, 6, 5, activation),
            pooling("S2"),
            Conv("C3", 6, 16, 5, activation),
            pooling("S4"),
            Dense("C5", 16 * 5 * 5, 120, activation),
            Dense("F6", 120, 84, activation),
            Dense("OUTPUT", 84, 10, None),
        ),
        loss="cross_entropy",
        input_normalization="mean_std",
        init="he_uniform",
        pool=pool,
        activation=activation,
    )


LENET5 = modern_lenet5()

# --- the faithful 1998 network -------------------------------------------------------------

# Table I of the paper: the S2 maps that feed each of C3's 16 maps. The first six take three
# contiguous maps, the next six four contiguous, three take four non-contiguous, the last all.
C3_INPUTS = ((0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
             (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
             (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5))
C3_TABLE = tuple(tuple(s2 in inputs for s2 in range(6)) for inputs in C3_INPUTS)  # (16, 6)

# Section II-B, as we read it:
# - every layer up to F6 squashes its weighted sum plus bias with the scaled tanh, S2 and S4
#   included ("the result is passed through a sigmoidal function");
# - C5 is a 5x5 convolution over all 16 S4 maps; on 32x32 inputs its output is 120x1x1, which
#   F6 reads as a vector of 120.
# Its training settings (hparams.ARCH_DEFAULTS) and why they depart from the paper's eps:
# benchmarks/results/lenet5_1998_settings.md.
LENET5_1998 = Architecture(
    name="lenet5-1998",
    description="LeNet-5 as in LeCun et al. 1998: scaled tanh, trainable subsampling, "
                "Table I C3, RBF output, MAP loss",
    input_size=32,
    layers=(
        Conv("C1", 1, 6, 5, SCALED_TANH),
        Subsample("S2", 6),
        Conv("C3", 6, 16, 5, SCALED_TANH, table=C3_TABLE),
        Subsample("S4", 16),
        Conv("C5", 16, 120, 5, SCALED_TANH),
        Dense("F6", 120, 84, SCALED_TANH),
        RBF("OUTPUT", 84, 10),
    ),
    loss="map",
    input_normalization="lecun_1998",
    init="lecun_1998",
    pool="subsample",
    activation=SCALED_TANH,
)

RBF_BITMAP_ROWS, RBF_BITMAP_COLS = 12, 7


def rbf_centres() -> np.ndarray:
    """The OUTPUT layer's fixed centres, (10, 84) float64 of +1/-1: digit i's 7x12 bitmap
    (assets/rbf_bitmaps.txt, '#' = +1, '.' = -1) read row-major, so F6 unit j matches row
    j // 7, column j % 7."""
    from importlib.resources import files

    text = files("lenet5").joinpath("assets/rbf_bitmaps.txt").read_text()
    bitmaps: dict[int, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("digit "):
            rows = bitmaps.setdefault(int(line.split()[1]), [])
        else:
            rows.append(line)
    centres = np.empty((10, RBF_BITMAP_ROWS * RBF_BITMAP_COLS))
    for digit in range(10):
        rows = bitmaps[digit]
        if len(rows) != RBF_BITMAP_ROWS or any(len(r) != RBF_BITMAP_COLS for r in rows):
            raise ValueError(f"rbf_bitmaps.txt: digit {digit} is not {RBF_BITMAP_ROWS} lines "
                             f"of {RBF_BITMAP_COLS} characters")
        centres[digit] = [1.0 if ch == "#" else -1.0 for ch in "".join(rows)]
    return centres


def rbf_centres_of(layer: RBF) -> np.ndarray:
    """The centres of an RBF layer, (out_features, in_features): the digit bitmaps, which
    exist for 10 classes of 84 features only."""
    centres = rbf_centres()
    if centres.shape != (layer.out_features, layer.in_features):
        raise ValueError(f"{layer.name}: the RBF bitmaps are {centres.shape}, the layer "
                         f"{(layer.out_features, layer.in_features)}")
    return centres


def format_bitmaps(centres: np.ndarray) -> str:
    """The 10 centres side by side as text, '#' for +1 and '.' for -1."""
    grids = centres.reshape(-1, RBF_BITMAP_ROWS, RBF_BITMAP_COLS) > 0  # (10, 12, 7)
    lines = ["  ".join(f"{d:^{RBF_BITMAP_COLS}}" for d in range(len(grids))).rstrip()]
    for r in range(RBF_BITMAP_ROWS):
        lines.append("  ".join("".join("#" if v else "." for v in g[r]) for g in grids))
    return "\n".join(lines)


ARCHITECTURES: dict[str, Architecture] = {LENET5.name: LENET5, LENET5_1998.name: LENET5_1998}


def get_arch(name: str, pool: str | None = None, activation: str | None = None
             ) -> Architecture:
    """An architecture by name; ``pool`` and ``activation`` choose a variant of the modern
    network (None: its defaults)."""
    if name == LENET5.name:
        return modern_lenet5(pool or LENET5.pool, activation or LENET5.activation)
    try:
        arch = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise Lenet5Error(f"unknown architecture {name!r}; choose one of: {known}.") from None
    for flag, value, own in (("--pool", pool, arch.pool), ("--activation", activation,
                                                            arch.activation)):
        if value not in (None, own):
            raise Lenet5Error(f"{flag} {value} is a variant of {LENET5.name} only; "
                              f"{arch.name} has its own ({own}).")
    return arch


def arch_of(metadata: dict) -> Architecture:
    """The architecture a model file's metadata names (files without a variant are the
    default one, as written before variants existed)."""
    return get_arch(metadata["arch"], metadata.get("pool"), metadata.get("activation"))
