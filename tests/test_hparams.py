"""Learning-rate schedules and optimizer settings."""

import math

import pytest

from lenet5.errors import Lenet5Error
from lenet5.hparams import OptimizerSpec, Schedule


def test_constant_and_step():
    assert Schedule("constant", lr=0.1).at(999, 10, 1000) == 0.1
    step = Schedule("step", lr=0.1, step_epochs=2, gamma=0.5)
    assert [step.at(s, 10, 100) for s in (0, 19, 20, 40)] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_cosine_runs_from_lr_to_zero():
    s = Schedule("cosine", lr=0.2)
    assert s.at(0, 10, 100) == pytest.approx(0.2)
    assert s.at(50, 10, 100) == pytest.approx(0.1)
    assert s.at(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_onecycle_matches_pytorch_definition():
    s = Schedule("onecycle", lr=1.0, warmup=0.3)
    total = 1000
    assert s.at(0, 10, total) == pytest.approx(1 / 25)
    assert s.at(round(0.3 * total) - 1, 10, total) == pytest.approx(1.0)
    assert s.at(total - 1, 10, total) == pytest.approx(1 / 25 / 1e4)
    lrs = [s.at(i, 10, total) for i in range(total)]
    peak = lrs.index(max(lrs))
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1], strict=True))
    assert all(a >= b for a, b in zip(lrs[peak:-1], lrs[peak + 1:], strict=True))
    assert all(math.isfinite(x) for x in lrs)


@pytest.mark.parametrize("kwargs, flag", [
    ({"name": "rmsprop"}, "--optimizer"),
    ({"name": "adam", "nesterov": True}, "--nesterov"),
])
def test_bad_optimizer_settings_name_the_flag(kwargs, flag):
    with pytest.raises(Lenet5Error, match=flag):
        OptimizerSpec(**kwargs)


def test_bad_schedule_settings_name_the_flag():
    with pytest.raises(Lenet5Error, match="--schedule"):
        Schedule("linear")
    with pytest.raises(Lenet5Error, match="--lr"):
        Schedule("constant", lr=0.0)


@pytest.mark.parametrize("kw, flag", [
    ({"momentum": -1.0}, "--momentum"), ({"momentum": float("nan")}, "--momentum"),
    ({"momentum": 1.0}, "--momentum"), ({"weight_decay": -1.0}, "--weight-decay"),
    ({"weight_decay": float("nan")}, "--weight-decay"),
])
def test_optimizer_settings_out_of_range_name_their_flag(kw, flag):
    with pytest.raises(Lenet5Error, match=flag):
        OptimizerSpec(name="sgd", **kw)


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1.0])
def test_learning_rates_must_be_finite_and_positive(lr):
    with pytest.raises(Lenet5Error, match="--lr must be a positive number"):
        Schedule(lr=lr)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "adam", "beta1": 1.5}, "--beta1 must be at least 0 and below 1"),
    ({"name": "adam", "beta2": -1.0}, "--beta2 must be at least 0 and below 1"),
])
def test_betas_are_checked_before_either_engine_sees_them(kwargs, message):
    with pytest.raises(Lenet5Error, match=message):
        OptimizerSpec(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"step_epochs": 0}, "--step-epochs must be at least 1"),
    ({"gamma": 0.0}, "--gamma must be a positive number"),
    ({"gamma": float("nan")}, "--gamma must be a positive number"),
])
def test_step_schedule_settings_are_checked(kwargs, message):
    with pytest.raises(Lenet5Error, match=message):
        Schedule("step", lr=0.1, **kwargs)
