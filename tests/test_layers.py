"""Every NumPy layer's backward against central finite differences, in float64."""

import numpy as np
import pytest
from gradcheck import check_layer, max_rel_error, numeric_grad

from lenet5.numpy_engine import layers as L
from lenet5.numpy_engine.losses import softmax_cross_entropy

TOL = 1e-6


@pytest.fixture
def rng():
    return np.random.default_rng(42)


def test_conv_gradients(rng):
    layer = L.Conv(rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4))
    errors = check_layer(layer, rng.normal(size=(2, 7, 6, 3)))  # (N, H, W, C)
    assert max(errors.values()) < TOL, errors


def test_sparse_conv_keeps_unconnected_weights_at_zero(rng):
    mask = rng.random((4, 3)) < 0.5
    mask[:, 0] = True
    layer = L.Conv(rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4), mask)
    assert np.all(layer.params["weight"][~mask] == 0)
    errors = check_layer(layer, rng.normal(size=(2, 6, 6, 3)))
    assert max(errors.values()) < TOL, errors
    assert np.all(layer.grads["weight"][~mask] == 0)


def test_first_conv_returns_no_input_gradient(rng):
    layer = L.Conv(rng.normal(size=(2, 1, 3, 3)), np.zeros(2))
    layer.needs_input_grad = False
    out = layer.forward(rng.normal(size=(1, 5, 5, 1)), train=True)
    assert layer.backward(np.ones_like(out)) is None
    assert layer.grads["weight"].shape == (2, 1, 3, 3)


def test_conv_matches_direct_convolution(rng):
    w, b = rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2)
    x = rng.normal(size=(1, 5, 5, 3))
    y = L.Conv(w.copy(), b).forward(x, train=False)
    expected = np.empty((1, 3, 3, 2))
    for i in range(3):
        for j in range(3):
            patch = x[0, i:i + 3, j:j + 3, :].transpose(2, 0, 1)  # (C, k, k)
            expected[0, i, j] = (w * patch).sum(axis=(1, 2, 3)) + b
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_conv_keeps_its_band_only_while_the_weights_stay(rng):
    """A conv that only reads keeps its banded weights between passes; a weight or bias
    changed in place (an optimizer step, a loaded state), or its column layout, is seen at
    the next pass."""
    layer = L.Conv(rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2))
    x = rng.normal(size=(2, 5, 6, 3))
    first = layer.forward(x, train=False)
    band = layer._gemm_weights(layer.params["weight"], 4)[0]
    assert layer._gemm_weights(layer.params["weight"], 4)[0] is band  # kept
    np.testing.assert_array_equal(layer.forward(x, train=False), first)
    for name in ("weight", "bias"):
        layer.params[name] += 0.5  # in place, as the optimizers update
        fresh = L.Conv(layer.params["weight"].copy(), layer.params["bias"].copy())
        np.testing.assert_array_equal(layer.forward(x, train=False), fresh.forward(x, False))
    assert not np.allclose(layer.forward(x, train=False), first)
    layer.split = 2  # the output columns stored phase-major, for a pooling layer after it
    fresh = L.Conv(layer.params["weight"].copy(), layer.params["bias"].copy())
    fresh.split = 2
    np.testing.assert_array_equal(layer.forward(x, train=False), fresh.forward(x, False))
    layer.windowed = fresh.windowed = True  # whole pooling windows per GEMM row
    x = rng.normal(size=(2, 6, 6, 3))  # an even output height
    np.testing.assert_array_equal(layer.forward(x, train=False), fresh.forward(x, False))


@pytest.mark.parametrize("size", [2, 3])
def test_maxpool_gradients(rng, size):
    errors = check_layer(L.MaxPool(size), rng.normal(size=(2, 3 * size, 2 * size, 3)))
    assert errors["x"] < TOL


