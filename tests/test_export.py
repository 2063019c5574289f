"""ONNX export: onnxruntime against the NumPy engine, both writers, both architectures, the CLI."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest
from leftovers import dead_pid, leave_behind

from lenet5 import arch as A
from lenet5 import checkpoint, cli
from lenet5.engine import evaluate
from lenet5.errors import Lenet5Error
from lenet5.export import OPSET, export
from lenet5.model import load

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (extra 'onnx')")
pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime (extra 'onnx')")

NORMALIZATIONS = {"mean_std": {"kind": "mean_std", "pad": 2, "mean": 0.1307, "std": 0.3081},
                  "lecun_1998": {"kind": "lecun_1998", "pad": 2, "background": -0.1,
                                 "ink": 1.175}}
HAS_TORCH = importlib.util.find_spec("torch") is not None
# Initial 1998 outputs all sit near one distance (about 84), and sigmoid units all near 1/2;
# larger weights spread them over several classes, and tanh and sigmoid keep every activation
# bounded. Modern ReLU logits reach about 7 as is.
WEIGHT_SCALE = {"lenet5": 1.0, "sigmoid": 20.0, "lenet5-1998": 5.0}


def make_model_file(directory, arch_name: str, seed: int = 0, dataset: str = "mnist",
                    pool: str | None = None, activation: str | None = None):
    """A model file from (scaled) initial weights: no training, no MNIST needed."""
    arch = A.get_arch(arch_name, pool, activation)
    scale = WEIGHT_SCALE.get(activation, WEIGHT_SCALE[arch_name])
    params = {k: v * scale for k, v in A.init_params(arch, seed).items()}
    metadata = {"arch": arch_name, **arch.variant, "dataset": dataset,
                "classes": list("0123456789"),
                "input_normalization": NORMALIZATIONS[arch.input_normalization],
                "engine": "numpy", "epochs": 1, "test_accuracy": 0.9876, "lenet5_version": "0"}
    path = directory / f"{arch_name}-{arch.pool}-{arch.activation}.safetensors"
    checkpoint.save_model(path, params, metadata)
    return path


def digits(n: int, seed: int = 1) -> np.ndarray:
    """(n, 28, 28) uint8: random strokes on black, with some fully random images mixed in."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 6:22, 10:18] = rng.integers(0, 256, (n, 16, 8))
    images[::3] = rng.integers(0, 256, (len(images[::3]), 28, 28))
    return images


@pytest.fixture(scope="module", params=["lenet5", "lenet5-avg-sigmoid", "lenet5-max-tanh",
                                        "lenet5-1998"])
def exported(request, tmp_path_factory):
    """(model file, its ONNX export) for each architecture, and variants of the modern one."""
    directory = tmp_path_factory.mktemp(request.param)
    name, pool, activation = {"lenet5-avg-sigmoid": ("lenet5", "avg", "sigmoid"),
                              "lenet5-max-tanh": ("lenet5", "max", "tanh")}.get(
        request.param, (request.param, None, None))
    model_path = make_model_file(directory, name, pool=pool, activation=activation)
    export(model_path, directory / "model.onnx")
    return model_path, directory / "model.onnx"


@pytest.mark.parametrize("batch", [1, 257])
def test_onnxruntime_matches_numpy_engine(exported, batch):
    model_path, onnx_path = exported
    images = digits(batch)
    want = load(model_path, engine="numpy").logits(images)  # (batch, 10)
    got = load(onnx_path, engine="onnx").logits(images)
    assert got.shape == (batch, 10)
    assert np.abs(got - want).max() <= 1e-4
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    if batch > 1:  # several classes predicted, so identical labels mean something
        assert len(np.unique(want.argmax(1))) >= 3


def test_evaluate_gives_the_engines_loss_and_labels(exported):
    model_path, onnx_path = exported
    images = digits(100)
    labels = np.random.default_rng(2).integers(0, 10, 100)
    numpy_model, onnx_model = load(model_path), load(onnx_path, engine="onnx")
    want_loss, want_labels = evaluate(numpy_model.engine, numpy_model.inputs(images), labels)
    got_loss, got_labels = evaluate(onnx_model.engine, onnx_model.inputs(images), labels)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_array_equal(got_labels, want_labels)


