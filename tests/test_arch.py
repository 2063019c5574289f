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
