"""The torch engine against the NumPy engine (same weights, same batch: same outputs, gradients,
curvatures and optimizer steps), model files across engines, resume; and torch autograd as an
independent check of every NumPy layer's hand-written backward pass."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[torch]')")

import torch.nn.functional as F  # noqa: E402
from archs import EVERY_ARCH  # noqa: E402

from lenet5 import checkpoint, files  # noqa: E402
from lenet5.arch import (  # noqa: E402
    LENET5,
    LENET5_1998,
    MAP_J,
    init_params,
    rbf_centres,
)
from lenet5.engine import batched_logits, evaluate, make_engine  # noqa: E402
from lenet5.errors import Lenet5Error  # noqa: E402
from lenet5.hparams import OptimizerSpec  # noqa: E402
from lenet5.model import load  # noqa: E402
from lenet5.numpy_engine import layers as L  # noqa: E402
from lenet5.numpy_engine.losses import (  # noqa: E402
    map_curvature,
    map_loss,
    softmax_cross_entropy,
)
from lenet5.numpy_engine.model import NumpyEngine, NumpyNet  # noqa: E402
from lenet5.numpy_engine.optim import Optimizer  # noqa: E402
from lenet5.torch_engine import TorchEngine, TorchNet  # noqa: E402
from lenet5.torch_engine.losses import LOSSES  # noqa: E402
from lenet5.torch_engine.model import mps_available  # noqa: E402
from lenet5.torch_engine.optim import TorchOptimizer  # noqa: E402
from lenet5.training import TrainConfig, resume_config, train  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = mps_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA,
                                                                 reason="no CUDA GPU")),
           pytest.param("mps", marks=pytest.mark.skipif(not HAS_MPS, reason="no Apple MPS"))]
ARCHS = pytest.mark.parametrize("arch", list(EVERY_ARCH.values()), ids=list(EVERY_ARCH))
TOL = {np.float64: 1e-10, np.float32: 1e-5}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
OPTIMIZERS = {
    "sgd-nesterov-wd": OptimizerSpec("sgd", momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": OptimizerSpec("adam"),
    "adam-l2": OptimizerSpec("adam", weight_decay=1e-2),
    "adamw": OptimizerSpec("adamw", weight_decay=1e-2),
    "sdlm": OptimizerSpec("sdlm"),
}


@pytest.fixture(autouse=True)
def exact_cuda_float32():
    """CUDA convolutions may use TF32 (10-bit mantissa) by default; these tests compare
    float32 to 1e-5, so they run in full float32."""
    if not HAS_CUDA:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def assert_close(got, expected, tol: float, what: str = "") -> None:
    """Max absolute difference within ``tol`` times the expected values' scale (at least 1)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, what
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    assert np.abs(got - expected).max(initial=0.0) <= tol * scale, what


def skip_float64_on_mps(dtype, device: str) -> None:
    if device == "mps" and dtype is np.float64:
        pytest.skip("MPS computes in float32 at most")


def batch(n: int = 8, dtype=np.float64, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 32, 32)).astype(dtype), rng.integers(0, 10, n)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# --- the network: same function, same gradients, same curvature -----------------------------

@ARCHS
def test_state_dict_keys_are_the_model_file_names(arch):
    net = TorchNet(arch, init_params(arch, 0))
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == arch.param_shapes()
    assert list(shapes) == list(arch.param_shapes())


