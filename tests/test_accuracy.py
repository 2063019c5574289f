"""The accuracy gate: a short NumPy-engine run on the real MNIST must reach a stated figure."""

import pytest

from lenet5.training import TrainConfig, read_metrics, train

GATE = 0.975  # one epoch of the default recipe; the full default run reaches >= 99.2%


@pytest.mark.mnist
@pytest.mark.slow
def test_one_epoch_of_the_default_recipe_reaches_the_gate(mnist, tmp_path):
    run = train(TrainConfig(epochs=1, out=str(tmp_path / "run")), log=lambda _: None)
    accuracy = read_metrics(run)[-1]["test_acc"]
    assert accuracy >= GATE, f"one epoch reached {accuracy:.4f}, below the gate {GATE}"
