"""`lenet5.refusal`: the confidence of a candidate digit, the threshold and its calibration."""

from __future__ import annotations

import numpy as np
import pytest

from lenet5.arch import MAP_J
from lenet5.data.nondigits import change_strokes
from lenet5.errors import Lenet5Error
from lenet5.refusal import (
    DEFAULT_THRESHOLD,
    METADATA_KEY,
    MIN_REFUSED,
    SHIFTS,
    VIEWS,
    _moved,
    calibrate,
    check_threshold,
    log_confidence,
    steady_log_probs,
    threshold,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_softmax_confidence_is_the_probability_of_each_class(rng):
    logits = rng.normal(size=(5, 10))
    probs = np.exp(log_confidence(logits, "cross_entropy"))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True))


def test_rbf_confidence_leaves_room_for_rubbish(rng):
    """For the MAP-trained RBF network a picture far from every centre goes to rubbish: its
    classes' probabilities add up to far less than 1."""
    near, far = -rng.uniform(5, 10, (1, 10)), -rng.uniform(40, 60, (1, 10))
    near[0, 3] = -0.01
    probs = np.exp(log_confidence(np.vstack([near, far]), "map"))
    assert probs[0].max() > 0.3 and probs[1].sum() < 1e-10
    expected = np.exp(near) / (np.exp(-MAP_J) + np.exp(near).sum())
    np.testing.assert_allclose(probs[0], expected[0])


def test_threshold_comes_from_the_override_the_file_or_the_default():
    calibrated = {METADATA_KEY: {"threshold": 0.83}}
    assert threshold(calibrated) == 0.83
    assert threshold(calibrated, 0.2) == 0.2
    assert threshold({}) == DEFAULT_THRESHOLD  # a model file from before calibration
    assert threshold({METADATA_KEY: "nonsense"}) == DEFAULT_THRESHOLD


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_threshold_outside_0_1_is_refused(value):
    with pytest.raises(Lenet5Error, match="--reject-threshold must be between 0 and 1"):
        check_threshold(value)
    check_threshold(None)
    check_threshold(0.0)


def test_calibration_reaches_the_stated_error_on_accepted_digits(rng):
    """Wrong answers crowd at low confidence, as a trained network's do: the threshold is
    the lowest that keeps the error among accepted digits at the target."""
    n = 20_000
    confidence = rng.uniform(0.1, 1.0, n)
    correct = rng.random(n) > 0.2 * (1.0 - confidence) ** 2  # 0-16% wrong, least confident
    result = calibrate(confidence, correct, "test digits", target_error=0.01)
    accepted = confidence >= result["threshold"]
    assert np.mean(~correct[accepted]) <= 0.01
    lower = confidence >= result["threshold"] - 0.02  # a lower threshold misses the target
    assert np.mean(~correct[lower]) > 0.01
    assert result["refused"] == pytest.approx(np.mean(~accepted))
    assert result["error_accepted"] == pytest.approx(np.mean(~correct[accepted]))
    assert result["calibrated_on"] == "test digits" and result["digits"] == n


def test_a_network_never_wrong_still_refuses_its_least_confident_digits(rng):
    confidence = rng.uniform(0.5, 1.0, 1000)
    result = calibrate(confidence, np.ones(1000, bool), "easy digits", target_error=0.01)
    assert result["refused"] == pytest.approx(MIN_REFUSED, abs=0.002)
    assert result["error_accepted"] == 0.0


@pytest.mark.parametrize("down, right", [(0, 1), (0, -1), (1, 0), (-1, 0), (2, -3)])
def test_moved_images_shift_and_blank_what_comes_in(rng, down, right):
    images = rng.integers(1, 256, (3, 28, 28)).astype(np.uint8)
    moved = _moved(images, down, right)
    expected = np.roll(images, (down, right), axis=(1, 2))
    rows, cols = np.arange(28)[:, None] - down, np.arange(28)[None, :] - right
    inside = (rows >= 0) & (rows < 28) & (cols >= 0) & (cols < 28)  # (28, 28) came from inside
    np.testing.assert_array_equal(moved, np.where(inside, expected, 0))


class Pixels:
    """A classifier whose logits are sums of pixels: every view reads differently."""

    class arch:  # noqa: N801 -- what the refusal reads of a model's architecture
        loss = "cross_entropy"

    metadata: dict = {}

    def logits(self, images: np.ndarray) -> np.ndarray:
        rows = images.reshape(len(images), -1)[:, :780].astype(np.float64)  # (N, 780)
        return rows.reshape(len(images), 10, 78).mean(axis=2) / 50.0


def test_steady_reading_is_the_mean_probability_over_every_view(rng):
    images = rng.integers(0, 256, (4, 28, 28)).astype(np.uint8)
    model = Pixels()
    views = ([images] + [change_strokes(images, p) for p in VIEWS]
             + [_moved(images, *shift) for shift in SHIFTS])
    probs = [np.exp(log_confidence(model.logits(v), "cross_entropy")) for v in views]
    expected = np.log(np.mean(probs, axis=0))  # (4, 10)
    np.testing.assert_allclose(steady_log_probs(model, images), expected)


def test_a_model_file_is_calibrated_once_its_refusal_is_stored():
    """What tells a run trained to its end from one stopped part-way (serve's newest run, a
    sweep's finished ones, a resume that still has to calibrate)."""
    from lenet5.refusal import METADATA_KEY, calibrated

    assert calibrated({METADATA_KEY: {"threshold": 0.4}, "epochs": 15})
    assert not calibrated({"epochs": 15})