@ARCHS
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("device", DEVICES)
def test_outputs_and_gradients_match_numpy(arch, dtype, device):
    skip_float64_on_mps(dtype, device)
    params = init_params(arch, 0)
    x, y = batch(dtype=dtype)
    ref = NumpyNet(arch, params, dtype)
    loss, out, grads = ref.loss_and_grads(x, y)
    net = TorchNet(arch, params, TORCH_DTYPE[dtype], device)
    got = net(torch.from_numpy(x).to(device))
    got_loss = LOSSES[arch.loss](got, torch.from_numpy(y).to(device))
    got_loss.backward()
    tol = TOL[dtype]
    assert_close(as_numpy(got), out, tol, "outputs")
    assert_close(got_loss.item(), loss, tol, "loss")
    for name, p in net.named_parameters():
        assert_close(as_numpy(p.grad), grads[name], tol, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pooling_before_relu_changes_no_bit(dtype):
    """forward runs conv -> pool -> ReLU; layer by layer (feature_maps) runs conv -> ReLU ->
    pool, as the architecture says. Outputs and gradients must be identical, ties included,
    and so must inference's pooling, which takes another path."""
    net = TorchNet(LENET5, init_params(LENET5, 0), dtype)
    assert [pool is not None for _, pool in net.stages] == [True, True, False, False, False]
    x = torch.randn(32, 1, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x[:8] = 0.0  # blank images: every pooling window is a tie
    x[8:16] = x[8:16].round()  # many equal values
    results = []
    for out in (lambda: net(x), lambda: net.feature_maps(x)[-1][1]):
        net.zero_grad()
        y = out()
        y.square().sum().backward()
        results.append((y.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}))
    (y1, g1), (y2, g2) = results
    assert torch.equal(y1, y2)
    assert all(torch.equal(g1[k], g2[k]) for k in g1)
    with torch.inference_mode():  # without autograd, pooling takes the strided-views path
        assert torch.equal(net(x), y1)


@ARCHS
def test_feature_maps_match_numpy(arch):
    params = init_params(arch, 2)
    x, _ = batch(3, np.float32)
    expected = NumpyEngine(arch, params).feature_maps(x)
    got = TorchEngine(arch, params, device="cpu").feature_maps(x)
    assert [name for name, _ in got] == [name for name, _ in expected]
    for (name, g), (_, e) in zip(got, expected, strict=True):
        assert_close(g, e, 1e-5, name)


@ARCHS
def test_sdlm_curvature_matches_numpy(arch):
    params = init_params(arch, 0)
    x, _ = batch(6)
    expected = NumpyNet(arch, params, np.float64).curvature(x)
    got = TorchNet(arch, params, torch.float64).curvature(torch.from_numpy(x))
    assert set(got) == set(arch.param_shapes())
    for name in expected:
        assert_close(as_numpy(got[name]), expected[name], 1e-10, name)


def test_masked_weights_stay_zero():
    params = init_params(LENET5_1998, 0)
    params["C3.weight"] = params["C3.weight"] + 1  # a file whose unconnected weights are not 0
    engine = TorchEngine(LENET5_1998, params, OptimizerSpec("adam"), device="cpu")
    x, y = batch(16, np.float32)
    engine.bind_training_data(x, y)
    for _ in range(3):
        engine.train_step(np.arange(16), 1e-2)
    unconnected = ~np.array(LENET5_1998.layers[2].table)
    assert np.all(engine.parameters()["C3.weight"][unconnected] == 0)


# --- the optimizers ----------------------------------------------------------------------------

def numpy_engine(arch, params, spec, dtype):
    """A NumpyEngine computing in ``dtype`` (its default is float32)."""
    engine = NumpyEngine(arch, params, spec)
    engine.net = NumpyNet(arch, params, dtype)
    engine.optimizer = Optimizer(spec, engine.net.params)
    return engine


def run_steps(engine, x, y, steps: int = 3):
    """SDLM's curvature, then ``steps`` steps on alternating halves with falling rates."""
    engine.bind_training_data(x, y)
    if engine.optimizer.spec.name == "sdlm":
        engine.estimate_curvature(np.arange(len(x)))
    for step in range(steps):
        engine.train_step(np.arange(step, len(x), 2), 1e-3 / (step + 1))
    return engine.take_train_metrics()


@ARCHS
@pytest.mark.parametrize("spec", OPTIMIZERS.values(), ids=OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_steps_match_numpy(arch, spec, dtype, device):
    skip_float64_on_mps(dtype, device)
    if (dtype is np.float32 and arch.activation in ("tanh", "scaled_tanh", "sigmoid")
            and spec.name.startswith("adam")):
        pytest.skip("Adam divides each gradient by its own RMS, and in the smooth networks some "
                    "gradients are sums that cancel to float32 rounding level (~1e-9): rounding "
                    "then decides their sign and moves such weights by O(lr). The float64 case "
                    "proves the update rules identical.")
    params = init_params(arch, 0)
    x, y = batch(12, dtype)
    ref = numpy_engine(arch, params, spec, dtype)
    engine = TorchEngine(arch, params, spec, device, TORCH_DTYPE[dtype])
    expected_metrics, metrics = run_steps(ref, x, y), run_steps(engine, x, y)
    tol = TOL[dtype]
    assert_close(metrics[0], expected_metrics[0], tol, "loss sum")
    assert metrics[1:] == expected_metrics[1:]
    for name, value in ref.net.params.items():
        assert_close(engine.net.get_parameter(name).detach().cpu().numpy(), value, tol, name)
    expected_state, state = ref.optimizer_state(), engine.optimizer_state()
    assert set(state) == set(expected_state)
    for name, value in expected_state.items():
        assert_close(state[name], value, tol, name)


TORCH_OPTIMS = {**{name: spec for name, spec in OPTIMIZERS.items() if name != "sdlm"},
                "sgd-plain": OptimizerSpec("sgd", momentum=0.0),
                "sgd-momentum": OptimizerSpec("sgd", momentum=0.9, nesterov=False)}


def torch_optim(spec: OptimizerSpec, params: list) -> "torch.optim.Optimizer":
    """torch.optim's own class for ``spec``, fused, as the torch engine's updates must be."""
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=spec.momentum, nesterov=spec.nesterov,
                               weight_decay=spec.weight_decay, fused=True)
    cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
    return cls(params, lr=0.0, betas=(spec.beta1, spec.beta2), eps=spec.eps,
               weight_decay=spec.weight_decay, fused=True)


@pytest.mark.parametrize("spec", TORCH_OPTIMS.values(), ids=TORCH_OPTIMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_steps_are_torch_optims_bit_for_bit(spec, dtype, device):
    """The fused kernels, called directly, update exactly as torch.optim's classes do: on
    each device, in float64 too, on weights stored channels-last as the engine keeps them on
    CPU, and after the state went through a file's flat arrays halfway."""
    skip_float64_on_mps(np.float64 if dtype == torch.float64 else np.float32, device)
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 1, 5, 5), (16, 6, 5, 5), (6,), (10, 84)]
    values = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    values[1] = values[1].contiguous(memory_format=torch.channels_last)

    def parameters():
        return [torch.nn.Parameter(torch.empty_like(v, device=device).copy_(v)) for v in values]

    ours, theirs = parameters(), parameters()
    named = {f"p{i}": p for i, p in enumerate(ours)}
    optimizer, reference = TorchOptimizer(spec, named), torch_optim(spec, theirs)
    for step in range(6):
        if step == 3:  # resumed from its saved state
            optimizer_state = optimizer.state_dict()
            optimizer = TorchOptimizer(spec, named)
            optimizer.load_state_dict(optimizer_state)
        lr = 0.05 / (step + 1)
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
            q.grad = p.grad.clone()
        optimizer.step(lr)
        for group in reference.param_groups:
            group["lr"] = lr
        reference.step()
        for p, q in zip(ours, theirs, strict=True):
            assert torch.equal(p, q), step


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("spec", [OPTIMIZERS["sgd-nesterov-wd"], OPTIMIZERS["adamw"],
                                  OPTIMIZERS["sdlm"]], ids=["sgd", "adamw", "sdlm"])
