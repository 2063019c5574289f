"""LeNet-5's layers in NumPy: each forward pass beside its hand-written backward pass.

Each class is named after the ``lenet5.arch`` layer it computes (ARCHITECTURE.md maps every
arch layer to its NumPy class, its torch class and the tests that check them).

Activations are kept channels-last, (N, H, W, C): a convolution is then one GEMM whose output
is already in layout. A convolution followed by pooling writes its output in a layout that
pooling reads on long runs instead of runs of C floats (``Conv.split``, ``Conv.windowed``):
"split", for 2x2 pooling the even columns, then the odd ones, so that the four inputs of every
pooling window lie in four blocks contiguous along (W/2, C); or "windowed", each window
position's values of every window in one contiguous block. Pooling gives the natural layout
back. Parameters keep the engine-neutral layouts of ``lenet5.arch`` (conv weights
(out, in, k, k), dense (out, in)).
Every layer works in the dtype of its input: float32 to train, float64 for gradient checks.

``forward(x, train)`` keeps what ``backward`` needs only when ``train`` is true; ``backward(g)``
fills ``self.grads`` (same keys as ``self.params``) and returns the input gradient, or None
where nothing upstream needs it (the first layer).

``backward_curvature(h)`` is the Gauss-Newton second-derivative pass of LeCun et al. 1998,
appendix C (and "Efficient BackProp"): given the diagonal curvature d2E/do2 of every output o,
it fills ``self.curvatures`` with sum_o (do/dp)^2 d2E/do2 for each parameter p and returns
sum_o (do/dx)^2 d2E/do2 for each input x -- the backward pass with every Jacobian entry
squared. For one layer this is exactly diag(J^T D J); chaining it drops the off-diagonal
terms between hidden units, the paper's approximation. Terms in f''(a) are dropped (Gauss-Newton).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..arch import TANH_AMPLITUDE, TANH_SLOPE


class Layer:
    params: dict[str, np.ndarray] = {}
    grads: dict[str, np.ndarray] = {}
    curvatures: dict[str, np.ndarray] = {}
    needs_input_grad = True

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def backward_curvature(self, curv: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError


def pool_positions(x: np.ndarray, size: int, block: int | None = None) -> np.ndarray:
    """A view (s, s, N, H/s, B, b/s, C) of ``x`` (N, H, W, C) whose columns are stored split
    within blocks of ``block`` = b columns (``Conv.block``; None: natural order, which is the
    same as b = s): [i, j] holds position (i, j) of every s x s pooling window, as
    (N, H/s, B, b/s, C), which reshapes to (N, H/s, W/s, C) in natural order."""
    n, h, w, c = x.shape
    block = block or size
    return x.reshape(n, h // size, size, w // block, size, block // size, c).transpose(
        2, 4, 0, 1, 3, 5, 6)


def unsplit_width(x: np.ndarray, size: int, block: int | None = None) -> np.ndarray:
    """(N, H, W, C) stored with split width (``Conv.split`` within blocks of ``block``
    columns; None: the whole width) -> the natural column order."""
    n, h, w, c = x.shape
    block = block or w
    return x.reshape(n, h, w // block, size, block // size, c).transpose(
        0, 1, 2, 4, 3, 5).reshape(x.shape)


def unwindow(x: np.ndarray) -> np.ndarray:
    """A windowed convolution's output (s, s, b/s, C, N, H/s, W/b) (``Conv.windowed``) -> the
    natural (N, H, W, C), a copy: [i, p, q, c, n, a, m] is row s*a + i, column b*m + s*q + p."""
    s, _, per_block, c, n, rows, blocks = x.shape
    return x.transpose(4, 5, 0, 6, 2, 1, 3).reshape(n, rows * s, blocks * per_block * s, c)


def natural_order(x: np.ndarray, conv: Conv | None) -> np.ndarray:
    """A convolution's output as ``conv`` stored it (None: natural) -> (N, H, W, C)."""
    if conv is not None and conv.windowed:
        return unwindow(x)
    return x if conv is None or conv.split == 1 else unsplit_width(x, conv.split, conv.block)


def gemm_block(out_width: int, out_channels: int, split: int = 1) -> int:
    """The output columns a convolution computes per GEMM row (``Conv.block``): the fewest
    that are a multiple of ``split``, divide the width, and still give the GEMM
    MIN_GEMM_COLUMNS output columns; the whole width where none does."""
    for block in range(split, out_width + 1, split):
        if out_width % block == 0 and block * out_channels >= MIN_GEMM_COLUMNS:
            return block
    return out_width