def test_float_images_give_the_same_logits(exported):
    model_path, onnx_path = exported
    images = digits(20)
    model = load(onnx_path, engine="onnx")
    np.testing.assert_allclose(model.logits(images / 255.0), model.logits(images), atol=1e-4)


def test_graph_is_checked_small_and_carries_metadata(exported):
    model_path, onnx_path = exported
    proto = onnx.load(onnx_path)
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    arch = A.arch_of(checkpoint.load_model(model_path)[1])
    assert props["arch"] == arch.name
    assert (props["pool"], props["activation"]) == (arch.pool, arch.activation)
    assert props["dataset"] == "mnist"
    assert json.loads(props["classes"]) == list("0123456789")
    assert float(props["test_accuracy"]) == 0.9876
    assert props["export_via"] == "numpy"
    assert proto.opset_import[0].version == OPSET
    [image] = proto.graph.input
    assert image.name == "image"
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert [o.name for o in proto.graph.output] == ["logits"]
    if arch.name == "lenet5":
        assert onnx_path.stat().st_size <= 300 * 1024


def test_onnx_model_reads_metadata_and_refuses_feature_maps(exported):
    _, onnx_path = exported
    model = load(onnx_path, engine="onnx")
    assert model.engine.name == "onnx"
    assert model.classes == list("0123456789")
    with pytest.raises(Lenet5Error, match="not available for --engine onnx"):
        model.feature_maps(digits(1))


def test_model_file_runs_in_onnxruntime_without_an_onnx_file(exported):
    model_path, onnx_path = exported
    images = digits(30)
    np.testing.assert_array_equal(load(model_path, engine="onnx").logits(images),
                                  load(onnx_path, engine="onnx").logits(images))


@pytest.mark.skipif(not HAS_TORCH, reason="--via torch needs PyTorch")
def test_torch_export_agrees_with_numpy_export(exported, tmp_path):
    model_path, onnx_path = exported
    export(model_path, tmp_path / "torch.onnx", via="torch")
    images = digits(257)
    via_torch = load(tmp_path / "torch.onnx", engine="onnx").logits(images)
    via_numpy = load(onnx_path, engine="onnx").logits(images)
    assert np.abs(via_torch - via_numpy).max() <= 1e-4
    props = {p.key: p.value for p in onnx.load(tmp_path / "torch.onnx").metadata_props}
    assert props["export_via"] == "torch"
    assert props["arch"] == checkpoint.load_model(model_path)[1]["arch"]


@pytest.mark.skipif(not HAS_TORCH, reason="--via torch needs PyTorch")
@pytest.mark.parametrize("opset, ending", [(21, ", or --via numpy."), (999, "."), (12, ".")])
def test_torch_export_refuses_opsets_it_cannot_write(tmp_path, opset, ending):
    """The range offered is torch's; --via numpy only where it writes that opset."""
    model_path = make_model_file(tmp_path, "lenet5")
    with pytest.raises(Lenet5Error, match=f"--opset {opset} is not supported with --via torch "
                                          r"\(torch writes opsets up to 20\); choose 13 to "
                                          f"20{re.escape(ending)}$"):
        export(model_path, tmp_path / "m.onnx", via="torch", opset=opset)


def test_other_opsets_export_and_run(tmp_path):
    model_path = make_model_file(tmp_path, "lenet5")
    images = digits(10)
    want = load(model_path).logits(images)
    for opset in (13, 21):
        export(model_path, tmp_path / f"{opset}.onnx", opset=opset)
        assert onnx.load(tmp_path / f"{opset}.onnx").opset_import[0].version == opset
        got = load(tmp_path / f"{opset}.onnx", engine="onnx").logits(images)
        assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("opset", [12, 999])
