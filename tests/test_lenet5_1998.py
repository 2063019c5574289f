"""The faithful 1998 LeNet-5: its layers, MAP loss and SDLM against finite differences (float64),
PyTorch autograd where installed, brute-force Gauss-Newton diagonals, and the paper's counts."""

import json

import numpy as np
import pytest
from gradcheck import check_layer, max_rel_error, numeric_grad

from lenet5 import cli
from lenet5.arch import C3_INPUTS, C3_TABLE, LENET5_1998, MAP_J, get_arch, init_params, rbf_centres
from lenet5.engine import batched_logits, evaluate
from lenet5.hparams import OptimizerSpec, Schedule
from lenet5.numpy_engine import layers as L
from lenet5.numpy_engine.losses import map_curvature, map_loss, softmax_curvature
from lenet5.numpy_engine.model import NumpyEngine, NumpyNet
from lenet5.numpy_engine.optim import Optimizer

TOL = 1e-6


@pytest.fixture
def rng():
    return np.random.default_rng(1998)


# --- the paper's numbers ----------------------------------------------------------------------

def test_summary_counts_are_the_papers():
    rows = {r["name"]: r for r in LENET5_1998.layer_counts()}
    assert list(rows) == ["C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT"]
    params = {name: r["params"] for name, r in rows.items()}
    assert params == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48_120, "F6": 10_164,
                      "OUTPUT": 0}
    assert sum(params.values()) == 60_000
    connections = {name: r["connections"] for name, r in rows.items()}
    assert connections == {"C1": 122_304, "S2": 5_880, "C3": 151_600, "S4": 2_000,
                           "C5": 48_120, "F6": 10_164, "OUTPUT": 840}
    assert sum(connections.values()) == 340_908  # the paper's total, section II-B
    assert rows["C5"]["output"] == [120, 1, 1] and rows["F6"]["output"] == [84]


def test_c3_connection_table_is_table_one():
    table = np.array(C3_TABLE)  # (16 C3 maps, 6 S2 maps)
    assert table.shape == (16, 6) and table.sum() == 60
    assert [tuple(np.flatnonzero(row)) for row in table] == [tuple(sorted(m)) for m in C3_INPUTS]
    # the paper's layout: six maps of 3 contiguous inputs, six of 4 contiguous, three of 4
    # non-contiguous, one of all 6
    assert table.sum(axis=1).tolist() == [3] * 6 + [4] * 9 + [6]
    assert list(table[14]) == [True, False, True, True, False, True]  # map 14: {0, 2, 3, 5}
    assert LENET5_1998.layers[2].table == C3_TABLE


