"""`lenet5.outputs`: what a network's outputs mean, for every engine's outputs alike."""

import numpy as np
import pytest

from lenet5 import arch
from lenet5.numpy_engine.losses import LOSSES
from lenet5.outputs import (
    CLASS_LOG_PROBS,
    log_softmax,
    map_log_probs,
    mean_loss,
    probabilities,
)


def test_every_loss_of_arch_has_its_log_probabilities():
    assert set(CLASS_LOG_PROBS) == set(arch.LOSSES) == set(LOSSES)


def test_log_softmax_is_stable_and_normalised():
    logits = np.array([[1e4, 0.0, -1e4], [3.0, 3.0, 3.0]])
    log_p = log_softmax(logits)
    assert np.all(np.isfinite(log_p))
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0)
    np.testing.assert_allclose(log_p[1], np.log(1 / 3))


def test_map_posteriors_leave_room_for_the_rubbish_class(rng):
    scores = -rng.uniform(0, 5, size=(4, 10))  # negated RBF penalties
    p = np.exp(map_log_probs(scores))
    expected = np.exp(scores) / (np.exp(-arch.MAP_J) + np.exp(scores).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(p, expected)
    assert np.all(p.sum(axis=1) < 1)


@pytest.mark.parametrize("loss", arch.LOSSES)
def test_mean_loss_is_the_numpy_engines_loss(rng, loss):
    outputs = rng.normal(size=(6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 6)
    assert mean_loss(outputs, labels, loss) == LOSSES[loss](outputs, labels)[0]


def test_probabilities_are_float64_softmax(rng):
    outputs = rng.normal(size=(3, 10)).astype(np.float32)
    p = probabilities(outputs)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_array_equal(p.argmax(axis=1), outputs.argmax(axis=1))
