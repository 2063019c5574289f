"""`lenet5.engine`: one batched forward pass and evaluation for every engine, and the factory."""

import importlib.util

import numpy as np
import pytest

from lenet5 import arch as A
from lenet5.engine import batched_logits, evaluate, make_engine
from lenet5.errors import Lenet5Error
from lenet5.numpy_engine.model import ACTIVATIONS
from lenet5.outputs import mean_loss


class Recorder:
    """An engine whose outputs are the inputs' first pixels, remembering each batch size."""

    name, device, arch = "recorder", "cpu", A.LENET5

    def __init__(self):
        self.batches = []

    def forward(self, x):
        self.batches.append(len(x))
        return x[:, 0, 0, :10].copy()


def test_batched_logits_cover_every_image_in_order(rng):
    x = rng.normal(size=(23, 1, 32, 32)).astype(np.float32)
    engine = Recorder()
    np.testing.assert_array_equal(batched_logits(engine, x, batch_size=10), x[:, 0, 0, :10])
    assert engine.batches == [10, 10, 3]


def test_batched_logits_of_no_images_are_no_rows():
    engine = Recorder()
    logits = batched_logits(engine, np.zeros((0, 1, 32, 32), np.float32))
    assert logits.shape == (0, A.LENET5.num_classes) and engine.batches == []


@pytest.mark.parametrize("loss", A.LOSSES)
def test_evaluate_sums_the_per_image_losses(rng, loss, monkeypatch):
    engine = Recorder()
    monkeypatch.setattr(engine, "arch", A.LENET5 if loss == "cross_entropy" else A.LENET5_1998)
    x = rng.normal(size=(23, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 23)
    loss_sum, predictions = evaluate(engine, x, y, batch_size=10)
    outputs = x[:, 0, 0, :10]
    assert loss_sum == pytest.approx(mean_loss(outputs.astype(np.float64), y, loss) * 23,
                                     rel=1e-6)
    np.testing.assert_array_equal(predictions, outputs.argmax(axis=1))


@pytest.mark.parametrize("name, device, message", [
    ("numpy", "cuda", "--device cuda needs --engine torch"),
    ("numpy", "mps", "--device mps needs --engine torch"),
    ("onnx", "auto", "--engine onnx only runs trained models"),
    ("tensorflow", "auto", "unknown --engine 'tensorflow'"),
])
def test_make_engine_refuses_what_it_cannot_do(name, device, message):
    with pytest.raises(Lenet5Error, match=message):
        make_engine(name, A.LENET5, A.init_params(A.LENET5, 0), device=device)


def test_each_engine_implements_every_activation_of_arch():
    assert set(ACTIVATIONS) == set(A.ACTIVATIONS)
    if importlib.util.find_spec("torch") is not None:
        from lenet5.torch_engine.model import ACTIVATIONS as TORCH_ACTIVATIONS

        assert set(TORCH_ACTIVATIONS) == set(A.ACTIVATIONS)