def stored_like_a_conv_output(x: np.ndarray, size: int, layout: str
                              ) -> tuple[np.ndarray, L.Conv | None]:
    """``x`` (N, H, W, C) as a convolution feeding a size x size pool stores its output in
    ``layout`` (natural, split or windowed, whole-width blocks): the output of a 1x1 identity
    convolution so laid out, and that convolution (None: natural)."""
    if layout == "natural":
        return x, None
    channels = x.shape[-1]
    conv = L.Conv(np.eye(channels)[:, :, None, None], np.zeros(channels))
    conv.split, conv.windowed = size, layout == "windowed"
    return conv.forward(x, train=False), conv


@pytest.mark.parametrize("layout", ["natural", "split", "windowed"])
@pytest.mark.parametrize("size", [2, 3])
def test_maxpool_routes_every_tie_to_the_first_maximum(rng, size, layout):
    """Windows full of ties (as over an image's blank background): the gradient goes to the
    first maximum in row-major order, whichever positions tie, in every layout a
    convolution can store its output in."""
    x = rng.integers(0, 3, size=(4, 2 * size, 3 * size, 2)).astype(float)  # many ties
    pool = L.MaxPool(size)
    stored, pool.source = stored_like_a_conv_output(x, size, layout)
    out = pool.forward(stored, train=True)
    grad = rng.normal(size=out.shape)
    dx = L.natural_order(pool.backward(grad.copy()), pool.source)
    windows = x.reshape(4, 2, size, 3, size, 2).transpose(0, 1, 3, 5, 2, 4).reshape(4, 2, 3, 2, -1)
    first = windows.argmax(axis=-1)  # numpy's argmax: the first maximum
    expected = np.zeros_like(windows)
    np.put_along_axis(expected, first[..., None], grad[..., None], axis=-1)
    expected = expected.reshape(4, 2, 3, 2, size, size).transpose(0, 1, 4, 2, 5, 3)
    np.testing.assert_array_equal(dx, expected.reshape(x.shape))
    np.testing.assert_array_equal(out, windows.max(axis=-1))


def test_maxpool_routes_ties_to_first_position():
    x = np.zeros((1, 2, 2, 1))
    pool = L.MaxPool(2)
    pool.forward(x, train=True)
    dx = pool.backward(np.ones((1, 1, 1, 1)))
    assert dx[0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_relu_gradients(rng):
    x = rng.normal(size=(3, 4, 4, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    assert check_layer(L.ReLU(), x)["x"] < TOL


def test_avgpool_gradients(rng):
    errors = check_layer(L.AvgPool(2), rng.normal(size=(2, 6, 4, 3)))
    assert errors["x"] < TOL


@pytest.mark.parametrize("layer", [L.Tanh, L.Sigmoid])
def test_smooth_activation_gradients(rng, layer):
    assert check_layer(layer(), rng.normal(size=(3, 4, 4, 2)))["x"] < TOL


def test_sigmoid_is_the_logistic_function_without_overflow():
    x = np.array([[-1000.0, -5.0, 0.0, 5.0, 1000.0]])
    with np.errstate(over="raise"):
        y = L.Sigmoid().forward(x, train=False)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-np.clip(x, -700, 700))), rtol=1e-14,
                               atol=1e-16)


def test_dense_gradients(rng):
    layer = L.Dense(rng.normal(size=(5, 7)), rng.normal(size=5))
    errors = check_layer(layer, rng.normal(size=(3, 7)))
    assert max(errors.values()) < TOL, errors


def test_flatten_uses_channel_major_order(rng):
    x = rng.normal(size=(2, 3, 4, 5))  # (N, H, W, C)
    flat = L.Flatten().forward(x, train=True)
    np.testing.assert_array_equal(flat, x.transpose(0, 3, 1, 2).reshape(2, -1))
    assert check_layer(L.Flatten(), x)["x"] < TOL


def test_softmax_cross_entropy_gradient(rng):
    logits = rng.normal(size=(4, 10)) * 3
    labels = np.array([0, 3, 9, 3])
    loss, grad = softmax_cross_entropy(logits, labels)
    numeric = numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert max_rel_error(grad, numeric) < TOL
    # matches the textbook definition
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(4), labels]).mean(), rel=1e-12)


