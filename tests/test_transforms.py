"""Padding, pixel statistics, normalisation and the validation split."""

import numpy as np
import pytest

from lenet5.data.transforms import (
    mean_std,
    normalize,
    pad,
    pixel_stats,
    prepare_inputs,
    split_validation,
)
from lenet5.errors import DataError, ModelFileError


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (10, 28, 28), np.uint8)


def test_pad_centres_the_image_in_zeros(images):
    out = pad(images)
    assert out.shape == (10, 32, 32) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 2:30, 2:30], images)
    assert out.sum() == images.sum()
    assert pad(images, 0).shape == (10, 28, 28)


def test_pixel_stats_match_a_float_computation(images):
    x = images / 255.0
    mean, std = pixel_stats(images)
    assert mean == pytest.approx(x.mean(), abs=1e-12)
    assert std == pytest.approx(x.std(), abs=1e-12)
    with pytest.raises(TypeError):
        pixel_stats(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize(images, dtype):
    out = normalize(images, 0.1307, 0.3081, dtype)
    assert out.shape == (10, 1, 28, 28) and out.dtype == dtype
    expected = (images[:, None] / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_normalize_into_an_existing_array_gives_the_same_values(images):
    fresh = normalize(images, 0.1307, 0.3081)
    reused = np.full((10, 1, 28, 28), np.nan, np.float32)
    assert normalize(images, 0.1307, 0.3081, out=reused) is reused
    np.testing.assert_array_equal(reused, fresh)


def test_normalize_gives_the_1998_input_range():
    out = normalize(np.array([[[0, 255]]], np.uint8), 0.1 / 1.275, 1 / 1.275)
    np.testing.assert_allclose(out.ravel(), [-0.1, 1.175], atol=1e-6)


def test_split_is_deterministic_disjoint_and_ordered(images):
    labels = np.arange(10, dtype=np.uint8)
    tx, ty, vx, vy = split_validation(images, labels, 3, seed=1)
    assert tx.shape == (7, 28, 28) and vx.shape == (3, 28, 28)
    assert sorted(ty.tolist() + vy.tolist()) == list(range(10))
    assert list(ty) == sorted(ty) and list(vy) == sorted(vy)
    np.testing.assert_array_equal(vx, images[vy])
    again = split_validation(images, labels, 3, seed=1)
    np.testing.assert_array_equal(again[3], vy)
    others = {tuple(split_validation(images, labels, 3, seed=s)[3]) for s in range(5)}
    assert len(others) > 1


def test_split_without_validation(images):
    labels = np.zeros(10, np.uint8)
    tx, ty, vx, vy = split_validation(images, labels, 0, seed=0)
    np.testing.assert_array_equal(tx, images)
    assert vx.shape == (0, 28, 28) and vy.shape == (0,)


@pytest.mark.parametrize("val_size", [10, 11, -1])
def test_split_refuses_impossible_sizes(images, val_size):
    with pytest.raises(DataError, match="--val-size"):
        split_validation(images, np.zeros(10, np.uint8), val_size, seed=0)


def test_mean_std_of_each_normalisation_and_an_unknown_one(images):
    assert mean_std({"kind": "mean_std", "mean": 0.13, "std": 0.31}) == (0.13, 0.31)
    mean, std = mean_std({"kind": "lecun_1998", "background": -0.1, "ink": 1.175})
    assert (0 - mean) / std == pytest.approx(-0.1) and (1 - mean) / std == pytest.approx(1.175)
    with pytest.raises(ModelFileError, match="unknown input normalisation 'whiten'"):
        prepare_inputs(images, {"kind": "whiten", "pad": 2})
