"""Random affine and elastic distortions of whole image arrays."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from lenet5.data import distortions as D

AFFINE_LIMITS = ("MAX_SHIFT", "MAX_SCALE", "MAX_SQUEEZE", "MAX_SHEAR", "MAX_ROTATION")


@pytest.fixture
def digits():
    """Forty synthetic 28x28 'digits': a bright bar and a blob at random places."""
    rng = np.random.default_rng(7)
    images = np.zeros((40, 28, 28), np.uint8)
    for i in range(40):  # test data only
        r, c = rng.integers(6, 16, 2)
        images[i, r:r + 8, c:c + 3] = 255
        images[i, r + 2:r + 5, c + 3:c + 7] = rng.integers(100, 256)
    return images


def test_shape_dtype_and_determinism(digits):
    a = D.distort(digits, np.random.default_rng(0))
    b = D.distort(digits, np.random.default_rng(0))
    c = D.distort(digits, np.random.default_rng(1))
    assert a.shape == digits.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, digits)


def test_no_distortion_is_the_identity(digits, monkeypatch):
    for name in AFFINE_LIMITS:
        monkeypatch.setattr(D, name, 0.0)
    np.testing.assert_array_equal(D.distort(digits, np.random.default_rng(0)), digits)


def test_distortions_keep_the_ink_on_the_image(digits):
    for elastic, low, high in ((False, 0.7, 1.4), (True, 0.4, 2.5)):  # elastic stretches more
        out = D.distort(digits, np.random.default_rng(3), elastic=elastic)
        ratio = out.reshape(40, -1).sum(1) / digits.reshape(40, -1).sum(1)  # (40,)
        assert np.all((ratio > low) & (ratio < high)), (elastic, ratio)
        assert 0.85 < ratio.mean() < 1.2, (elastic, ratio.mean())


def test_bilinear_shifts_interpolates_and_reads_zero_outside():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4) * 10  # (1, 4, 4)
    rows, cols = np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()])[None]  # (1, 2, 16)
    same = D.bilinear(image, grid.astype(np.float32)).reshape(4, 4)
    np.testing.assert_array_equal(same, image[0])
    shifted = D.bilinear(image, (grid + [[[1.0], [0.0]]]).astype(np.float32)).reshape(4, 4)
    np.testing.assert_array_equal(shifted[:3], image[0, 1:])  # rows read one lower
    np.testing.assert_array_equal(shifted[3], 0)  # below the image: background
    half = D.bilinear(image, np.array([[[0.5], [0.5]]], np.float32))
    assert half[0, 0] == round((0 + 10 + 40 + 50) / 4)
    far = D.bilinear(image, np.array([[[-9.0, 40.0], [2.0, -7.5]]], np.float32))
    np.testing.assert_array_equal(far, 0)


def test_random_affine_stays_within_its_limits():
    inverse, shifts = D.random_affine(2000, np.random.default_rng(0))
    forward = np.linalg.inv(inverse)  # (2000, 2, 2)
    det = np.linalg.det(forward)
    assert det.min() > (1 - D.MAX_SCALE) ** 2 * 0.999 and det.max() < (1 + D.MAX_SCALE) ** 2
    assert np.abs(shifts).max() <= D.MAX_SHIFT
    assert inverse.std(axis=0).min() > 0  # every image gets its own map


def test_gaussian_matrix_smooths_like_scipy():
    noise = np.random.default_rng(0).uniform(-1, 1, (3, 2, 28, 28))
    g = D.gaussian_matrix(28).astype(np.float64)
    expected = gaussian_filter(noise, sigma=(0, 0, D.ELASTIC_SIGMA, D.ELASTIC_SIGMA),
                               mode="constant")
    np.testing.assert_allclose(g @ noise @ g.T, expected, atol=1e-6)


def test_elastic_fields_are_smooth_pixel_scale_displacements():
    noise = D.elastic_noise(500, 28, 28, np.random.default_rng(0))  # (500, 2, 28, 28)
    assert noise.min() >= -1.0 and noise.max() < 1.0
    fields = D.smoothed(noise)
    assert fields.shape == (500, 2, 28, 28) and fields.dtype == np.float32
    typical = np.abs(fields).mean()
    assert 0.3 < typical < 3.0  # about a pixel, as in Simard et al.
    neighbour_step = np.abs(np.diff(fields, axis=3)).mean()
    assert neighbour_step < 0.25 * typical  # smooth: neighbours move together


def test_distortions_are_the_same_on_one_thread_and_on_two(compute_threads):
    """Blocks of images are distorted on every core (`threads.over_blocks`), their random
    numbers drawn in block order on one thread: the cores change no pixel."""
    images = (np.random.default_rng(1).random((1000, 28, 28)) * 255).astype(np.uint8)  # 4 blocks
    made = []
    for workers in (1, 2):
        with compute_threads(workers):
            made.append([D.distort(images, np.random.default_rng(2), elastic=elastic)
                         for elastic in (False, True)])
    for one_thread, two_threads in zip(*made, strict=True):
        assert np.array_equal(one_thread, two_threads)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        D.distort(np.zeros((2, 28, 28), np.float32), np.random.default_rng(0))


def test_shift_moves_each_image_by_whole_pixels_within_two():
    rng = np.random.default_rng(0)
    images = np.zeros((200, 28, 28), np.uint8)
    images[:, 10:18, 10:18] = rng.integers(1, 256, (200, 8, 8))  # ink well inside the margin
    moved = D.shift(images, np.random.default_rng(1))
    assert moved.shape == images.shape and moved.dtype == np.uint8
    np.testing.assert_array_equal(moved.sum(axis=(1, 2)), images.sum(axis=(1, 2)))  # all kept
    rows = np.argmax(moved.any(axis=2), axis=1) - 10  # (200,) vertical offsets
    cols = np.argmax(moved.any(axis=1), axis=1) - 10
    assert set(rows) == set(cols) == {-2, -1, 0, 1, 2}
    np.testing.assert_array_equal(moved, D.shift(images, np.random.default_rng(1)))
