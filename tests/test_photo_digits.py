"""`tests/photo_digits.py`: MNIST test digits made into JPEG "photos" of ink on paper."""

from __future__ import annotations

import io

import numpy as np
import pytest
from photo_digits import make_photo, make_photo_set, to_jpeg
from PIL import Image

from lenet5.images import preprocess_image

pytestmark = pytest.mark.mnist  # real handwriting, from the mnist_test_digits fixture


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_a_photo_is_dark_ink_on_light_paper(mnist_test_digits):
    images, _ = mnist_test_digits
    rng = np.random.default_rng(0)
    for digit in images[:20]:
        photo = make_photo(digit, rng)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert min(photo.shape[:2]) >= 150 and max(photo.shape[:2]) <= 600
        gray = photo.mean(axis=2)  # (H, W)
        assert np.median(gray) > 140  # mostly paper ...
        assert gray.min() < np.median(gray) - 60  # ... with dark ink on it


def test_photos_are_deterministic_by_seed(mnist_test_digits):
    images, _ = mnist_test_digits
    first = make_photo(images[0], np.random.default_rng(7))
    assert np.array_equal(first, make_photo(images[0], np.random.default_rng(7)))
    assert not np.array_equal(first, make_photo(images[0], np.random.default_rng(8)))


def test_a_photo_set_is_labelled_jpegs_fixed_by_its_seed(mnist_test_digits):
    images, labels = mnist_test_digits
    photos = make_photo_set(images, labels, 12, seed=3)
    assert len(photos) == 12
    for jpeg, label in photos:
        assert isinstance(jpeg, bytes) and isinstance(label, int) and 0 <= label <= 9
        assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    assert photos == make_photo_set(images, labels, 12, seed=3)
    assert photos != make_photo_set(images, labels, 12, seed=4)


def test_preprocessing_a_photo_gives_back_its_digit(mnist_test_digits):
    """The gate's premise: what the network sees of a photo is close to the MNIST original
    (the photo's rotation of up to 12 degrees keeps this below 1)."""
    images, _ = mnist_test_digits
    rng = np.random.default_rng(1)
    corr = []
    for digit in images[:50]:
        jpeg = to_jpeg(make_photo(digit, rng), rng)
        corr.append(similarity(preprocess_image(jpeg), digit))
    assert np.mean(corr) > 0.75
    assert min(corr) > 0.3  # no photo loses its digit to a speck or a shadow


def test_bad_requests_are_refused(mnist_test_digits):
    images, labels = mnist_test_digits
    with pytest.raises(ValueError, match="blank"):
        make_photo(np.zeros((28, 28), dtype=np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="between 1 and"):
        make_photo_set(images[:5], labels[:5], 6, seed=0)
