"""`lenet5.model`: a trained network for notebooks, fed raw images in any batch shape."""

import numpy as np
import pytest

from lenet5.arch import LENET5, init_params
from lenet5.engine import make_engine
from lenet5.model import Model, image_batch

NORMALIZATION = {"kind": "mean_std", "pad": 2, "mean": 0.13, "std": 0.31}


@pytest.fixture(scope="module")
def model() -> Model:
    engine = make_engine("numpy", LENET5, init_params(LENET5, 0))
    return Model(engine, {"classes": [str(k) for k in range(10)],
                          "input_normalization": NORMALIZATION})


@pytest.mark.parametrize("shape", [(28, 28), (3, 28, 28), (3, 1, 28, 28)])
def test_one_image_a_batch_or_a_channel_axis_is_a_batch(shape):
    images = np.arange(np.prod(shape)).reshape(shape) % 256
    assert image_batch(images).shape == (1 if len(shape) == 2 else 3, 28, 28)


def test_probabilities_are_each_image_s_and_predict_takes_the_likeliest(model):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    probs = model.predict_proba(images)
    assert probs.shape == (5, 10) and np.allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(images), probs.argmax(axis=1))
    one = model.predict_proba(images[2])  # float32 sums of another batch size: another order
    np.testing.assert_allclose(one, probs[2:3], rtol=1e-4)


def test_no_images_give_no_rows(model):
    """An empty batch (a picture whose candidates were all dropped) is an empty answer."""
    none = np.zeros((0, 28, 28), np.uint8)
    assert model.logits(none).shape == (0, 10) and model.predict_proba(none).shape == (0, 10)
    assert model.predict(none).shape == (0,)