def test_cuda_graph_steps_are_the_steps_run_op_by_op(spec):
    """Steps recorded and replayed leave the weights, the optimizer's state and the metrics
    as steps run op by op do: two batch sizes' graphs taking turns, new data of the same
    shape written under the graphs, a state loaded into them (as a resumed run does), and
    data of another shape, which must be recorded anew. To float32 rounding: the graph
    reads its rate from a float32 tensor where a step op by op gets a Python float."""
    x, y = batch(40, np.float32)
    graphed = TorchEngine(LENET5, init_params(LENET5, 0), spec, "cuda")
    eager = TorchEngine(LENET5, init_params(LENET5, 0), spec, "cuda")
    eager.step_graphs = None
    engines = (graphed, eager)
    rng = np.random.default_rng(2)
    new_data = {0: (x, y), 9: (np.flip(x, 0).copy(), np.flip(y, 0).copy()), 14: (x[:36], y[:36])}
    sizes = [8, 8, 8, 5, 8, 5, 5, 8, 5, 8, 5, 8, 5, 8, 8, 8, 8, 5, 5, 5, 8]
    for step, n in enumerate(sizes):
        if step in new_data:
            for engine in engines:
                engine.bind_training_data(*new_data[step])
                if spec.name == "sdlm":
                    engine.estimate_curvature(np.arange(len(new_data[step][0])))
            assert (len(graphed.step_graphs) == 2) == (step == 9)  # kept only for step 9
        if step == 12:
            for engine in engines:
                engine.load_optimizer_state(engine.optimizer_state())
        rows = rng.permutation(len(eager.train_x))[:n]
        for engine in engines:
            engine.train_step(rows, (1e-4 if spec.name == "sdlm" else 0.05) / (step + 1))
    assert all(g.graph is not None for g in graphed.step_graphs.values())
    assert graphed.optimizer.steps == eager.optimizer.steps == len(sizes)
    got, expected = graphed.take_train_metrics(), eager.take_train_metrics()
    assert_close(got[0], expected[0], 1e-5, "loss sum")
    assert got[1:] == expected[1:]
    for name, value in eager.parameters().items():
        assert_close(graphed.parameters()[name], value, 1e-5, name)
    expected_state = eager.optimizer_state()
    for name, value in graphed.optimizer_state().items():
        assert_close(value, expected_state[name], 1e-5, name)


