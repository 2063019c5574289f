"""The whole NumPy network: gradients end to end, outputs, feature maps, the engine."""

import sys

import numpy as np
import pytest
from archs import EVERY_ARCH
from gradcheck import EPS

from lenet5.arch import LENET5, init_params
from lenet5.engine import evaluate
from lenet5.hparams import OptimizerSpec
from lenet5.numpy_engine import layers as L
from lenet5.numpy_engine.model import ACTIVATIONS, NumpyEngine, NumpyNet, keep_freed_memory


@pytest.mark.parametrize("arch", list(EVERY_ARCH.values()), ids=list(EVERY_ARCH))
def test_network_gradients_match_finite_differences(arch):
    rng = np.random.default_rng(0)
    net = NumpyNet(arch, init_params(arch, 0), dtype=np.float64)
    x = rng.normal(size=(3, 1, 32, 32))
    labels = np.array([1, 7, 3])
    _, _, grads = net.loss_and_grads(x, labels)
    assert set(grads) == set(arch.param_shapes())
    for name, param in net.params.items():
        flat, analytic, numeric = param.reshape(-1), grads[name].reshape(-1), []
        picks = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
        for i in picks:
            old = flat[i]
            flat[i] = old + EPS
            up = net.loss_fn(net.forward(x), labels)[0]
            flat[i] = old - EPS
            down = net.loss_fn(net.forward(x), labels)[0]
            flat[i] = old
            numeric.append((up - down) / (2 * EPS))
        # normwise: the loss is O(100) for lenet5-1998, so finite differences of its tiny
        # entries carry ~1e-9 of rounding; the layer tests check entrywise
        numeric = np.array(numeric)
        error = np.linalg.norm(analytic[picks] - numeric) / np.linalg.norm(numeric)
        assert error < 1e-6, (name, error)


def test_feature_maps_name_every_layer():
    net = NumpyNet(LENET5, init_params(LENET5, 0))
    maps = dict(net.feature_maps(np.zeros((2, 1, 32, 32), np.float32)))
    assert list(maps) == ["C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT"]
    assert maps["C1"].shape == (2, 6, 28, 28) and maps["S4"].shape == (2, 16, 5, 5)
    assert maps["OUTPUT"].shape == (2, 10)


@pytest.mark.parametrize("arch", list(EVERY_ARCH.values()), ids=list(EVERY_ARCH))
def test_layouts_change_no_map_output_gradient_or_curvature(arch):
    """Convolutions feeding a pool store their output windowed (C1) or split (C3); nothing
    may show that: every feature map, the outputs, loss, gradients and SDLM curvatures equal
    those of the same network computed in natural order."""
    net = NumpyNet(arch, init_params(arch, 0), dtype=np.float64)
    convs = [layer for _, layer in net.layers if isinstance(layer, L.Conv)]
    assert [conv.split for conv in convs] == [2, 2, 1][:len(convs)]  # C1, C3 feed pools
    assert [conv.windowed for conv in convs] == [True, False, False][:len(convs)]
    plain = NumpyNet(arch, init_params(arch, 0), dtype=np.float64)
    for _, layer in plain.layers:
        layer.split, layer.windowed, layer.block, layer.source = 1, False, None, None
    x = np.random.default_rng(0).normal(size=(2, 1, 32, 32))
    maps, expected = dict(net.feature_maps(x)), dict(plain.feature_maps(x))
    assert list(maps) == list(expected)
    for name in maps:
        np.testing.assert_allclose(maps[name], expected[name], rtol=1e-12, atol=1e-12)
    labels = np.array([3, 7])
    loss, out, grads = net.loss_and_grads(x, labels)
    plain_loss, plain_out, plain_grads = plain.loss_and_grads(x, labels)
    assert loss == pytest.approx(plain_loss, rel=1e-12)
    np.testing.assert_allclose(out, plain_out, rtol=1e-12, atol=1e-12)
    curvatures, plain_curvatures = net.curvature(x), plain.curvature(x)
    for name in grads:
        np.testing.assert_allclose(grads[name], plain_grads[name], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(curvatures[name], plain_curvatures[name], rtol=1e-10,
                                   atol=1e-14)
    c1 = L.Conv(net.params["C1.weight"].copy(), net.params["C1.bias"].copy())
    activation = ACTIVATIONS[arch.layers[0].activation]()
    direct = activation.forward(c1.forward(x.transpose(0, 2, 3, 1), train=False), False)
    np.testing.assert_allclose(maps["C1"], direct.transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)


def test_allocator_keeps_freed_memory_on_64_bit_glibc(monkeypatch):
    import platform

    keep_freed_memory.cache_clear()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() == (glibc and sys.maxsize > 2**32)
    keep_freed_memory.cache_clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own tuning wins
    assert keep_freed_memory() is False
    keep_freed_memory.cache_clear()


def test_inference_keeps_no_backward_caches():
    net = NumpyNet(LENET5, init_params(LENET5, 0))
    net.forward(np.zeros((4, 1, 32, 32), np.float32), train=False)
    cached = ("rows", "t", "routes", "positive", "x")
    assert not any(getattr(layer, name, None) is not None for _, layer in net.layers
                   for name in cached)


def test_engine_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1, 32, 32)).astype(np.float32)
    y = (x[:, 0, 10:20, 10:20].mean(axis=(1, 2)) > 0).astype(np.int64)
    engine = NumpyEngine(LENET5, init_params(LENET5, 0), OptimizerSpec("adam"))
    engine.bind_training_data(x, y)
    first = None
    for _ in range(15):
        for b in range(4):
            engine.train_step(np.arange(b * 64, (b + 1) * 64), 2e-3)
        loss, correct, seen = engine.take_train_metrics()
        first = first if first is not None else loss / seen
    assert loss / seen < first / 3
    assert correct / seen > 0.9
    _, preds = evaluate(engine, x, y)
    assert np.mean(preds == y) > 0.9


def test_batches_split_over_threads_train_as_one(monkeypatch):
    """Parts of a batch on replicas in threads: the same outputs, losses and updates as the
    batch in one piece, to float32 rounding."""
    from lenet5.numpy_engine import model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    engines = []
    for workers in (1, 3):
        monkeypatch.setattr(model, "compute_workers", lambda w=workers: w)
        engine = NumpyEngine(LENET5, init_params(LENET5, 0), OptimizerSpec("adam"))
        assert len(engine.nets) == workers
        engine.bind_training_data(x, y)
        for step in range(3):
            engine.train_step(np.arange(step * 100, step * 100 + 100), 1e-3)
        engines.append(engine)
    one, three = engines
    np.testing.assert_allclose(three.forward(x), one.forward(x), rtol=1e-4, atol=1e-5)
    for name, p in one.net.params.items():
        np.testing.assert_allclose(three.net.params[name], p, rtol=1e-4, atol=1e-6)
        assert all(net.params[name] is three.net.params[name] for net in three.nets)
    loss_one, correct_one, _ = one.take_train_metrics()
    loss_three, correct_three, seen = three.take_train_metrics()
    assert seen == 300 and correct_three == correct_one
    assert loss_three == pytest.approx(loss_one, rel=1e-5)


def test_engine_parameters_are_float32_copies():
    engine = NumpyEngine(LENET5, init_params(LENET5, 3))
    params = engine.parameters()
    params["C1.weight"][...] = 0
    assert np.abs(engine.net.params["C1.weight"]).sum() > 0
    assert all(v.dtype == np.float32 for v in params.values())