def test_summary_cli_json_and_bitmaps(capsys):
    assert cli.main(["summary", "--arch", "lenet5-1998", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["params"] for r in doc["layers"]] == [156, 12, 1516, 32, 48120, 10164, 0]
    assert doc["total_params"] == 60_000
    assert cli.main(["summary", "--arch", "lenet5-1998", "--bitmaps"]) == 0
    out = capsys.readouterr().out
    assert "OUTPUT RBF centres" in out and ".#####." in out
    assert len([line for line in out.splitlines() if set(line) <= set("#. ")
                and len(line) == 10 * 7 + 9 * 2]) == 12  # 12 bitmap rows, 10 digits wide


def test_summary_bitmaps_needs_an_rbf_arch(capsys):
    assert cli.main(["summary", "--arch", "lenet5", "--bitmaps"]) == 1
    err = capsys.readouterr().err
    assert "no RBF centres" in err and "lenet5-1998" in err


def test_rbf_centres_are_distinct_plus_minus_one_bitmaps():
    centres = rbf_centres()
    assert centres.shape == (10, 84)
    assert set(np.unique(centres)) == {-1.0, 1.0}
    hamming = (centres[:, None, :] != centres[None, :, :]).sum(axis=2)  # (10, 10)
    assert hamming[~np.eye(10, dtype=bool)].min() >= 7  # every pair differs in 7+ pixels
    one = centres[1].reshape(12, 7)
    assert one[:, 3].sum() > 0  # the "1" has its vertical stroke in the middle column


def test_init_is_uniform_in_2_4_over_fan_in():
    params = init_params(LENET5_1998, 0)
    fan_in = {"C1": 25, "S2": 4, "S4": 4, "C5": 400, "F6": 120}
    for layer, f in fan_in.items():
        for kind in ("weight", "bias"):
            p = params[f"{layer}.{kind}"]
            assert np.abs(p).max() <= 2.4 / f + 1e-7
            if p.size > 50:
                assert np.abs(p).max() > 0.9 * 2.4 / f  # uses the range, not a smaller one
    c3 = params["C3.weight"]  # (16, 6, 5, 5): fan-in 75, 100 or 150 per map
    per_map = np.array(C3_TABLE).sum(axis=1) * 25
    assert np.all(np.abs(c3).max(axis=(1, 2, 3)) <= 2.4 / per_map + 1e-7)
    assert np.all(c3[~np.array(C3_TABLE)] == 0)  # unconnected pairs are exact zeros
    assert np.all(np.abs(params["C3.bias"]) <= 2.4 / per_map + 1e-7)


# --- layers against finite differences -------------------------------------------------------

def test_scaled_tanh_values_and_gradient(rng):
    f = L.ScaledTanh()
    y = f.forward(np.array([[-1.0, 0.0, 1.0, 40.0]]), train=False)
    np.testing.assert_allclose(y, [[-1.0, 0.0, 1.0, 1.7159]], atol=3e-5)  # f(+-1) = +-1
    assert check_layer(L.ScaledTanh(), rng.normal(size=(2, 5, 5, 3)) * 2)["x"] < TOL


def test_subsample_sums_blocks_then_scales_and_shifts(rng):
    w, b = rng.normal(size=3), rng.normal(size=3)
    x = rng.normal(size=(2, 4, 6, 3))  # (N, H, W, C)
    y = L.Subsample(w.copy(), b.copy()).forward(x, train=False)
    expected = (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * w + b
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    errors = check_layer(L.Subsample(w, b), x)
    assert max(errors.values()) < TOL, errors


def test_sparse_c3_gradients_and_connectivity(rng):
    mask = np.array(C3_TABLE)
    conv = L.Conv(rng.normal(size=(16, 6, 5, 5)), rng.normal(size=16), mask)
    x = rng.normal(size=(2, 7, 6, 6))  # (N, H, W, 6 S2 maps)
    errors = check_layer(conv, x)
    assert max(errors.values()) < TOL, errors
    assert np.all(conv.grads["weight"][~mask] == 0)
    # an S2 map changes exactly the C3 maps that Table I connects it to
    base = conv.forward(x, train=False)
    for s2 in range(6):
        bumped = x.copy()
        bumped[..., s2] += 1.0
        changed = np.abs(conv.forward(bumped, train=False) - base).max(axis=(0, 1, 2)) > 0
        assert changed.tolist() == mask[:, s2].tolist()


def test_rbf_layer_outputs_negated_distances_and_has_no_parameters(rng):
    centres = rbf_centres()
    rbf = L.RBF(centres)
    x = rng.normal(size=(3, 84))
    expected = -((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(rbf.forward(x, train=False), expected, rtol=1e-12)
    projection = rng.normal(size=(3, 10))
    rbf.forward(x, train=True)
    dx = rbf.backward(projection.copy())
    # the output is quadratic in x, so central differences are exact up to rounding, which a
    # large step keeps far below the tolerance (outputs are about -100)
    numeric = numeric_grad(lambda: float(np.sum(rbf.forward(x, False) * projection)), x, 1e-2)
    assert max_rel_error(dx, numeric) < TOL
    assert rbf.params == {} and rbf.grads == {}  # the centres are fixed: nothing to train
    np.testing.assert_array_equal(rbf.centres, rbf_centres())


def test_map_loss_value_and_gradient(rng):
    penalties = rng.uniform(0, 6, size=(5, 10))
    labels = np.array([0, 3, 9, 3, 7])
    loss, grad = map_loss(-penalties, labels)
    rows = np.arange(5)
    expected = penalties[rows, labels] + np.log(np.exp(-MAP_J) + np.exp(-penalties).sum(axis=1))
    assert loss == pytest.approx(expected.mean(), rel=1e-12)
    numeric = numeric_grad(lambda: map_loss(-penalties, labels)[0], penalties)
    assert max_rel_error(-grad, numeric) < TOL
    huge = map_loss(np.array([[-5000.0, -3000.0]]), np.array([1]))
    assert np.isfinite(huge[0]) and np.isfinite(huge[1]).all()


def test_a_non_digit_s_target_is_the_rubbish_class(rng):
    """Label -1: E = -log(e^-j / (e^-j + sum_i e^-y_i)), pushing every penalty up."""
    penalties = rng.uniform(0, 6, size=(3, 10))
    labels = np.array([4, -1, -1])
    loss, grad = map_loss(-penalties, labels)
    rubbish = MAP_J + np.log(np.exp(-MAP_J) + np.exp(-penalties).sum(axis=1))  # -log p_rubbish
    expected = [penalties[0, 4] + rubbish[0] - MAP_J, rubbish[1], rubbish[2]]
    assert loss == pytest.approx(np.mean(expected), rel=1e-12)
    numeric = numeric_grad(lambda: map_loss(-penalties, labels)[0], penalties)
    assert max_rel_error(-grad, numeric) < TOL
    assert (grad[1:] > 0).all()  # d/d(score): every score pushed down, every penalty up


def test_whole_lenet5_1998_gradient_matches_finite_differences(rng):
    net = NumpyNet(LENET5_1998, init_params(LENET5_1998, 3), dtype=np.float64)
    x = rng.normal(size=(2, 1, 32, 32)) * 0.5
    labels = np.array([4, 7])
    _, _, grads = net.loss_and_grads(x, labels)
    assert grads.keys() == net.params.keys()
    assert np.all(grads["C3.weight"][~np.array(C3_TABLE)] == 0)
    for name, p in net.params.items():  # the derivative along a random direction per tensor
        direction = rng.normal(size=p.shape)
        if name == "C3.weight":
            direction *= np.array(C3_TABLE)[:, :, None, None]
        step = 1e-5
        p += step * direction
        up = net.loss_fn(net.forward(x), labels)[0]
        p -= 2 * step * direction
        down = net.loss_fn(net.forward(x), labels)[0]
        p += step * direction
        numeric = (up - down) / (2 * step)
        analytic = float(np.sum(grads[name] * direction))
        assert abs(analytic - numeric) <= TOL * max(abs(analytic), 1e-3), name


def test_engine_logits_are_negated_penalties_and_loss_is_map(rng):
    params = init_params(LENET5_1998, 0)
    engine = NumpyEngine(LENET5_1998, params)
    x = rng.normal(size=(5, 1, 32, 32)).astype(np.float32)
    y = np.arange(5)
    logits = batched_logits(engine, x)
    assert logits.shape == (5, 10) and np.all(logits <= 0)
    loss_sum, preds = evaluate(engine, x, y)
    assert loss_sum == pytest.approx(map_loss(logits.astype(np.float64), y)[0] * 5, rel=1e-5)
    np.testing.assert_array_equal(preds, logits.argmax(axis=1))


# --- PyTorch autograd ------------------------------------------------------------------------

def test_layers_and_loss_match_torch_autograd(rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    x = rng.normal(size=(2, 6, 10, 10))  # (N, C, H, W) for torch
    w3, b3 = rng.normal(size=(16, 6, 5, 5)), rng.normal(size=16)
    ws, bs = rng.normal(size=16), rng.normal(size=16)
    mask = np.array(C3_TABLE)
    labels = np.array([2, 5])

    # sparse C3 -> scaled tanh -> subsample -> first 84 values -> RBF -> MAP, in both
    tx = torch.tensor(x, requires_grad=True)
    tw3 = torch.tensor(w3, requires_grad=True)
    tb3, tws, tbs = (torch.tensor(a, requires_grad=True) for a in (b3, ws, bs))
    tmask = torch.tensor(mask, dtype=torch.float64)[:, :, None, None]
    a = torch.nn.functional.conv2d(tx, tw3 * tmask, tb3)  # (2, 16, 6, 6)
    h = 1.7159 * torch.tanh(2.0 / 3.0 * a)
    s = torch.nn.functional.avg_pool2d(h, 2) * 4 * tws[:, None, None] + tbs[:, None, None]
    feats = s.reshape(2, -1)[:, :84]  # 84 features for the RBF
    penalties = ((feats[:, None, :] - torch.tensor(rbf_centres())) ** 2).sum(-1)
    rubbish = torch.full((2, 1), -MAP_J, dtype=torch.float64)
    logz = torch.logsumexp(torch.cat([rubbish, -penalties], 1), 1)
    t_loss = (penalties[torch.arange(2), torch.tensor(labels)] + logz).mean()
    t_loss.backward()

    conv = L.Conv(w3.copy(), b3.copy(), mask)
    tanh, sub, rbf = L.ScaledTanh(), L.Subsample(ws.copy(), bs.copy()), L.RBF(rbf_centres())
    h_np = sub.forward(tanh.forward(conv.forward(x.transpose(0, 2, 3, 1), True), True), True)
    flat = h_np.transpose(0, 3, 1, 2).reshape(2, -1)  # (C, H, W) order, as torch
    loss, g = map_loss(rbf.forward(flat[:, :84], True), labels)
    g_flat = np.zeros_like(flat)
    g_flat[:, :84] = rbf.backward(g)
    g_sub = g_flat.reshape(2, 16, 3, 3).transpose(0, 2, 3, 1)
    dx = conv.backward(tanh.backward(sub.backward(g_sub)))

    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for mine, theirs in ((dx.transpose(0, 3, 1, 2), tx), (conv.grads["weight"], tw3),
                         (conv.grads["bias"], tb3), (sub.grads["weight"], tws),
                         (sub.grads["bias"], tbs)):
        assert max_rel_error(mine, theirs.grad.numpy()) < TOL


# --- SDLM: Gauss-Newton curvature -------------------------------------------------------------

def jacobian(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(outputs, inputs) Jacobian of f at x by central differences (x perturbed in place)."""
    flat = x.reshape(-1)
    cols = []
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f().ravel().copy()
        flat[i] = old - eps
        down = f().ravel().copy()
        flat[i] = old
        cols.append((up - down) / (2 * eps))
    return np.stack(cols, axis=1)


def brute_force_gn(layer, x: np.ndarray, curv: np.ndarray) -> dict[str, np.ndarray]:
    """diag(J^T D J) for the layer's input and each parameter, D = diag(curv)."""
    def out():
        return layer.forward(x, train=False)

    result = {"x": (curv.reshape(-1, 1) * jacobian(out, x) ** 2).sum(0).reshape(x.shape)}
    for name, p in layer.params.items():
        result[name] = (curv.reshape(-1, 1) * jacobian(out, p) ** 2).sum(0).reshape(p.shape)
    return result


@pytest.mark.parametrize("kind", ["conv", "sparse_conv", "subsample", "dense", "scaled_tanh",
                                  "tanh", "sigmoid", "relu", "maxpool", "avgpool", "flatten"])
def test_backward_curvature_is_the_exact_gauss_newton_diagonal_of_each_layer(rng, kind):
    x = rng.normal(size=(2, 4, 4, 3))
    layer = {
        "conv": lambda: L.Conv(rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2)),
        "sparse_conv": lambda: L.Conv(rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2),
                                        np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)),
        "subsample": lambda: L.Subsample(rng.normal(size=3), rng.normal(size=3)),
        "dense": lambda: L.Dense(rng.normal(size=(5, 3)), rng.normal(size=5)),
        "scaled_tanh": L.ScaledTanh, "tanh": L.Tanh, "sigmoid": L.Sigmoid, "relu": L.ReLU,
        "maxpool": L.MaxPool, "avgpool": L.AvgPool, "flatten": L.Flatten,
    }[kind]()
    if kind == "dense":
        x = rng.normal(size=(4, 3))
    out = layer.forward(x, train=True)
    curv = rng.uniform(0.1, 2.0, size=out.shape)
    expected = brute_force_gn(layer, x, curv)
    layer.forward(x, train=True)
    got = {"x": layer.backward_curvature(curv.copy()), **layer.curvatures}
    assert got.keys() == expected.keys()
    for name in expected:
        assert max_rel_error(got[name], expected[name]) < TOL, name


def test_chained_backward_curvature_is_exact_through_width_one_hidden_layers(rng):
    """With one hidden unit per layer the paper's diagonal approximation drops nothing, so the
    chained pass must equal the brute-force Gauss-Newton diagonal of the whole network."""
    conv = L.Conv(rng.normal(size=(1, 1, 3, 3)), rng.normal(size=1))
    conv.needs_input_grad = False
    stack = [conv, L.ScaledTanh(), L.Flatten(), L.Dense(rng.normal(size=(5, 1)),
                                                         rng.normal(size=5)), L.ScaledTanh()]
    x = rng.normal(size=(3, 3, 3, 1))

    def run(train: bool) -> np.ndarray:
        h = x
        for layer in stack:
            h = layer.forward(h, train)
        return h

    out = run(True)
    curv = rng.uniform(0.1, 2.0, size=out.shape)  # (3, 5)
    back = curv
    for layer in reversed(stack):
        back = layer.backward_curvature(back)
    for layer in (stack[0], stack[3]):
        for name, p in layer.params.items():
            expected = (curv.reshape(-1, 1) * jacobian(lambda: run(False), p) ** 2).sum(0)
            assert max_rel_error(layer.curvatures[name], expected.reshape(p.shape)) < TOL


def test_map_curvature_is_the_loss_hessian_diagonal(rng):
    centres = rbf_centres()
    x = np.tile(centres[[3, 8]], (2, 1)) * 0.6 + rng.normal(size=(4, 84)) * 0.3
    labels = np.array([3, 8, 3, 8])
    rbf = L.RBF(centres)
    got = map_curvature(x, centres)

    def grad_x() -> np.ndarray:
        rbf.forward(x, train=True)
        return rbf.backward(map_loss(rbf.forward(x, train=True), labels)[1]) * len(x)

    hessian = jacobian(grad_x, x)  # (4*84, 4*84), block diagonal per image
    assert max_rel_error(got.ravel(), np.diag(hessian)) < 1e-6
    assert np.all(got >= 0)
    far = map_curvature(np.zeros((1, 84)), centres)  # all penalties 84: competitive term off
    np.testing.assert_allclose(far, 2.0, rtol=1e-12)


def test_softmax_curvature_is_p_times_one_minus_p(rng):
    logits = rng.normal(size=(3, 10))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(softmax_curvature(logits), p * (1 - p), rtol=1e-12)


def f6_outputs(net: NumpyNet, x: np.ndarray) -> np.ndarray:
    """(N, 84): every layer but the RBF."""
    h = x.transpose(0, 2, 3, 1)
    for _, layer in net.layers[:-1]:
        h = layer.forward(h, train=False)
    return h


def test_network_curvature_of_f6_matches_brute_force(rng):
    """F6 is the last trainable layer, so its curvature has no hidden-layer approximation:
    mean over images of sum_a d2E/dx_a^2 (dx_a/dw)^2 with d2E/dx^2 from map_curvature."""
    net = NumpyNet(LENET5_1998, init_params(LENET5_1998, 1), dtype=np.float64)
    x = rng.normal(size=(3, 1, 32, 32)) * 0.5
    curvature = net.curvature(x)
    assert curvature.keys() == net.params.keys()
    assert all(np.all(h >= 0) for h in curvature.values())
    seed = map_curvature(f6_outputs(net, x), rbf_centres())  # (3, 84)
    w = net.params["F6.weight"]
    for a, j in [(0, 0), (5, 17), (83, 119)]:
        old = w[a, j]
        w[a, j] = old + 1e-6
        up = f6_outputs(net, x)[:, a]
        w[a, j] = old - 1e-6
        down = f6_outputs(net, x)[:, a]
        w[a, j] = old
        dx_dw = (up - down) / 2e-6  # (3,) one per image
        expected = np.mean(seed[:, a] * dx_dw**2)
        assert curvature["F6.weight"][a, j] == pytest.approx(expected, rel=1e-6)


# --- SDLM: optimizer, schedule, training -----------------------------------------------------

def test_sdlm_step_is_eps_over_mu_plus_h_times_the_summed_gradient():
    p = {"w": np.array([1.0, 1.0, 1.0])}
    opt = Optimizer(OptimizerSpec(name="sdlm"), p)
    opt.set_curvature({"w": np.array([0.0, 0.98, 9.98])})
    opt.step({"w": np.array([1.0, 1.0, -2.0])}, lr=0.01, batch_size=4)  # mean of 4 images
    np.testing.assert_allclose(p["w"], [1 - 0.04 / 0.02, 1 - 0.04 / 1.0, 1 + 0.08 / 10.0])
    state = opt.state_dict()
    other = Optimizer(OptimizerSpec(name="sdlm"), {"w": np.zeros(3)})
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.state["curvature"]["w"], [0.0, 0.98, 9.98])


def test_sdlm_schedule_follows_the_papers_passes():
    schedule = Schedule(name="sdlm", lr=5e-4)
    per_pass = [schedule.at(epoch * 10 + 3, 10, 250) for epoch in range(25)]
    expected = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 13
    np.testing.assert_allclose(per_pass, expected)


def test_sdlm_warmup_lowers_only_the_first_two_passes():
    schedule = Schedule(name="sdlm-warmup", lr=8e-5)
    per_pass = [schedule.at(epoch * 10 + 3, 10, 250) for epoch in range(25)]
    expected = [1e-5, 2e-5] + [3.2e-5] * 3 + [1.6e-5] * 3 + [8e-6] * 4 + [1.6e-6] * 13
    np.testing.assert_allclose(per_pass, expected)


def test_a_short_sdlm_run_lowers_the_loss(rng):
    arch = get_arch("lenet5-1998")
    engine = NumpyEngine(arch, init_params(arch, 0), OptimizerSpec(name="sdlm"))
    labels = rng.integers(0, 3, 96)
    x = np.full((96, 1, 32, 32), -0.1, np.float32)  # three learnable patterns plus noise
    for k in range(3):
        x[labels == k, 0, 6 + 7 * k:12 + 7 * k, 8:24] = 1.175
    x += rng.normal(scale=0.05, size=x.shape).astype(np.float32)
    engine.bind_training_data(x, labels)
    before = evaluate(engine, x, labels)[0]
    engine.estimate_curvature(np.arange(96))
    assert engine.optimizer.state["curvature"]["F6.bias"].mean() > 0
    for epoch in range(3):
        order = np.random.default_rng(epoch).permutation(96)
        engine.estimate_curvature(order)
        for b in range(0, 96, 8):
            engine.train_step(order[b:b + 8], 1e-5)
    after = evaluate(engine, x, labels)[0]
    assert after < 0.5 * before


def test_sdlm_curvature_also_works_for_the_modern_architecture(rng):
    arch = get_arch("lenet5")
    net = NumpyNet(arch, init_params(arch, 0), dtype=np.float64)
    curvature = net.curvature(rng.normal(size=(4, 1, 32, 32)))
    assert curvature.keys() == net.params.keys()
    assert all(h.shape == net.params[k].shape and np.all(h >= 0) for k, h in curvature.items())
    assert curvature["OUTPUT.bias"].sum() > 0