def test_a_non_digit_s_target_is_the_uniform_distribution(rng):
    """Label -1 (data.nondigits.NONDIGIT): the loss is the mean of -log p_k over the classes,
    least when the network spreads its probability evenly (outlier exposure)."""
    logits = rng.normal(size=(4, 10)) * 3
    labels = np.array([2, -1, 7, -1])
    loss, grad = softmax_cross_entropy(logits, labels)
    numeric = numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert max_rel_error(grad, numeric) < TOL
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = [-log_p[0, 2], -log_p[1].mean(), -log_p[2, 7], -log_p[3].mean()]
    assert loss == pytest.approx(np.mean(expected), rel=1e-12)
    assert softmax_cross_entropy(np.zeros((1, 10)), np.array([-1]))[0] == pytest.approx(
        np.log(10))


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss, grad = softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]]), np.array([0, 1]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(500.0)


def test_layers_keep_float32(rng):
    layer = L.Conv(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), np.zeros(2, np.float32))
    x = rng.normal(size=(1, 5, 5, 1)).astype(np.float32)
    assert layer.forward(x, train=False).dtype == np.float32


@pytest.mark.parametrize(("size", "windowed", "block"),
                         [(2, False, None), (2, False, 2), (2, False, 4), (2, True, None),
                          (2, True, 2), (2, True, 4), (3, False, None), (3, True, 3),
                          (3, True, None)])
@pytest.mark.parametrize("pool", ["max", "avg", "subsample"])
def test_pooling_layouts_change_nothing_but_speed(rng, pool, size, windowed, block):
    """A sparse conv writing split columns or whole windows (in blocks of ``block`` columns,
    or the whole width) into a size x size pool reading them == the natural layout, both
    ways and in the curvature pass, input gradient included."""
    w, b = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    x = rng.normal(size=(2, 2 + 2 * size, 2 + 4 * size, 3))  # conv output (2, 2s, 4s, 4)

    def make_pool():
        if pool == "max":
            return L.MaxPool(size)
        if pool == "avg":
            return L.AvgPool(size)
        return L.Subsample(np.array([0.5, -1.0, 2.0, 0.3]), np.array([0.1, 0.0, -0.2, 0.4]),
                           size)

    results = []
    for laid_out in (False, True):
        conv, pooling = L.Conv(w.copy(), b.copy(), mask), make_pool()
        if laid_out:
            conv.split, conv.windowed, conv.block, pooling.source = size, windowed, block, conv
        y = conv.forward(x, train=True)
        out = pooling.forward(y, train=True)
        grad_out = np.arange(out.size, dtype=float).reshape(out.shape) % 7 - 3
        dx = conv.backward(pooling.backward(grad_out))
        conv.forward(x, train=True)
        pooling.forward(y, train=True)
        dx_curvature = conv.backward_curvature(pooling.backward_curvature(grad_out ** 2))
        conv_out = L.natural_order(y, conv)
        results.append((conv_out, out, dx, dx_curvature, conv.grads, pooling.grads,
                        conv.curvatures, getattr(pooling, "curvatures", {})))
    natural, laid_out = results
    for a, c in zip(natural[:4], laid_out[:4], strict=True):
        np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-12)
    for grads_a, grads_c in zip(natural[4:], laid_out[4:], strict=True):
        for name in grads_a:
            np.testing.assert_allclose(grads_c[name], grads_a[name], rtol=1e-12, atol=1e-12)


def test_a_pool_refuses_a_conv_output_laid_out_for_other_windows(rng):
    conv = L.Conv(rng.normal(size=(2, 1, 3, 3)), np.zeros(2))
    conv.split, conv.windowed = 2, True
    pool = L.MaxPool(3)
    pool.source = conv
    with pytest.raises(ValueError, match="a 3x3 pool cannot read .* 2x2 windows"):
        pool.forward(conv.forward(rng.normal(size=(1, 8, 8, 1)), train=False), train=False)


