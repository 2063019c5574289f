"""`tests/number_photos.py`: photographed numbers, the number reader's test pictures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from number_photos import make_number_set
from PIL import Image


@pytest.fixture(scope="module")
def ring_digits() -> tuple[np.ndarray, np.ndarray]:
    """Forty made-up (28, 28) uint8 "digits", rings of various sizes, labelled 0-9 in turn."""
    y, x = np.mgrid[0:28, 0:28]  # (28, 28) each
    images = []
    for i in range(40):
        radius = 5 + i % 5
        distance = np.hypot(y - 14, x - 14 + i % 3)
        images.append(np.where(np.abs(distance - radius) < 1.5, 255, 0).astype(np.uint8))
    return np.stack(images), np.arange(40, dtype=np.uint8) % 10


def test_a_number_set_is_jpegs_of_its_texts_with_a_box_per_digit(ring_digits):
    numbers = make_number_set(*ring_digits, 6, seed=3)
    for jpeg, text, boxes in numbers:
        photo = Image.open(io.BytesIO(jpeg))
        assert photo.format == "JPEG"
        assert 2 <= len(text) <= 6 and len(boxes) == len(text)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= photo.width and 0 <= y0 < y1 <= photo.height
    assert [n[0] for n in numbers] == [n[0] for n in make_number_set(*ring_digits, 6, seed=3)]


@pytest.mark.parametrize("chance", ["touching", "broken"])
def test_the_same_seed_writes_the_same_digits_whatever_the_chances(ring_digits, chance):
    """What benchmarks/read_numbers.py compares: the numbers' digits written otherwise."""
    usual = make_number_set(*ring_digits, 6, seed=3, **{chance: 1.0})
    never = make_number_set(*ring_digits, 6, seed=3, **{chance: 0.0})
    assert [text for _, text, _ in usual] == [text for _, text, _ in never]
    assert [jpeg for jpeg, _, _ in usual] != [jpeg for jpeg, _, _ in never]