def input_grad_block(out_width: int, kernel: int) -> int:
    """The output columns per GEMM row of a convolution's input gradient: the fewest that
    divide the width and are at least the kernel's (the whole width where it is narrower).
    Its band multiplies k/(b+k-1) of its products by weights (lenet5's C3, 10 wide, k 5: 5 of
    9 in blocks of 5, 5 of 14 on the whole width); narrower blocks add more scatter-adds than
    they save. C3's input gradient on 64 images, one thread: 0.62 ms instead of 0.79 with the
    Haswell kernels, 0.42 instead of 0.49 with SkylakeX's (blocks of 2: 0.69 and 0.53)."""
    return min((b for b in range(kernel, out_width + 1) if out_width % b == 0),
               default=out_width)


def gemm_layout(out_width: int, out_channels: int, kernel: int, split: int = 1
                ) -> tuple[bool, int]:
    """(``Conv.windowed``, ``Conv.block``) for a convolution whose output ``split`` x ``split``
    pooling reads (1: none): of one output row or ``split`` rows per GEMM row, the one whose
    band wastes fewer multiplications on zeros; a GEMM row of r rows and b columns uses
    k^2 / ((r+k-1)(b+k-1)) of its products. lenet5's C1 (k 5, 6 maps 28 wide) takes 2 rows
    of 4 columns (52%, not 1 row of 14: 28%), C3 (16 maps 10 wide) 1 row of 2 (83%, not 69%)."""
    one_row = gemm_block(out_width, out_channels, split)
    if split == 1:
        return False, one_row
    windows = gemm_block(out_width, split * out_channels, split)
    if (split + kernel - 1) * (windows + kernel - 1) < kernel * (one_row + kernel - 1):
        return True, windows
    return False, one_row


# Output columns below which a GEMM's kernels run far under the machine's peak (measured in
# benchmarks/README.md): a convolution's band is widened until its GEMM has this many.
MIN_GEMM_COLUMNS = 32