def test_unsupported_opset_is_refused(tmp_path, opset):
    model_path = make_model_file(tmp_path, "lenet5")
    with pytest.raises(Lenet5Error, match=f"--opset {opset} is not supported"):
        export(model_path, tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


# --- bad files ----------------------------------------------------------------------------

def test_corrupt_onnx_file_gives_one_clear_sentence(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    with pytest.raises(Lenet5Error, match=r"bad\.onnx is not a valid ONNX file .*export it "
                                          r"again with `lenet5 export`"):
        load(bad, engine="onnx")
    bad.write_bytes(b"")  # onnx's reason is a sentence of its own: its period goes
    with pytest.raises(Lenet5Error) as raised:
        load(bad, engine="onnx")
    assert ".)" not in str(raised.value) and str(raised.value).count(". ") == 0


def test_truncated_onnx_file_gives_a_clear_error(exported, tmp_path):
    _, onnx_path = exported
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[:5000])
    with pytest.raises(Lenet5Error, match=r"truncated\.onnx .*export it again"):
        load(truncated, engine="onnx")


def test_foreign_onnx_file_without_lenet5_metadata_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(Lenet5Error, match=r"lacks lenet5 metadata \(arch, classes, "
                                          r"input_normalization\)"):
        load(tmp_path / "other.onnx", engine="onnx")


def test_missing_onnx_file_is_named(tmp_path):
    with pytest.raises(Lenet5Error, match=r"cannot read .*nothing\.onnx"):
        load(tmp_path / "nothing.onnx", engine="onnx")


def test_onnx_file_runs_in_onnx_unless_another_engine_is_named(exported):
    model_path, onnx_path = exported
    assert load(onnx_path).engine.name == "onnx"  # the engine follows the file
    assert load(model_path).engine.name == "numpy"
    for engine in ("numpy", "torch"):
        with pytest.raises(Lenet5Error, match=f"is an ONNX file, which the {engine} engine "
                                              "does not read; run it with the onnx engine"):
            load(onnx_path, engine=engine)


def test_a_run_directory_named_like_an_onnx_file_runs_in_the_onnx_engine(exported, tmp_path):
    model_path, onnx_path = exported
    run = tmp_path / "run.onnx"
    run.mkdir()
    (run / "model.safetensors").write_bytes(model_path.read_bytes())
    images = digits(5)
    np.testing.assert_array_equal(load(run, engine="onnx").logits(images),
                                  load(onnx_path, engine="onnx").logits(images))


def test_onnx_engine_cannot_train_or_use_cuda(exported):
    from lenet5.engine import make_engine

    model_path, onnx_path = exported
    with pytest.raises(Lenet5Error, match="--engine onnx only runs trained models"):
        make_engine("onnx", A.get_arch("lenet5"), {})
    with pytest.raises(Lenet5Error, match="--engine onnx runs on CPU"):
        load(onnx_path, engine="onnx", device="cuda")


# --- command line -------------------------------------------------------------------------

def test_cli_export_writes_a_verified_file(tmp_path, capsys):
    model_path = make_model_file(tmp_path, "lenet5")
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(model_path), "--format", "onnx", "-o", str(out),
                     "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["bytes"] == out.stat().st_size <= 300 * 1024
    assert facts["opset"] == OPSET and facts["via"] == "numpy" and facts["arch"] == "lenet5"
    assert facts["max_abs_logit_diff"] <= 1e-4
    assert cli.main(["export", str(model_path), "-o", str(out)]) == 0
    assert "onnxruntime matches the numpy engine" in capsys.readouterr().out


def test_cli_export_of_a_missing_model_fails_with_one_sentence(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "none"), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet5: error: no model at") and err.count("\n") == 1


def test_cli_export_to_a_folder_asks_for_a_file_name(tmp_path, capsys):
    model_path = make_model_file(tmp_path, "lenet5")
    for out in (str(tmp_path), f"{tmp_path}/new.onnx/"):  # the last "/" makes it a folder
        assert cli.main(["export", str(model_path), "-o", out]) == 1
        err = capsys.readouterr().err
        assert "is a folder; name the file to write" in err and err.count("\n") == 1
    assert not (tmp_path / "new.onnx").exists()  # it had been written as a file


@pytest.mark.parametrize("name", ["the model", "photo.png", "model.onx", ""])
def test_cli_export_writes_over_no_file_but_an_onnx_one(tmp_path, capsys, name):
    """-o onto the model it exports (or a photo) would lose it: only an .onnx file is
    written again."""
    model_path = make_model_file(tmp_path, "lenet5")
    target = model_path if name == "the model" else tmp_path / name if name else ""
    if name == "photo.png":
        target.write_bytes(b"a photo")
    before = model_path.read_bytes()
    assert cli.main(["export", str(model_path), "-o", str(target or "")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("does not end in .onnx, by which lenet5 knows an ONNX "
                                      "file; name it e.g." in err if name
                                      else "-o is empty" in err)
    assert model_path.read_bytes() == before
    assert name != "photo.png" or target.read_bytes() == b"a photo"


def test_an_export_removes_what_a_killed_one_left(tmp_path):
    model_path = make_model_file(tmp_path, "lenet5")
    old = leave_behind(tmp_path / f".m.onnx.{dead_pid()}.ab12cd34.tmp")
    export(model_path, tmp_path / "m.onnx")
    assert not old.exists() and (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize("out, named", [("m.onx", "m.onnx"), (".onnx", "model.onnx"),
                                        ("foo.", "foo.onnx")])
def test_a_name_not_ending_in_onnx_gets_one_that_does(tmp_path, out, named):
    model_path = make_model_file(tmp_path, "lenet5")
    with pytest.raises(Lenet5Error, match=f"name it e.g. {re.escape(str(tmp_path / named))}.$"):
        export(model_path, tmp_path / out)


def test_cli_evaluate_with_engine_onnx(synthetic_dataset, tmp_path, capsys):
    model_path = make_model_file(tmp_path, "lenet5", dataset=synthetic_dataset)
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(model_path), "-o", str(out)]) == 0
    capsys.readouterr()
    results = {}
    for engine, source in (("numpy", model_path), ("onnx", out), ("onnx", model_path)):
        assert cli.main(["evaluate", str(source), "--engine", engine, "--json"]) == 0
        results[engine, source.suffix] = json.loads(capsys.readouterr().out)
    reference = results["numpy", ".safetensors"]
    for key in (("onnx", ".onnx"), ("onnx", ".safetensors")):
        assert results[key]["engine"] == "onnx"
        assert results[key]["n"] == reference["n"] == 200
        assert results[key]["errors"] == reference["errors"]
        assert results[key]["loss"] == pytest.approx(reference["loss"], rel=1e-4)


def test_cli_predict_with_engine_onnx(tmp_path, capsys):
    from PIL import Image

    model_path = make_model_file(tmp_path, "lenet5")
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(model_path), "-o", str(out)]) == 0
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255  # a white "1" on black
    Image.fromarray(255 - image).save(tmp_path / "one.png")  # dark ink on paper, as photographed
    capsys.readouterr()
    predictions = {}
    for engine, source in (("numpy", model_path), ("onnx", out), (None, out)):
        flags = [] if engine is None else ["--engine", engine]  # None: onnx, from the suffix
        assert cli.main(["predict", str(source), str(tmp_path / "one.png"), *flags,
                         "--json"]) == 0
        [predictions[engine]] = json.loads(capsys.readouterr().out)
    assert predictions[None] == predictions["onnx"]
    assert predictions["onnx"]["label"] == predictions["numpy"]["label"]
    assert predictions["onnx"]["confidence"] == pytest.approx(predictions["numpy"]["confidence"],
                                                              abs=1e-5)