def test_a_windowed_conv_refuses_an_odd_output_height(rng):
    conv = L.Conv(rng.normal(size=(2, 1, 3, 3)), np.zeros(2))
    conv.split, conv.windowed = 2, True
    with pytest.raises(ValueError, match="output height 7 does not split into 2"):
        conv.forward(rng.normal(size=(1, 9, 10, 1)), train=False)


def test_a_windowed_conv_stores_each_window_position_in_one_block(rng):
    """Windowed output (s, s, b/s, O, N, H/s, W/b): [i, p, q, o, n, a, m] is output row
    s*a + i, column b*m + s*q + p, checked against the natural output element by element."""
    w, b = rng.normal(size=(2, 1, 3, 3)), rng.normal(size=2)
    x = rng.normal(size=(3, 10, 10, 1))  # output (3, 8, 8, 2)
    natural = L.Conv(w.copy(), b.copy()).forward(x, train=False)
    conv = L.Conv(w.copy(), b.copy())
    conv.split, conv.windowed, conv.block = 2, True, 4
    y = conv.forward(x, train=False)
    assert y.shape == (2, 2, 2, 2, 3, 4, 2)
    for i, p, q, o, n, a, m in np.ndindex(*y.shape):
        assert y[i, p, q, o, n, a, m] == pytest.approx(natural[n, 2 * a + i, 4 * m + 2 * q + p, o])


@pytest.mark.parametrize("block", [1, 2, 4])
def test_conv_in_blocks_of_columns(rng, block):
    """Narrow bands (``Conv.block``) give the whole-width convolution's outputs and exact
    gradients, sparse C3 mask included."""
    w, b = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    x = rng.normal(size=(2, 6, 10, 3))  # output (2, 4, 8, 4)
    wide, narrow = L.Conv(w.copy(), b.copy(), mask), L.Conv(w.copy(), b.copy(), mask)
    narrow.block = block
    np.testing.assert_allclose(narrow.forward(x, train=False), wide.forward(x, train=False),
                               rtol=1e-12, atol=1e-12)
    errors = check_layer(narrow, x)
    assert max(errors.values()) < TOL, errors


def test_input_grad_block_is_the_narrowest_divisor_as_wide_as_the_kernel():
    assert L.input_grad_block(10, 5) == 5  # lenet5's C3: two blocks
    assert L.input_grad_block(24, 5) == 6
    assert L.input_grad_block(7, 5) == 7  # nothing narrower divides it: the whole width
    assert L.input_grad_block(1, 5) == 1  # the 1998 C5 (it computes no input gradient)


def test_gemm_block_is_the_narrowest_band_with_enough_columns():
    assert L.gemm_block(28, 6, split=2) == 14  # lenet5's C1 one row per GEMM row: 84 columns
    # (4 gives 24); gemm_layout takes 2 rows of 4 instead
    assert L.gemm_block(10, 16, split=2) == 2  # C3: 32
    assert L.gemm_block(1, 120) == 1  # the 1998 C5: one output column
    assert L.gemm_block(6, 2, split=2) == 6  # nothing narrower is wide enough: the whole row


def test_gemm_layout_takes_the_band_with_fewer_zeros():
    # lenet5's C1: 2 rows of 4 columns (48 GEMM columns, 25/48 of products used) over 1 row
    # of 14 (84 columns, 5/18)
    assert L.gemm_layout(28, 6, 5, split=2) == (True, 4)
    assert L.gemm_layout(10, 16, 5, split=2) == (False, 2)  # C3: 5/6 beats 2 rows' 25/36
    assert L.gemm_layout(1, 120, 5) == (False, 1)  # the 1998 C5: no pooling, one row


def test_split_conv_refuses_an_odd_output_width(rng):
    conv = L.Conv(rng.normal(size=(2, 1, 3, 3)), np.zeros(2))
    conv.split = 2
    with pytest.raises(ValueError, match="does not split"):
        conv.forward(rng.normal(size=(1, 5, 5, 1)), train=False)
