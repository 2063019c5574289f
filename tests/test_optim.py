"""NumPy optimizers against steps worked out by hand from their definitions."""

import numpy as np
import pytest

from lenet5.hparams import OptimizerSpec
from lenet5.numpy_engine.optim import Optimizer


def run(spec: OptimizerSpec, grads: list[float], lr: float = 0.1, p0: float = 1.0) -> list[float]:
    params = {"w": np.array([p0])}
    opt = Optimizer(spec, params)
    history = []
    for g in grads:
        opt.step({"w": np.array([g])}, lr)
        history.append(float(params["w"][0]))
    return history


def test_plain_sgd():
    assert run(OptimizerSpec("sgd", momentum=0.0), [0.5, -1.0]) == pytest.approx([0.95, 1.05])


def test_sgd_momentum_and_weight_decay():
    # g1 = 0.5 + 0.1*1 = 0.6; buf = 0.6; p = 1 - 0.1*0.6 = 0.94
    # g2 = 0.5 + 0.1*0.94 = 0.594; buf = 0.9*0.6 + 0.594 = 1.134; p = 0.94 - 0.1134 = 0.8266
    spec = OptimizerSpec("sgd", momentum=0.9, weight_decay=0.1)
    assert run(spec, [0.5, 0.5]) == pytest.approx([0.94, 0.8266], rel=1e-12)


def test_sgd_nesterov():
    # step 1: buf = 1; update = g + 0.9*buf = 1.9; p = 1 - 0.19 = 0.81
    # step 2: buf = 0.9 + 1 = 1.9; update = 1 + 0.9*1.9 = 2.71; p = 0.81 - 0.271 = 0.539
    spec = OptimizerSpec("sgd", momentum=0.9, nesterov=True)
    assert run(spec, [1.0, 1.0]) == pytest.approx([0.81, 0.539], rel=1e-12)


def test_adam_first_steps():
    # With bias correction the first step moves by lr * g/|g| (up to eps).
    # step 2, g=-1: m = 0.09 - 0.1 = -0.01 -> mhat = -0.01/0.19; v = 0.000999 + 0.001
    # -> vhat = 0.001999/0.001999 = 1; p = p1 - 0.1*(-0.0526316)/(1 + 1e-8)
    got = run(OptimizerSpec("adam"), [1.0, -1.0])
    mhat = -0.01 / (1 - 0.9**2)
    vhat = (0.999 * 0.001 + 0.001) / (1 - 0.999**2)
    assert got[0] == pytest.approx(0.9, rel=1e-7)
    assert got[1] == pytest.approx(got[0] - 0.1 * mhat / (np.sqrt(vhat) + 1e-8), rel=1e-12)


def test_adam_l2_versus_adamw_decoupled_decay():
    # Adam adds wd*p to the gradient; AdamW shrinks p by lr*wd before the Adam step.
    adam = run(OptimizerSpec("adam", weight_decay=0.5), [0.0], p0=2.0)
    adamw = run(OptimizerSpec("adamw", weight_decay=0.5), [0.0], p0=2.0)
    assert adam[0] == pytest.approx(2.0 - 0.1, rel=1e-7)  # g = 1 -> normalised step lr
    assert adamw[0] == pytest.approx(2.0 * (1 - 0.1 * 0.5))  # zero grad: decay only


def test_state_round_trip_continues_identically():
    spec = OptimizerSpec("adam")
    params = {"w": np.array([1.0, 2.0])}
    opt = Optimizer(spec, params)
    opt.step({"w": np.array([0.3, -0.2])}, 0.01)
    saved = {k: v.copy() for k, v in opt.state_dict().items()}
    twin_params = {"w": params["w"].copy()}
    twin = Optimizer(spec, twin_params)
    twin.load_state_dict(saved)
    for o in (opt, twin):
        o.step({"w": np.array([0.1, 0.1])}, 0.01)
    np.testing.assert_array_equal(params["w"], twin_params["w"])
    assert twin.steps == 2