def test_cli_serve_of_an_onnx_file_asks_for_the_model_file(tmp_path, capsys):
    pytest.importorskip("uvicorn", reason="the web extra is not installed")
    assert cli.main(["serve", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "is an ONNX file; `lenet5 serve` runs models in the numpy or torch engine" in err
    assert err.count("\n") == 1


def test_cli_evaluate_of_a_corrupt_onnx_file_fails_with_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert cli.main(["evaluate", str(bad), "--engine", "onnx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet5: error: ") and "not a valid ONNX file" in err
    assert err.count("\n") == 1


@pytest.mark.mnist
def test_onnxruntime_labels_match_on_real_digits(mnist, exported):
    model_path, onnx_path = exported
    images = mnist.test_images[:2000]
    want = load(model_path, engine="numpy").logits(images)
    got = load(onnx_path, engine="onnx").logits(images)
    assert np.abs(got - want).max() <= 1e-4
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_cli_export_onto_a_special_file_refuses_and_leaves_it(tmp_path, capsys, kind):
    import os
    import stat

    target = tmp_path / "full.onnx"  # an .onnx name: any other is refused before (above)
    if kind == "fifo":
        os.mkfifo(target)
    elif os.geteuid() == 0:
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a copy of /dev/full
    else:
        pytest.skip("creating a device node needs root")
    before = os.lstat(target)
    code = cli.main(["export", str(make_model_file(tmp_path, "lenet5")), "-o", str(target)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "not a regular file" in err
    after = os.lstat(target)
    assert (after.st_mode, after.st_rdev, after.st_ino) == (before.st_mode, before.st_rdev,
                                                            before.st_ino)


def test_onnx_file_with_lying_metadata_is_refused_by_the_same_schema(exported, tmp_path):
    from lenet5.errors import ModelFileError

    proto = onnx.load(exported[1])
    props = {p.key: p.value for p in proto.metadata_props}
    props["classes"] = "5"
    props[checkpoint.METADATA_CHECKSUM] = checkpoint.metadata_sha256(props)  # as a tool would
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, tmp_path / "lying.onnx")
    with pytest.raises(ModelFileError, match=r"lying\.onnx has a bad metadata field 'classes'"):
        load(tmp_path / "lying.onnx", engine="onnx")


@pytest.mark.parametrize("part", ["graph", "metadata"])
def test_a_changed_byte_in_an_onnx_file_is_refused(exported, tmp_path, part):
    """A weight or a mean changed in place still makes a valid ONNX file: the checksums tell."""
    from lenet5.errors import ModelFileError

    proto = onnx.load(exported[1])
    if part == "graph":  # a weight
        weights = proto.graph.initializer[-1]
        weights.raw_data = bytes([weights.raw_data[0] ^ 0x10]) + weights.raw_data[1:]
    else:
        for prop in proto.metadata_props:
            if prop.key == "test_accuracy":
                prop.value = "0.9976"
    onnx.save(proto, tmp_path / "changed.onnx")
    with pytest.raises(ModelFileError, match=f"changed\\.onnx is damaged: its {part} (do|does) "
                                             "not match the checksum stored in it .*; export "
                                             "it again with `lenet5 export`"):
        load(tmp_path / "changed.onnx", engine="onnx")


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_the_onnx_engine_refuses_devices_it_cannot_use(device):
    import lenet5

    with pytest.raises(Lenet5Error, match=f"--device {device} needs --engine torch"):
        lenet5.load("pretrained", engine="onnx", device=device)


def test_ctrl_c_while_onnxruntime_loads_is_an_interrupt_not_a_missing_package(monkeypatch):
    """pybind11 turns an exception in a module's initialization into ImportError
    ("initialization failed") raised from it: Ctrl-C then read as onnx not installed."""
    import builtins
    import sys

    from lenet5.onnx_graph import import_onnx

    real, cause = builtins.__import__, [KeyboardInterrupt()]

    def onnxruntime_fails(name, *args, **kwargs):
        if name == "onnxruntime":  # as its extension's initialization fails, from cause[0]
            raise ImportError("initialization failed") from cause[0]
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", onnxruntime_fails)
    with pytest.raises(KeyboardInterrupt):
        import_onnx()
    cause[0] = OSError("libonnxruntime.so: cannot open shared object file")  # really broken
    with pytest.raises(Lenet5Error, match="ONNX needs the onnx and onnxruntime packages"):
        import_onnx()