class Conv(Layer):
    """Valid convolution, stride 1, as one GEMM per pass with the kernel's sweep along the
    width folded into a banded ("row Toeplitz") weight matrix.

    The output width is cut into blocks of ``block`` columns (None: one block, the whole
    width). A GEMM row is one output row of one block: its inputs are the k x (block+k-1)
    input pixels (all channels) that block reads, copied once into rows R of shape
    (N*Ho*Wo/block, k*(block+k-1)*C), and the band T (k*(block+k-1)*C, block*O) holds every
    weight ``block`` times and zeros elsewhere. y = R @ T lands directly in (N, Ho, Wo, O)
    layout. A narrow block wastes fewer multiplications on T's zeros (the fraction used is
    k/(block+k-1)) but makes a thinner GEMM, so ``gemm_layout`` picks it. The weight gradient
    sums T's gradient over the places each weight has. The input gradient uses a band of
    ``input_grad_block`` columns, in natural column order: its rows are added back k times
    along the height, and where the blocks' inputs overlap.

    An optional (out, in) connection mask makes it a sparse convolution (the 1998 C3): the
    mask multiplies the weights, so unconnected weights have no effect and get zero gradient.
    With ``split`` = s > 1 the output columns of each block are stored phase-major, column
    j of a block at (j % s) * (block / s) + j // s, for the pooling layer after it: only
    T's columns move. ``windowed`` (with s > 1) makes a GEMM row s output rows of a block
    instead, whole s x s pooling windows: R holds (s+k-1) x (block+k-1) input pixels, T's
    columns are ordered (output row i, column phase j % s, j // s, O), the GEMM runs transposed,
    T^T @ R^T, so that the output (s, s, b/s, O, N, Ho/s, Wo/b) holds each window position
    of every window in one contiguous block (``unwindow`` gives the natural layout). For
    few maps this wastes fewer products than one row (k^2 / ((s+k-1)(block+k-1)) used).
    """

    split = 1
    windowed = False
    block: int | None = None
    _kept: tuple | None = None  # see _gemm_weights

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mask: np.ndarray | None = None):
        self.params = {"weight": weight, "bias": bias}  # (O, C, k, k), (O,)
        self.mask = None if mask is None else mask[:, :, None, None].astype(weight.dtype)
        if self.mask is not None:
            weight *= self.mask

    def _effective_weight(self) -> np.ndarray:
        w = self.params["weight"]
        return w if self.mask is None else w * self.mask

    @property
    def rows_per_gemm_row(self) -> int:
        """Output rows a GEMM row computes: the pool's size when windowed, else 1."""
        return self.split if self.windowed else 1

    def _band(self, t: np.ndarray, block: int, split: int, rows: int) -> np.ndarray:
        """The band of a contiguous T-shaped array ((r+k-1)*(b+k-1)*C, r*b*O) for GEMM rows of
        r output rows and b columns as a strided view (k, k, C, r, s, b/s, O):
        [kh, kw, c, i, p, q, o] is where weight (o, c, kh, kw) meets output row i and column
        j = s*q + p of the GEMM row (stored at (i*s + p)*b/s + q) and its input pixel
        (i + kh, j + kw). Every place is distinct, so the view can be written, and summing it
        over (i, p, q) gives dW."""
        out_ch, in_ch, k, _ = self.params["weight"].shape
        if block % split:
            raise ValueError(f"output width {block} does not split into {split}")
        row, col = t.strides  # bytes
        kw_step = in_ch * row  # one input column further
        kh_step = (block + k - 1) * kw_step  # one input row further
        return as_strided(
            t, shape=(k, k, in_ch, rows, split, block // split, out_ch), writeable=True,
            strides=(kh_step, kw_step, row, kh_step + block * out_ch * col,
                     kw_step + block // split * out_ch * col, split * kw_step + out_ch * col,
                     col))

    def _toeplitz(self, w: np.ndarray, block: int, split: int, rows: int = 1) -> np.ndarray:
        out_ch, in_ch, k, _ = w.shape
        t = np.zeros(((rows + k - 1) * (block + k - 1) * in_ch, rows * block * out_ch),
                     dtype=w.dtype)
        self._band(t, block, split, rows)[...] = w.transpose(2, 3, 1, 0)[:, :, :, None, None,
                                                                          None]
        return t  # ((r+k-1)*(b+k-1)*C, r*b*O)

    def _gemm_weights(self, w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
        """The band T of the weights `w` and the bias along a whole GEMM row (r*b*O,) (not
        runs of O floats), built again only when the weights, bias or layout changed since
        the last pass: a model that only reads (a server) keeps them. Comparing the bytes
        takes about 1 us a layer, building them again about 18 us (timeit, 2-core VM); a
        one-image forward pass went from 0.215 to 0.166 ms."""
        bias = self.params["bias"]
        rows = self.rows_per_gemm_row
        key = (w.dtype.str, w.tobytes(), bias.tobytes(), block, self.split, rows)
        kept = self._kept
        if kept is None or kept[0] != key:
            kept = self._kept = (key, self._toeplitz(w, block, self.split, rows),
                                 np.tile(bias, rows * block))
        return kept[1], kept[2]

    def _block(self, out_width: int) -> int:
        block = self.block or out_width
        if out_width % block:
            raise ValueError(f"output width {out_width} is not a multiple of block {block}")
        return block

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        w = self._effective_weight()
        out_ch, in_ch, k, _ = w.shape
        n, h, width, _ = x.shape  # (N, H, W, C)
        ho, wo = h - k + 1, width - k + 1
        block, r = self._block(wo), self.rows_per_gemm_row
        if ho % r:
            raise ValueError(f"output height {ho} does not split into {r}")
        sn, sh, sw, sc = x.strides
        # (N, Ho/r, Wo/b, r+k-1, b+k-1, C) view, runs of (b+k-1)*C floats -> one contiguous copy
        windows = as_strided(x, (n, ho // r, wo // block, r + k - 1, block + k - 1, in_ch),
                             (sn, r * sh, block * sw, sh, sw, sc))
        rows = windows.reshape(n * (ho // r) * (wo // block), -1)
        band, bias = self._gemm_weights(w, block)
        if self.windowed:
            y = band.T @ rows.T  # (s*b*O, N*Ho/s*Wo/b)
            y += bias[:, None]
            y = y.reshape(r, r, block // r, out_ch, n, ho // r, wo // block)
        else:
            y = rows @ band  # (N*Ho*Wo/b, b*O)
            y += bias
            y = y.reshape(n, ho, wo, out_ch)
        if train:
            self.rows, self.in_shape = rows, x.shape
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        dx, self.grads = self._propagate(grad, self._effective_weight(), self.rows)
        return dx

    def backward_curvature(self, curv: np.ndarray) -> np.ndarray | None:
        """The backward pass with squared weights and squared inputs: each output reads each
        weight through exactly one input, so this is exact for the layer."""
        dx, self.curvatures = self._propagate(curv, self._effective_weight() ** 2,
                                              self.rows ** 2)
        return dx

    def _propagate(self, grad: np.ndarray, w: np.ndarray, rows: np.ndarray
                   ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        out_ch, in_ch, k, _ = w.shape
        n, h, width, _ = self.in_shape
        r = self.rows_per_gemm_row
        block = self._block(width - k + 1)
        if self.windowed:
            g = grad.reshape(r * block * out_ch, -1)  # (s*b*O, N*Ho/s*Wo/b)
            dt = (g @ rows).T  # ((s+k-1)*(b+k-1)*C, s*b*O)
            # row sums as one GEMV: several times faster than g.sum(axis=1)
            bias_grad = g @ np.ones(g.shape[1], g.dtype)
        else:
            g = grad.reshape(-1, block * out_ch)  # (N*Ho*Wo/b, b*O)
            dt = rows.T @ g  # (k*(b+k-1)*C, b*O)
            bias_grad = np.ones(len(g), g.dtype) @ g  # column sums, as above
        dw = self._band(dt, block, self.split, r).sum(axis=(3, 4, 5)).transpose(3, 2, 0, 1)
        if self.mask is not None:
            dw *= self.mask
        param_grads = {"weight": np.ascontiguousarray(dw),  # (O, C, k, k)
                       "bias": bias_grad.reshape(-1, out_ch).sum(axis=0)}
        self.rows = None
        if not self.needs_input_grad:
            return None, param_grads
        grad = natural_order(grad, self)  # (N, Ho, Wo, O)
        ho, wo = grad.shape[1:3]
        b = input_grad_block(wo, k)
        drows = (grad.reshape(n * ho * (wo // b), b * out_ch) @ self._toeplitz(w, b, 1).T
                 ).reshape(n, ho, wo // b, k, b + k - 1, in_ch)  # (N, Ho, Wo/b, k, b+k-1, C)
        dx = np.zeros(self.in_shape, dtype=grad.dtype)  # (N, H, W, C)
        for i in range(k):  # scatter-add each kernel row's slice of each block
            for j in range(wo // b):
                dx[:, i:i + ho, j * b:j * b + b + k - 1] += drows[:, :, j, i]
        return dx, param_grads


class Pooling(Layer):
    """Non-overlapping size x size windows. ``source``: the Conv whose output this reads, in
    the layout that Conv stored it in (``Conv.split`` = size; split columns within blocks of
    ``Conv.block`` columns, or windowed); None: the natural order. The output is in natural
    order either way."""

    source: Conv | None = None

    def __init__(self, size: int = 2):
        self.size = size

    def _windowed(self) -> bool:
        return self.source is not None and self.source.windowed

    def _block(self, width: int) -> int:
        """The columns of a block of the input, ``pool_positions``' b (size: natural order)."""
        return self.size if self.source is None else self.source.block or width

    def _positions(self, x: np.ndarray) -> np.ndarray:
        """A view (s, s, *P) of the input: [i, j] holds position (i, j) of every window, in
        the layout P of one window position: (b/s, C, N, H/s, B) from a windowed conv (its
        output as it is), (N, H/s, B, b/s, C) otherwise (``pool_positions``)."""
        if self.source is not None and self.source.split != self.size:
            raise ValueError(f"a {self.size}x{self.size} pool cannot read a convolution's "
                             f"output laid out for {self.source.split}x{self.source.split} "
                             "windows")
        if self._windowed():
            return x
        return pool_positions(x, self.size, self._block(x.shape[2]))

    def _natural(self, pooled: np.ndarray) -> np.ndarray:
        """One window position's layout P -> (N, H/s, W/s, C)."""
        if self._windowed():  # (b/s, C, N, H/s, B): a windowed output of 1x1 windows
            return unwindow(pooled[None, None])
        n, ho, blocks, per_block, c = pooled.shape
        return pooled.reshape(n, ho, blocks * per_block, c)

    def _laid_out(self, per_output: np.ndarray) -> np.ndarray:
        """(N, H/s, W/s, C) -> one window position's layout P (``_natural`` undone)."""
        n, ho, wo, c = per_output.shape
        per_block = self._block(wo * self.size) // self.size
        per_window = per_output.reshape(n, ho, wo // per_block, per_block, c)
        if self._windowed():
            return np.ascontiguousarray(per_window.transpose(3, 4, 0, 1, 2))
        return per_window

    def _spread(self, per_output: np.ndarray) -> np.ndarray:
        """(N, H/s, W/s, C) -> the input's layout, each window's value at its s*s inputs."""
        dx = np.empty(self.in_shape, dtype=per_output.dtype)
        self._positions(dx)[...] = self._laid_out(per_output)
        return dx


class MaxPool(Pooling):
    """Non-overlapping max-pool on views of the windows' positions. Ties go to the first
    window position in row-major order, as PyTorch does, so gradients match it exactly.

    2x2 windows (LeNet-5's) run as a tournament: the better of each row's pair, then of the
    two rows; the three comparisons it keeps route the gradient back. Other sizes route
    through a mask per position."""

    def _views(self, x: np.ndarray) -> list[np.ndarray]:
        positions = self._positions(x)
        return [positions[i, j] for i in range(self.size) for j in range(self.size)]

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        views = self._views(x)
        self.in_shape = x.shape
        if self.size == 2:
            top, bottom = np.maximum(views[0], views[1]), np.maximum(views[2], views[3])
            out = np.maximum(top, bottom)
            if train:  # strictly greater: a tie keeps the earlier position
                self.routes = [views[1] > views[0], views[3] > views[2], bottom > top]
            return self._natural(out)
        out = views[0].copy()
        for v in views[1:]:
            np.maximum(out, v, out=out)
        if train:
            taken = np.zeros(out.shape, dtype=bool)
            self.routes = []
            for v in views:  # route each output to the first input that equals it
                route = (v == out) & ~taken
                taken |= route
                self.routes.append(route)
        return self._natural(out)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        dx = np.empty(self.in_shape, dtype=grad.dtype)  # the views below cover every entry
        grad = self._laid_out(grad)
        views = self._views(dx)
        if self.size == 2:
            right, right_below, below = self.routes
            from_bottom = grad * below
            from_top = grad - from_bottom  # exact: one of the two is zero
            np.multiply(from_top, right, out=views[1])
            np.subtract(from_top, views[1], out=views[0])
            np.multiply(from_bottom, right_below, out=views[3])
            np.subtract(from_bottom, views[3], out=views[2])
        else:
            for view, route in zip(views, self.routes, strict=True):
                np.multiply(grad, route, out=view)
        self.routes = None
        return dx

    backward_curvature = backward  # Jacobian entries are 0 or 1: squaring them changes nothing


class AvgPool(Pooling):
    """Non-overlapping mean pooling."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train:
            self.in_shape = x.shape
        return self._natural(self._positions(x).mean(axis=(0, 1)))  # (N, H/s, W/s, C)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self._spread(grad / self.size**2)

    def backward_curvature(self, curv: np.ndarray) -> np.ndarray:
        return self._spread(curv / self.size**4)  # every Jacobian entry is 1/s^2


class ReLU(Layer):
    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        y = np.maximum(x, 0)
        if train:
            self.positive = y > 0
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self.positive

    backward_curvature = backward  # Jacobian entries are 0 or 1: squaring them changes nothing


class Squashing(Layer):
    """A smooth activation y = f(a) that keeps its slope f'(a) when training: the backward
    pass multiplies by it, the curvature pass by its square."""

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self.slope

    def backward_curvature(self, curv: np.ndarray) -> np.ndarray:
        return curv * self.slope**2


class Tanh(Squashing):
    """tanh, f'(a) = 1 - tanh(a)^2."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        y = np.tanh(x)
        if train:
            self.slope = 1 - y * y
        return y


class Sigmoid(Squashing):
    """The logistic function 1 / (1 + e^-a), f'(a) = f(a) (1 - f(a))."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        y = 0.5 * np.tanh(0.5 * x) + 0.5  # = 1 / (1 + e^-x), without overflow for large -x
        if train:
            self.slope = y * (1 - y)
        return y


class Flatten(Layer):
    """(N, H, W, C) -> (N, C*H*W) in (C, H, W) order, the order dense weights are stored in."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self.in_shape = x.shape
        return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        n, h, w, c = self.in_shape
        return grad.reshape(n, c, h, w).transpose(0, 2, 3, 1)

    backward_curvature = backward  # a permutation: squaring its Jacobian changes nothing


class Dense(Layer):
    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.params = {"weight": weight, "bias": bias}  # (O, I), (O,)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train:
            self.x = x
        return x @ self.params["weight"].T + self.params["bias"]  # (N, O)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        self.grads = {"weight": grad.T @ self.x, "bias": grad.sum(axis=0)}
        self.x = None
        return grad @ self.params["weight"] if self.needs_input_grad else None

    def backward_curvature(self, curv: np.ndarray) -> np.ndarray | None:
        self.curvatures = {"weight": curv.T @ self.x**2, "bias": curv.sum(axis=0)}
        self.x = None
        return curv @ self.params["weight"] ** 2 if self.needs_input_grad else None


# --- the 1998 layers (LeCun, Bottou, Bengio, Haffner 1998) ------------------------------------

class ScaledTanh(Squashing):
    """f(a) = amplitude * tanh(slope * a), the paper's 1.7159 tanh(2a/3) (``arch.TANH_AMPLITUDE``,
    ``TANH_SLOPE``); f'(a) = slope * amplitude * (1 - tanh(slope * a)^2), from tanh alone."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        t = np.multiply(x, TANH_SLOPE, dtype=x.dtype)
        np.tanh(t, out=t)  # one temporary: tanh is the costly part
        if train:
            self.slope = t * t  # f'(a) = slope amplitude (1 - t^2), same shape as x
            self.slope *= -TANH_SLOPE * TANH_AMPLITUDE
            self.slope += TANH_SLOPE * TANH_AMPLITUDE
        t *= TANH_AMPLITUDE
        return t


class Subsample(Pooling):
    """Trainable sub-sampling (S2, S4): per map c, each non-overlapping size x size block's
    sum times a coefficient weight[c], plus bias[c]. The squashing function is a separate
    layer after it. Height and width must be multiples of ``size``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, size: int = 2):
        super().__init__(size)
        self.params = {"weight": weight, "bias": bias}  # (C,), (C,)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        sums = self._natural(self._positions(x).sum(axis=(0, 1)))  # (N, H/s, W/s, C)
        if train:
            self.sums, self.in_shape = sums, x.shape
        return sums * self.params["weight"] + self.params["bias"]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        dx, self.grads = self._propagate(grad, self.params["weight"], self.sums)
        return dx

    def backward_curvature(self, curv: np.ndarray) -> np.ndarray:
        """Exact for the layer: each output reads its coefficient once, through the block sum."""
        dx, self.curvatures = self._propagate(curv, self.params["weight"] ** 2, self.sums**2)
        return dx

    def _propagate(self, grad: np.ndarray, w: np.ndarray, sums: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        param_grads = {"weight": (grad * sums).sum(axis=(0, 1, 2)),
                       "bias": grad.sum(axis=(0, 1, 2))}
        self.sums = None
        return self._spread(grad * w), param_grads


class RBF(Layer):
    """Euclidean RBF output units (section II-B): y_i = sum_j (x_j - c_ij)^2 with fixed
    centres c (K, F) -- nothing here is trainable.

    It returns the NEGATED penalties, -y_i (N, K), so that its output is a "logits" array like
    every other network's: argmax is the prediction, and softmax(-y) = exp(-y_i)/sum_k exp(-y_k)
    is the class posterior of the MAP criterion (losses.map_loss). Its curvature for SDLM is
    taken at its input, together with the loss (losses.map_curvature), so it has no
    ``backward_curvature``.
    """

    def __init__(self, centres: np.ndarray):
        self.centres = centres  # (K, F)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if train:
            self.x = x
        diff = x[:, None, :] - self.centres  # (N, K, F)
        return -np.einsum("nkf,nkf->nk", diff, diff)  # (N, K)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        # d(-y_i)/dx_j = -2 (x_j - c_ij); summed over i with weights grad_i
        dx = -2.0 * (grad.sum(axis=1, keepdims=True) * self.x - grad @ self.centres)
        self.x = None
        return dx  # (N, F)
