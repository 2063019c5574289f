"""The engine-neutral architecture description: shapes, counts, initial values."""

import numpy as np
import pytest

from lenet5.arch import LENET5, RBF, get_arch, init_params, rbf_centres_of
from lenet5.errors import Lenet5Error


def test_modern_lenet5_shapes_and_counts():
    rows = {r["name"]: r for r in LENET5.layer_counts()}
    assert [r for r in rows] == ["C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT"]
    assert rows["C1"]["output"] == [6, 28, 28] and rows["C1"]["params"] == 156
    assert rows["C1"]["connections"] == 122_304
    assert rows["S4"]["output"] == [16, 5, 5]
    assert rows["C3"]["params"] == 2416
    assert rows["C5"]["params"] == 48_120 and rows["F6"]["params"] == 10_164
    assert rows["OUTPUT"]["output"] == [10]
    assert sum(r["params"] for r in rows.values()) == 61_706
    assert LENET5.num_classes == 10


def test_param_shapes_use_pytorch_layouts():
    shapes = LENET5.param_shapes()
    assert shapes["C1.weight"] == (6, 1, 5, 5)
    assert shapes["C3.weight"] == (16, 6, 5, 5)
    assert shapes["C5.weight"] == (120, 400)
    assert shapes["OUTPUT.bias"] == (10,)


def test_init_is_deterministic_float32_and_scaled():
    a, b, c = init_params(LENET5, 1), init_params(LENET5, 1), init_params(LENET5, 2)
    assert all(a[k].dtype == np.float32 for k in a)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["C1.weight"], c["C1.weight"])
    assert np.all(a["C1.bias"] == 0)
    assert np.abs(a["C1.weight"]).max() <= np.sqrt(6 / 25)  # He uniform, fan-in 25
    assert np.abs(a["C5.weight"]).max() <= np.sqrt(6 / 400)


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(Lenet5Error, match="unknown architecture 'lenet6'"):
        get_arch("lenet6")


def test_rbf_centres_fit_only_a_layer_of_their_shape():
    assert rbf_centres_of(RBF("OUTPUT", 84, 10)).shape == (10, 84)
    with pytest.raises(ValueError, match="OUTPUT: the RBF bitmaps are"):
        rbf_centres_of(RBF("OUTPUT", 84, 26))


def test_variants_change_the_layers_not_the_parameters():
    from lenet5.arch import AvgPool, modern_lenet5

    variant = get_arch("lenet5", "avg", "sigmoid")
    assert variant.variant == {"pool": "avg", "activation": "sigmoid"}
    assert isinstance(variant.layers[1], AvgPool) and variant.layers[0].activation == "sigmoid"
    assert variant.param_shapes() == LENET5.param_shapes()
    assert [r["params"] for r in variant.layer_counts()] == [
        r["params"] for r in LENET5.layer_counts()]
    assert modern_lenet5() == LENET5 and get_arch("lenet5") == LENET5
    assert "sigmoid, 2x2 avg-pool" in variant.description


@pytest.mark.parametrize("pool, activation, message", [
    ("mean", None, "unknown --pool 'mean'"),
    (None, "softplus", "unknown --activation 'softplus'"),
])
def test_unknown_variants_are_named(pool, activation, message):
    with pytest.raises(Lenet5Error, match=message):
        get_arch("lenet5", pool, activation)


def test_the_1998_network_takes_no_variant():
    with pytest.raises(Lenet5Error, match="--pool avg is a variant of lenet5 only"):
        get_arch("lenet5-1998", "avg")
    assert get_arch("lenet5-1998", "subsample", "scaled_tanh").name == "lenet5-1998"


def test_metadata_without_a_variant_is_the_default_network():
    from lenet5.arch import arch_of

    assert arch_of({"arch": "lenet5"}) == LENET5
    assert arch_of({"arch": "lenet5", "pool": "avg", "activation": "tanh"}).pool == "avg"


def test_normal_init_draws_weights_and_zero_biases():
    params = init_params(LENET5, 0, weight_std=1e-3)
    assert np.all(params["C1.bias"] == 0)
    assert abs(params["C5.weight"].std() - 1e-3) < 1e-4
    np.testing.assert_array_equal(params["C1.weight"], init_params(LENET5, 0, 1e-3)["C1.weight"])