def test_sgd_state_saved_before_the_first_step_starts_afresh():
    """With no step taken, SGD's momentum buffer starts as the first gradient whatever the
    saved buffer holds, as in torch.optim (which keeps no state before its first step) and
    the NumPy engine."""
    spec = OptimizerSpec("sgd", momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 5, generator=gen)
    ours, theirs = torch.nn.Parameter(weight.clone()), torch.nn.Parameter(weight.clone())
    optimizer = TorchOptimizer(spec, {"w": ours})
    optimizer.load_state_dict({"momentum_buffer.w": np.full((6, 5), 7.0, np.float32),
                               "steps": np.array([0], dtype=np.int64)})
    reference = torch_optim(spec, [theirs])
    ours.grad = torch.randn(6, 5, generator=gen)
    theirs.grad = ours.grad.clone()
    optimizer.step(0.1)
    reference.param_groups[0]["lr"] = 0.1
    reference.step()
    assert torch.equal(ours, theirs)


def test_training_does_not_import_torch_dynamo(tmp_path):
    """Creating one of torch.optim's classes imports torch._dynamo (1.5-2 s of a command's
    start); the engine's updates go around them."""
    script = textwrap.dedent("""
        import sys, numpy as np
        from lenet5.arch import LENET5, init_params
        from lenet5.hparams import OptimizerSpec
        from lenet5.torch_engine import TorchEngine
        x, y = np.zeros((4, 1, 32, 32), np.float32), np.arange(4)
        for name in ("sgd", "adam", "adamw", "sdlm"):
            engine = TorchEngine(LENET5, init_params(LENET5, 0), OptimizerSpec(name), "cpu")
            engine.bind_training_data(x, y)
            engine.train_step(np.arange(4), 1e-3)
            engine.load_optimizer_state(engine.optimizer_state())
        print("torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("spec", OPTIMIZERS.values(), ids=OPTIMIZERS)
def test_optimizer_state_moves_between_engines(spec):
    """A state saved by either engine continues identically in the other (float32)."""
    arch = LENET5
    x, y = batch(12, np.float32)
    torch_engine = TorchEngine(arch, init_params(arch, 0), spec, "cpu")
    run_steps(torch_engine, x, y)
    numpy_twin = NumpyEngine(arch, torch_engine.parameters(), spec)
    numpy_twin.load_optimizer_state(torch_engine.optimizer_state())
    torch_twin = TorchEngine(arch, numpy_twin.parameters(), spec, "cpu")
    torch_twin.load_optimizer_state(numpy_twin.optimizer_state())
    for engine in (torch_engine, numpy_twin, torch_twin):
        engine.bind_training_data(x, y)
        engine.train_step(np.arange(12), 1e-3)
    expected = torch_engine.parameters()
    for name, value in torch_twin.parameters().items():
        np.testing.assert_array_equal(value, expected[name])  # torch -> torch: bit for bit
        assert_close(numpy_twin.parameters()[name], expected[name], 1e-5, name)
    assert torch_twin.optimizer.steps == numpy_twin.optimizer.steps == 4


def test_optimizer_state_before_any_step_is_zeros():
    state = TorchEngine(LENET5, init_params(LENET5, 0), OptimizerSpec("sgd"), "cpu"
                        ).optimizer_state()
    expected = NumpyEngine(LENET5, init_params(LENET5, 0), OptimizerSpec("sgd")).optimizer_state()
    assert set(state) == set(expected)
    assert all(np.array_equal(state[k], expected[k]) for k in state)


# --- the engine interface ------------------------------------------------------------------------

def test_evaluate_logits_and_parameters_match_numpy():
    params = init_params(LENET5, 4)
    x, y = batch(50, np.float32)
    ref, engine = NumpyEngine(LENET5, params), make_engine("torch", LENET5, params, device="cpu")
    assert engine.name == "torch" and engine.device == "cpu"
    assert_close(batched_logits(engine, x, batch_size=16), batched_logits(ref, x), 1e-5)
    loss, preds = evaluate(engine, x, y, batch_size=16)
    ref_loss, ref_preds = evaluate(ref, x, y)
    assert_close(loss, ref_loss, 1e-5)
    np.testing.assert_array_equal(preds, ref_preds)
    copy = engine.parameters()
    assert all(v.dtype == np.float32 for v in copy.values())
    copy["C1.weight"][...] = 0  # a copy, not the engine's memory
    assert np.abs(engine.parameters()["C1.weight"]).sum() > 0


def test_device_auto_and_errors():
    assert TorchEngine(LENET5, init_params(LENET5, 0), device="auto").device == (
        "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu")
    with pytest.raises(Lenet5Error, match="unknown --device 'tpu'"):
        TorchEngine(LENET5, init_params(LENET5, 0), device="tpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown when there is no GPU")
def test_device_cuda_without_a_gpu_says_so():
    with pytest.raises(Lenet5Error, match="--device cuda needs a CUDA GPU.*--device cpu"):
        make_engine("torch", LENET5, init_params(LENET5, 0), device="cuda")


@pytest.mark.skipif(HAS_MPS, reason="checks the message shown without Apple silicon")
def test_device_mps_without_apple_silicon_says_so():
    with pytest.raises(Lenet5Error, match="--device mps needs a Mac with Apple silicon.*"
                       "--device cpu"):
        make_engine("torch", LENET5, init_params(LENET5, 0), device="mps")


@pytest.mark.skipif(HAS_MPS, reason="checks the message shown without Apple silicon")
@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "report", "serve"])
def test_every_command_taking_a_device_explains_mps_without_apple_silicon(command, tmp_path,
                                                                          capsys):
    """Wherever a command takes --device: one sentence and exit status 1, no traceback."""
    from PIL import Image

    from lenet5.checkpoint import save_model
    from lenet5.cli import main
    from lenet5.files import write_metrics

    if command == "serve":
        pytest.importorskip("fastapi", reason="serve says what it needs installed first")
    run = tmp_path / "run"
    run.mkdir()
    save_model(run / "model.safetensors", init_params(LENET5, 0),
               {"arch": "lenet5", "dataset": "mnist", "classes": [str(d) for d in range(10)],
                "input_normalization": {"kind": "mean_std", "pad": 2, "mean": 0.13,
                                        "std": 0.31}})
    write_metrics(run, [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 1.0,
                         "test_acc": 0.5, "seconds": 1.0, "lr": 0.1}])
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    argv = {"train": ["train", "--epochs", "1", "--out", str(tmp_path / "new")],
            "evaluate": ["evaluate", str(run)], "predict": ["predict", str(run),
                                                            str(tmp_path / "digit.png")],
            "report": ["report", str(run)], "serve": ["serve", str(run)]}[command]
    assert main([*argv, "--engine", "torch", "--device", "mps"]) == 1
    err = capsys.readouterr().err
    assert "--device mps needs a Mac with Apple silicon" in err and "Traceback" not in err


@pytest.mark.parametrize("spec", [OPTIMIZERS["adam"], OPTIMIZERS["sgd-nesterov-wd"]],
                         ids=["adam", "sgd"])
def test_cpu_batches_split_over_threads_train_as_one(spec):
    """On CPU a batch is split over one thread per torch thread: the same outputs, metrics
    and updates as the batch in one piece, to float32 rounding."""
    x, y = batch(96, np.float32)
    threads = torch.get_num_threads()
    engines = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            engine = TorchEngine(LENET5, init_params(LENET5, 0), spec, "cpu")
            assert engine.workers == count
            engine.bind_training_data(x, y)
            for step in range(3):
                engine.train_step(np.random.default_rng(step).permutation(96), 1e-3)
            engines.append(engine)
    finally:
        torch.set_num_threads(threads)
    one, three = engines
    assert torch.get_num_threads() == threads  # restored after every step
    assert_close(three.forward(x), one.forward(x), 1e-5, "outputs")
    expected, got = one.parameters(), three.parameters()
    for name in expected:
        assert_close(got[name], expected[name], 1e-5, name)
    (loss_one, correct_one, seen_one), (loss_three, correct_three, seen_three) = (
        one.take_train_metrics(), three.take_train_metrics())
    assert (correct_three, seen_three) == (correct_one, seen_one) == (correct_one, 288)
    assert_close(loss_three, loss_one, 1e-5, "loss sum")


# --- model files and training runs across engines ------------------------------------------------

@ARCHS
def test_model_file_loads_in_either_engine(arch, tmp_path):
    params = init_params(arch, 5)
    norm = ({"kind": "mean_std", "pad": 2, "mean": 0.1307, "std": 0.3081}
            if arch.input_normalization == "mean_std" else
            {"kind": "lecun_1998", "pad": 2, "background": -0.1, "ink": 1.175})
    checkpoint.save_model(tmp_path / "model.safetensors", params,
                          {"arch": arch.name, "dataset": "mnist", "classes": list("0123456789"),
                           "input_normalization": norm})
    images = np.random.default_rng(0).integers(0, 256, (200, 28, 28), dtype=np.uint8)
    numpy_model, torch_model = load(tmp_path, engine="numpy"), load(tmp_path, engine="torch")
    expected = numpy_model.logits(images)
    assert_close(torch_model.logits(images), expected, 1e-5)
    assert_close(torch_model.predict_proba(images), numpy_model.predict_proba(images), 1e-5)
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3  # random weights leave some near-ties (1998 RBF)
    assert clear.sum() >= 50
    np.testing.assert_array_equal(torch_model.predict(images)[clear],
                                  numpy_model.predict(images)[clear])


def test_resume_is_bit_identical_with_the_torch_engine(synthetic_dataset, tmp_path):
    def config(out):
        return TrainConfig(dataset=synthetic_dataset, engine="torch", device="cpu", limit=300,
                           epochs=2, batch_size=32, seed=1, out=str(out))

    def killed_after_first_epoch(line: str) -> None:
        if line.startswith("epoch  1/2"):
            raise KeyboardInterrupt

    straight = train(config(tmp_path / "a"), log=lambda _: None, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "b"), log=killed_after_first_epoch, progress=False)
    resumed = train(resume_config(tmp_path / "b"), resume=tmp_path / "b",
                    log=lambda _: None, progress=False)
    p1, o1, m1 = checkpoint.load_state(straight / files.STATE_FILE)
    p2, o2, m2 = checkpoint.load_state(resumed / files.STATE_FILE)
    assert m1["epoch"] == m2["epoch"] == 2
    for a, b in ((p1, p2), (o1, o2)):
        assert set(a) == set(b)
        assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.mnist
def test_a_numpy_trained_model_labels_every_mnist_test_image_alike_in_torch(trained_run, mnist):
    numpy_model, torch_model = load(trained_run, engine="numpy"), load(trained_run, engine="torch")
    np.testing.assert_array_equal(torch_model.predict(mnist.test_images),
                                  numpy_model.predict(mnist.test_images))
    assert_close(torch_model.predict_proba(mnist.test_images[:2000]),
                 numpy_model.predict_proba(mnist.test_images[:2000]), 1e-4)


# --- torch autograd checks each NumPy layer's backward (float64) ---------------------------------

def nhwc(t: torch.Tensor) -> np.ndarray:
    return as_numpy(t).transpose(0, 2, 3, 1)


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).requires_grad_()


def check_against_autograd(layer, x_nhwc: np.ndarray, torch_fn, params: dict) -> None:
    """Forward and backward of a NumPy layer (NHWC, or (N, F) when 2-D) against ``torch_fn``
    run by autograd on the same values, for a random output gradient."""
    spatial = x_nhwc.ndim == 4
    x = nchw(x_nhwc) if spatial else torch.from_numpy(x_nhwc.copy()).requires_grad_()
    tparams = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in params.items()}
    out = torch_fn(x, **tparams)
    got = layer.forward(x_nhwc, train=True)
    expected_out = nhwc(out) if spatial else as_numpy(out)
    assert_close(got, expected_out, 1e-10, "forward")
    grad = np.random.default_rng(7).normal(size=got.shape)
    dx = layer.backward(grad.copy())
    out.backward(nchw(grad).detach() if spatial else torch.from_numpy(grad))
    assert_close(dx, nhwc(x.grad) if spatial else as_numpy(x.grad), 1e-10, "input")
    for k, v in tparams.items():
        assert_close(layer.grads[k], as_numpy(v.grad), 1e-10, k)


@pytest.fixture
def rng():
    return np.random.default_rng(3)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "table"])
def test_numpy_conv_backward(rng, masked):
    w, b = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    mask = rng.random((4, 3)) < 0.6 if masked else None
    layer = L.Conv(w.copy(), b.copy(), mask)
    m = 1.0 if mask is None else torch.from_numpy(mask[:, :, None, None].astype(np.float64))
    check_against_autograd(layer, rng.normal(size=(2, 7, 6, 3)),
                           lambda x, weight, bias: F.conv2d(x, weight * m, bias),
                           {"weight": layer.params["weight"], "bias": b})


def test_numpy_maxpool_backward_with_ties(rng):
    x = rng.normal(size=(2, 6, 4, 3))
    x[:, 0:2, 0:2, :] = 1.5  # a whole window of equal values: the first position wins
    x[0, 2, 2:4, 1] = x[0, 3, 3, 1] = 9.0
    check_against_autograd(L.MaxPool(2), x, lambda x: F.max_pool2d(x, 2), {})


def test_numpy_relu_backward(rng):
    x = rng.normal(size=(3, 4, 4, 2))
    x[0, 0, 0, 0] = 0.0  # the kink: both take the gradient there as 0
    check_against_autograd(L.ReLU(), x, F.relu, {})


def test_numpy_avgpool_backward(rng):
    check_against_autograd(L.AvgPool(2), rng.normal(size=(2, 6, 4, 3)),
                           lambda x: F.avg_pool2d(x, 2), {})


@pytest.mark.parametrize("layer, torch_fn", [(L.Tanh, torch.tanh), (L.Sigmoid, torch.sigmoid)],
                         ids=["tanh", "sigmoid"])
def test_numpy_smooth_activation_backward(rng, layer, torch_fn):
    check_against_autograd(layer(), 3 * rng.normal(size=(3, 4, 4, 2)), torch_fn, {})


def test_numpy_dense_backward(rng):
    w, b = rng.normal(size=(5, 12)), rng.normal(size=5)
    check_against_autograd(L.Dense(w, b), rng.normal(size=(3, 12)),
                           lambda x, weight, bias: F.linear(x, weight, bias),
                           {"weight": w, "bias": b})


def test_numpy_flatten_backward(rng):
    x = rng.normal(size=(2, 3, 2, 4))  # (N, H, W, C)
    flatten = L.Flatten()
    out = flatten.forward(x, train=True)
    t = nchw(x)
    expected = t.flatten(1)  # torch's (C, H, W) order
    grad = rng.normal(size=out.shape)
    expected.backward(torch.from_numpy(grad))
    assert_close(out, as_numpy(expected), 0.0)
    assert_close(flatten.backward(grad), nhwc(t.grad), 0.0)


def test_numpy_scaled_tanh_and_subsample_backward(rng):
    check_against_autograd(L.ScaledTanh(), rng.normal(size=(2, 4, 4, 3)),
                           lambda x: 1.7159 * torch.tanh(x * 2 / 3), {})
    w, b = rng.normal(size=3), rng.normal(size=3)
    check_against_autograd(L.Subsample(w, b, 2), rng.normal(size=(2, 6, 4, 3)),
                           lambda x, weight, bias: F.avg_pool2d(x, 2) * 4 * weight[:, None, None]
                           + bias[:, None, None], {"weight": w, "bias": b})


def test_numpy_rbf_backward(rng):
    centres = rbf_centres()
    c = torch.from_numpy(centres)
    check_against_autograd(L.RBF(centres), rng.normal(size=(3, 84)),
                           lambda x: -((x[:, None, :] - c) ** 2).sum(dim=2), {})


def map_loss_eq9(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LeCun et al. 1998, eq. 9, as written: mean of y_D + log(e^-j + sum_i e^-y_i), y = -s."""
    rubbish = torch.full((len(scores), 1), -MAP_J, dtype=scores.dtype)
    return (-scores[torch.arange(len(scores)), labels]
            + torch.logsumexp(torch.cat([rubbish, scores], dim=1), dim=1)).mean()


@pytest.mark.parametrize("loss_fn", [softmax_cross_entropy, map_loss], ids=["softmax", "map"])
def test_numpy_losses_backward(rng, loss_fn):
    scores, labels = rng.normal(size=(5, 10)) * 3, rng.integers(0, 10, 5)
    loss, grad = loss_fn(scores, labels)
    s = torch.from_numpy(scores).requires_grad_()
    reference = F.cross_entropy if loss_fn is softmax_cross_entropy else map_loss_eq9
    expected = reference(s, torch.from_numpy(labels))
    expected.backward()
    assert_close(loss, expected.item(), 1e-10)
    assert_close(grad, as_numpy(s.grad), 1e-10)


@pytest.mark.parametrize("arch_loss", ["cross_entropy", "map"])
def test_torch_losses_take_non_digits_as_numpy_does(rng, arch_loss):
    """Label -1 (a made-up non-digit): the uniform target, or the rubbish class, in both."""
    scores, labels = rng.normal(size=(6, 10)) * 3, np.array([3, -1, 0, -1, 9, -1])
    numpy_loss = {"cross_entropy": softmax_cross_entropy, "map": map_loss}[arch_loss]
    loss, grad = numpy_loss(scores, labels)
    s = torch.from_numpy(scores).requires_grad_()
    expected = LOSSES[arch_loss](s, torch.from_numpy(labels))
    expected.backward()
    assert_close(loss, expected.item(), 1e-10)
    assert_close(grad, as_numpy(s.grad), 1e-10)


def test_numpy_map_curvature_is_the_exact_hessian_diagonal(rng):
    """map_curvature is d2E/dx2 of the per-image MAP loss through the RBF, which torch
    computes exactly by double back-propagation."""
    x, labels = rng.normal(size=(2, 84)), rng.integers(0, 10, 2)
    centres = torch.from_numpy(rbf_centres())
    expected = []
    for xi, label in zip(x, labels, strict=True):
        def loss(v, label=label):
            scores = -((v[None, :] - centres) ** 2).sum(dim=1)[None]  # (1, K)
            return map_loss_eq9(scores, torch.tensor([label]))
        hessian = torch.autograd.functional.hessian(loss, torch.from_numpy(xi))
        expected.append(as_numpy(torch.diagonal(hessian)))
    assert_close(map_curvature(x, rbf_centres()), np.array(expected), 1e-10)
