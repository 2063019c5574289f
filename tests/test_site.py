"""The static site of `lenet5 export --format web`: its files and refusals, and its JavaScript
engine in headless Chromium tested like the other two engines, offline: every request that is
not to the local static server is aborted and counted."""

from __future__ import annotations

import base64
import json
import struct
import typing
from pathlib import Path

import numpy as np
import pytest
from browser import (
    CHROMIUM,
    CLASSIFY_DRAWINGS,
    NO_CHROMIUM,
    chromium,
    draw,
    draw_large,
    each_map_shows_its_part_of_the_strip,
    offline_page,
    serve_folder,
    touch_draw,
)
from leftovers import dead_pid, leave_behind
from safetensors.numpy import save

from lenet5 import arch, checkpoint, site
from lenet5.arch import C3_TABLE, get_arch, init_params, rbf_centres
from lenet5.cli import main
from lenet5.data.transforms import input_normalization, mean_std
from lenet5.errors import Lenet5Error, ModelFileError
from lenet5.images import preprocess_image
from lenet5.model import load
from lenet5.site import write_site

ARCHS = ("lenet5", "lenet5-1998")
SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.44, 0.82)]]  # one stroke, 0-1 canvas coordinates
TEXT_FILES = ("index.html", "model.json", "static/app.js", "static/engine.js", "static/style.css")


def model_file(folder: Path, arch_name: str, pool: str | None = None,
               activation: str | None = None, normalization: str | None = None) -> Path:
    """A model file with freshly initialised weights and the metadata training writes."""
    architecture = get_arch(arch_name, pool, activation)
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)
    norm = input_normalization(architecture, images, normalization)
    path = folder / f"{arch_name}-{architecture.pool}-{architecture.activation}.safetensors"
    checkpoint.save_model(path, init_params(architecture, seed=0), {
        "arch": arch_name, **architecture.variant, "dataset": "mnist",
        "classes": list("0123456789"), "input_normalization": norm, "epochs": 1,
        "test_accuracy": 0.25})
    return path


# --- the files ----------------------------------------------------------------------------

@pytest.mark.parametrize("arch_name", ARCHS)
def test_site_holds_the_page_its_engine_and_the_model_itself(arch_name, tmp_path):
    model = model_file(tmp_path, arch_name)
    facts = write_site(model, tmp_path / "site")
    out = tmp_path / "site"
    assert facts["files"] == sorted(["model.safetensors", *TEXT_FILES])
    assert facts["bytes"] == sum((out / name).stat().st_size for name in facts["files"])
    assert facts["arch"] == arch_name and facts["path"] == str(out)
    assert (out / "model.safetensors").read_bytes() == model.read_bytes()
    html = (out / "index.html").read_text()
    assert html.index('src="static/engine.js"') < html.index('src="static/app.js"')
    for name in TEXT_FILES:  # nothing that would reach the network
        text = (out / name).read_text()
        assert "http://" not in text and "https://" not in text, name


def test_model_json_describes_the_1998_network(tmp_path):
    write_site(model_file(tmp_path, "lenet5-1998"), tmp_path / "site")
    described = json.loads((tmp_path / "site" / "model.json").read_text())
    assert described["format"] == site.SITE_FORMAT and described["arch"] == "lenet5-1998"
    layers = {layer["name"]: layer for layer in described["layers"]}
    assert [layer["kind"] for layer in described["layers"]] == \
        ["conv", "subsample", "conv", "subsample", "conv", "dense", "rbf"]
    assert {layer["activation"] for layer in described["layers"][:-1]} == {"scaled_tanh"}
    assert layers["OUTPUT"]["activation"] == "none"
    assert layers["C3"]["table"] == [list(row) for row in C3_TABLE]
    assert layers["C1"]["table"] is None and layers["C5"]["kernel"] == 5
    assert layers["S2"] == {"name": "S2", "kind": "subsample", "channels": 6, "size": 2,
                            "activation": "scaled_tanh"}
    np.testing.assert_array_equal(layers["OUTPUT"]["centres"], rbf_centres())
    norm = described["input"]["normalization"]
    assert norm["kind"] == "lecun_1998"
    assert (described["input"]["mean"], described["input"]["std"]) == mean_std(norm)
    assert described["input"]["size"] == 32 and described["input"]["pad"] == 2


def test_model_json_describes_the_modern_network(tmp_path):
    write_site(model_file(tmp_path, "lenet5"), tmp_path / "site")
    described = json.loads((tmp_path / "site" / "model.json").read_text())
    assert [(layer["kind"], layer["activation"]) for layer in described["layers"]] == [
        ("conv", "relu"), ("maxpool", "none"), ("conv", "relu"), ("maxpool", "none"),
        ("dense", "relu"), ("dense", "relu"), ("dense", "none")]
    assert described["layers"][4]["in_features"] == 400
    assert described["classes"] == list("0123456789")
    assert described["model"] == {"dataset": "mnist", "test_accuracy": 0.25, "epochs": 1}


def test_every_layer_class_has_a_form_for_the_javascript_engine():
    assert set(typing.get_args(arch.Layer)) == set(site.LAYER_JSON)


def test_refuses_a_file_or_a_folder_of_other_things_and_replaces_a_site(tmp_path):
    model = model_file(tmp_path, "lenet5")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(Lenet5Error, match=r"notes\.txt is a file; give a folder"):
        write_site(model, tmp_path / "notes.txt")
    with pytest.raises(Lenet5Error, match="is a folder with other files in it"):
        write_site(model, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(Lenet5Error, match=r"a\.onnx names an ONNX file, but --format web writes "
                                          r"a folder; give a folder such as .*a, or --format"):
        write_site(model, tmp_path / "a.onnx")
    assert not (tmp_path / "a.onnx").exists()

    write_site(model, tmp_path / "site")
    (tmp_path / "site" / "README.txt").write_text("kept")  # a file the user added
    other = model_file(tmp_path, "lenet5-1998")
    assert write_site(other, tmp_path / "site")["arch"] == "lenet5-1998"
    assert (tmp_path / "site" / "model.safetensors").read_bytes() == other.read_bytes()
    assert (tmp_path / "site" / "README.txt").read_text() == "kept"
    assert not list((tmp_path / "site").rglob("*.tmp"))

    # an export stopped part-way (Ctrl-C, a full disk) left the page without model.json:
    # done again, it finishes the site; a folder of pages of one's own is still refused
    (tmp_path / "site" / "model.json").unlink()
    (tmp_path / "site" / "README.txt").unlink()
    assert write_site(model, tmp_path / "site")["arch"] == "lenet5"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "index.html").write_text("<p>my page</p>")
    with pytest.raises(Lenet5Error, match="is a folder with other files in it"):
        write_site(model, tmp_path / "mine")

    with pytest.raises(ModelFileError, match="no model at"):
        write_site(tmp_path / "missing", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_what_a_killed_export_left_neither_blocks_the_next_nor_stays(tmp_path):
    """kill -9 while a site's file was written left its temporary, and the same command was
    refused: a folder with other files in it."""
    model = model_file(tmp_path, "lenet5")
    site_dir = tmp_path / "site"
    gone = dead_pid()
    fresh = leave_behind(site_dir / "static" / f".style.css.{gone}.ab12cd34.tmp", old=False)
    (site_dir / "index.html").write_bytes(site._page()["index.html"])  # as far as it got
    write_site(model, site_dir)  # a fresh one may be another machine's: kept, not refused
    assert fresh.exists()
    old = leave_behind(fresh)
    write_site(model, site_dir)
    assert not old.exists() and not list(site_dir.rglob("*.tmp"))


def test_a_site_replaced_part_way_is_no_finished_site(tmp_path, monkeypatch):
    """Ctrl-C after the new model's weights were written had left the old model.json
    describing another network beside them."""
    site_dir = tmp_path / "site"
    write_site(model_file(tmp_path, "lenet5-1998"), site_dir)
    real = site.write_atomic

    def stopped_at_the_mark(path, data):
        if path.name == "model.json":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(site, "write_atomic", stopped_at_the_mark)
    with pytest.raises(KeyboardInterrupt):
        write_site(model_file(tmp_path, "lenet5"), site_dir)
    assert not (site_dir / "model.json").exists()
    monkeypatch.setattr(site, "write_atomic", real)
    assert write_site(model_file(tmp_path, "lenet5"), site_dir)["arch"] == "lenet5"


def test_export_command_writes_the_site(tmp_path, capsys):
    model = model_file(tmp_path, "lenet5")
    assert main(["export", str(model), "--format", "web", "-o", str(tmp_path / "site"),
                 "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["format"] == "web" and (tmp_path / "site" / "index.html").is_file()

    assert main(["export", str(model), "--format", "web", "-o", str(tmp_path / "site")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote the lenet5 page to ") and "python -m http.server" in out

    assert main(["export", str(model), "--format", "web", "-o", str(model)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lenet5: error: -o ") and err.count("\n") == 0


# --- the JavaScript engine in Chromium ----------------------------------------------------

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    with chromium() as browser:
        yield browser


def open_site(browser, base_url: str, **context_options) -> tuple:
    """(page, blocked, errors) of the site at base_url, its model loaded."""
    page, blocked, errors = offline_page(browser, base_url, **context_options)
    page.goto(base_url + "/")
    page.evaluate("() => window.lenet5.ready.then(() => null)")
    return page, blocked, errors


ACTIVATIONS = {"none": lambda x: x, "relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh,
               "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
               "scaled_tanh": lambda x: 1.7159 * np.tanh(2.0 * x / 3.0)}


def reference_logits(described: dict, params: dict[str, np.ndarray],
                     images: np.ndarray) -> np.ndarray:
    """What model.json says to compute, in float64 NumPy: (N, 28, 28) uint8 -> (N, K)."""
    pad, mean, std = (described["input"][key] for key in ("pad", "mean", "std"))
    mean = np.asarray(mean)  # a number, or a mean image (size, size)
    x = (np.pad(images, ((0, 0), (pad, pad), (pad, pad)))[:, None] / 255.0 - mean) / std
    for layer in described["layers"]:
        weight, bias = (params.get(f"{layer['name']}.{key}") for key in ("weight", "bias"))
        kind = layer["kind"]
        if kind == "conv":
            if layer["table"] is not None:
                weight = weight * np.array(layer["table"])[:, :, None, None]
            windows = np.lib.stride_tricks.sliding_window_view(x, weight.shape[2:], axis=(2, 3))
            x = np.einsum("nchwij,ocij->nohw", windows, weight) + bias[:, None, None]
        elif kind in ("maxpool", "avgpool", "subsample"):
            s = layer["size"]
            n, c, h, w = x.shape
            blocks = x[:, :, :h // s * s, :w // s * s].reshape(n, c, h // s, s, w // s, s)
            x = (blocks.max(axis=(3, 5)) if kind == "maxpool" else
                 blocks.mean(axis=(3, 5)) if kind == "avgpool" else
                 blocks.sum(axis=(3, 5)) * weight[:, None, None] + bias[:, None, None])
        elif kind == "dense":
            x = x.reshape(len(x), -1) @ weight.T + bias
        else:  # rbf
            centres = np.array(layer["centres"])
            x = -((x.reshape(len(x), -1)[:, None, :] - centres) ** 2).sum(axis=2)
        x = ACTIVATIONS[layer["activation"]](x)
    return x


def variant() -> tuple[dict, dict[str, np.ndarray]]:
    """A network of every layer kind and activation engine.js knows, with random weights (a
    conv table whose unconnected weights are NOT zero: the table must mask them)."""
    rng = np.random.default_rng(1)
    table = rng.random((6, 4)) < 0.6
    table[:, 0] = True
    layers = [
        {"name": "C1", "kind": "conv", "in_channels": 1, "out_channels": 4, "kernel": 5,
         "table": None, "activation": "tanh"},                                    # 28x28
        {"name": "S2", "kind": "avgpool", "size": 2, "activation": "none"},          # 14x14
        {"name": "C3", "kind": "conv", "in_channels": 4, "out_channels": 6, "kernel": 3,
         "table": table.tolist(), "activation": "sigmoid"},                         # 12x12
        {"name": "S4", "kind": "maxpool", "size": 2, "activation": "none"},          # 6x6
        {"name": "S5", "kind": "subsample", "channels": 6, "size": 2,
         "activation": "scaled_tanh"},                                              # 3x3
        {"name": "C6", "kind": "conv", "in_channels": 6, "out_channels": 8, "kernel": 3,
         "table": None, "activation": "relu"},                                      # 1x1
        {"name": "F7", "kind": "dense", "in_features": 8, "out_features": 12,
         "activation": "none"},
        {"name": "OUT", "kind": "rbf", "in_features": 12, "out_features": 10,
         "centres": rng.normal(size=(10, 12)).tolist(), "activation": "none"},
    ]
    shapes = {"C1": (4, 1, 5, 5), "C3": (6, 4, 3, 3), "S5": (6,), "C6": (8, 6, 3, 3),
              "F7": (12, 8)}
    params = {}
    for name, shape in shapes.items():
        params[f"{name}.weight"] = rng.normal(0, 0.5, shape).astype(np.float32)
        params[f"{name}.bias"] = rng.normal(0, 0.1, shape[:1]).astype(np.float32)
    described = {"input": {"size": 32, "pad": 2, "mean": 0.2, "std": 0.4}, "layers": layers}
    return described, params


@pytest.fixture(scope="module")
def synthetic_site(tmp_path_factory, browser):
    """A site for an untrained model, served, plus the variant network beside it."""
    folder = tmp_path_factory.mktemp("synthetic")
    write_site(model_file(folder, "lenet5"), folder / "site")
    described, params = variant()
    (folder / "site" / "variant.json").write_text(json.dumps(described))
    (folder / "site" / "variant.safetensors").write_bytes(save(params))
    with serve_folder(folder / "site") as base_url:
        yield base_url, described, params


RUN_VARIANT = """async (images) => {
  const described = await (await fetch("variant.json")).json();
  const weights = await (await fetch("variant.safetensors")).arrayBuffer();
  const network = new LeNet5Engine.Network(described,
                                           LeNet5Engine.readSafetensors(weights).tensors);
  return images.map((pixels) => Array.from(network.forward(pixels).at(-1).data));
}"""


def test_reference_is_the_numpy_engine_on_both_architectures(tmp_path):
    """The NumPy oracle below reads model.json as engine.js does; on the real networks it
    gives the NumPy engine's outputs."""
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28)).astype(np.uint8)
    for arch_name in ARCHS:
        model = model_file(tmp_path, arch_name)
        params, metadata = checkpoint.load_model(model)
        expected = load(model).logits(images)
        np.testing.assert_allclose(reference_logits(site.site_json(metadata), params, images),
                                   expected, rtol=1e-4, atol=1e-4)


@needs_chromium
def test_every_layer_kind_and_activation_matches_numpy(browser, synthetic_site):
    base_url, described, params = synthetic_site
    page, blocked, errors = open_site(browser, base_url)
    images = np.random.default_rng(2).integers(0, 256, (16, 28, 28)).astype(np.uint8)
    logits = np.array(page.evaluate(RUN_VARIANT, images.reshape(16, -1).tolist()))
    np.testing.assert_allclose(logits, reference_logits(described, params, images),
                               rtol=1e-9, atol=1e-9)
    kinds = page.evaluate("Object.keys(LeNet5Engine.KINDS)")
    activations = page.evaluate("Object.keys(LeNet5Engine.ACTIVATIONS)")
    assert {layer["kind"] for layer in described["layers"]} == set(kinds)
    assert {layer["activation"] for layer in described["layers"]} == set(activations) == \
        set(site.JS_ACTIVATIONS)
    assert blocked == [] and errors == []


@needs_chromium
def test_safetensors_reader_and_mistakes(browser, synthetic_site):
    page, blocked, _ = open_site(browser, synthetic_site[0])
    # a header of odd length, so the data is not 4-byte aligned: read through a DataView
    values = np.array([1.5, -2.25, 3e-8], dtype="<f4")
    header = json.dumps({"__metadata__": {"arch": "x"}, "t": {
        "dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}).encode() + b" "
    blob = struct.pack("<Q", len(header)) + header + values.tobytes()
    read = page.evaluate("""(bytes) => {
      const file = LeNet5Engine.readSafetensors(new Uint8Array(bytes).buffer);
      return [file.metadata, file.tensors.t.shape, Array.from(file.tensors.t.data)];
    }""", list(blob))
    assert read == [{"arch": "x"}, [3], values.tolist()]
    message = page.evaluate("""(bytes) => {
      try { LeNet5Engine.readSafetensors(new Uint8Array(bytes).buffer); } catch (e) {
        return e.message; } }""", list(blob[:-4]))
    assert "runs past the end" in message
    assert "classify needs 784 pixel values" in page.evaluate(
        "() => { try { lenet5.classify([1, 2, 3]); } catch (e) { return e.message; } }")
    mismatch = page.evaluate("""async () => {
      const described = await (await fetch("variant.json")).json();
      const weights = await (await fetch("model.safetensors")).arrayBuffer();
      try { new LeNet5Engine.Network(described, LeNet5Engine.readSafetensors(weights).tensors);
      } catch (e) { return e.message; } }""")
    assert mismatch == "model.safetensors: C1.weight should be 4x1x5x5, found 6x1x5x5"
    assert blocked == []


@needs_chromium
@pytest.mark.parametrize("variant_name", ["avg-sigmoid", "max-tanh", "mean_image"])
def test_every_variant_of_the_modern_network_computes_as_in_numpy(browser, tmp_path,
                                                                 variant_name):
    """The tutorials' variants and the mean-image normalisation, untrained weights scaled up so
    that the classes differ: the NumPy engine's labels and probabilities."""
    pool, activation, normalization = {"avg-sigmoid": ("avg", "sigmoid", None),
                                       "max-tanh": ("max", "tanh", None),
                                       "mean_image": (None, None, "mean_image")}[variant_name]
    model = model_file(tmp_path, "lenet5", pool, activation, normalization)
    params, metadata = checkpoint.load_model(model)
    checkpoint.save_model(model, {k: 8 * v for k, v in params.items()}, metadata)
    folder = Path(write_site(model, tmp_path / "site")["path"])
    images = np.random.default_rng(2).integers(0, 256, (40, 28, 28)).astype(np.uint8)
    (folder / "images.u8").write_bytes(images.tobytes())
    expected = load(model).predict_proba(images)
    with serve_folder(folder) as base_url:
        page, blocked, errors = open_site(browser, base_url)
        answers = page.evaluate(CLASSIFY_FILE, "images.u8")
    np.testing.assert_array_equal([a["label"] for a in answers], expected.argmax(axis=1))
    assert np.abs(np.array([a["probs"] for a in answers]) - expected).max() < 1e-4
    assert len(np.unique(expected.argmax(axis=1))) >= 2 and blocked == [] and errors == []


CLASSIFY_FILE = """async (url) => {
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  const answers = [];
  for (let i = 0; i < bytes.length; i += 784) {
    answers.push(lenet5.classify(bytes.subarray(i, i + 784)));
  }
  return answers;
}"""
"""page.evaluate(CLASSIFY_FILE, url) -> lenet5.classify's answer for each 28x28 uint8 image in
the file at url (faster than handing Playwright 784 numbers per image)."""


# --- trained models on MNIST ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_1998(mnist, tmp_path_factory) -> Path:
    """lenet5-1998 briefly trained (5,000 MNIST images, 2 epochs; some 3 s of CPU)."""
    from lenet5.training import TrainConfig, train

    out = tmp_path_factory.mktemp("trained-1998") / "run"
    config = TrainConfig(arch="lenet5-1998", limit=5000, epochs=2, out=str(out))
    return train(config, log=lambda _: None, progress=False)


@pytest.fixture(scope="module")
def trained_sites(trained_run, trained_1998, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Per architecture: (run directory, its exported site)."""
    folder = tmp_path_factory.mktemp("sites")
    runs = {"lenet5": trained_run, "lenet5-1998": trained_1998}
    return {name: (run, Path(write_site(run, folder / name)["path"]))
            for name, run in runs.items()}


@needs_chromium
@pytest.mark.mnist
@pytest.mark.parametrize("arch_name", ARCHS)
def test_javascript_engine_gives_the_numpy_engines_answers(arch_name, trained_sites, browser,
                                                           mnist):
    """1,000 MNIST test images: the same label on every one, probabilities within 1e-4."""
    run, folder = trained_sites[arch_name]
    images = mnist.test_images[:1000]
    expected = load(run).predict_proba(images)
    (folder / "images.u8").write_bytes(images.tobytes())  # (1000, 28, 28) uint8
    with serve_folder(folder) as base_url:
        page, blocked, errors = open_site(browser, base_url)
        answers = page.evaluate(CLASSIFY_FILE, "images.u8")
    labels = np.array([answer["label"] for answer in answers])
    probs = np.array([answer["probs"] for answer in answers])
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))
    assert np.abs(probs - expected).max() < 1e-4
    assert blocked == [] and errors == []


@needs_chromium
@pytest.mark.mnist
def test_drawing_and_uploading_on_the_static_page(trained_sites, browser, mnist, tmp_path):
    run, folder = trained_sites["lenet5"]
    with serve_folder(folder) as base_url:
        page, blocked, errors = open_site(browser, base_url, viewport={"width": 1280,
                                                                       "height": 900})
        assert "JavaScript engine" in page.locator("#model-info").text_content()
        draw(page, SEVEN)
        label = page.locator("#label")
        page.wait_for_function("document.querySelector('#label').textContent !== '?'")
        assert label.text_content() == "7"
        assert page.locator("#layers img[src^='data:image/png']").count() == 6 + 6 + 16 + 16
        assert page.locator("#layers figure figcaption strong").all_text_contents() == \
            ["C1", "S2", "C3", "S4"]
        each_map_shows_its_part_of_the_strip(page)
        assert page.locator("#input").evaluate(
            "img => [img.naturalWidth, img.naturalHeight]") == [28, 28]
        shown = page.locator("[data-only]").evaluate_all(
            "els => els.map((el) => [el.dataset.only, !el.hidden])")
        assert {only for only, visible in shown if visible} == {"static"}
        page.keyboard.press("Control+z")
        page.wait_for_function("document.querySelector('#label').textContent === '?'")

        # a test digit printed dark on light, as a scan shows it, that Python reads right
        model = load(run)
        for path, truth in zip(draw_large(mnist.test_images[:20], tmp_path),
                               mnist.test_labels, strict=False):
            if model.predict(preprocess_image(path))[0] == truth:
                break
        page.locator("#file").set_input_files(str(path))
        page.wait_for_function("document.querySelector('#label').textContent !== '?'")
        assert label.text_content() == str(truth)

        phone, phone_blocked, phone_errors = open_site(
            browser, base_url, viewport={"width": 390, "height": 844}, device_scale_factor=2,
            is_mobile=True, has_touch=True)
        touch_draw(phone, SEVEN[0])
        phone.wait_for_function("document.querySelector('#label').textContent !== '?'")
        assert phone.locator("#label").text_content() == "7"
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert blocked == phone_blocked == [] and errors == phone_errors == []


@needs_chromium
@pytest.mark.mnist
def test_javascript_preprocessing_agrees_with_python(trained_sites, browser, mnist):
    """200 MNIST test digits drawn large on a 280x280 white canvas: JavaScript's 28x28 gets
    Python's label (measured: 499 of 500 with this model) and nearly its pixels."""
    run, folder = trained_sites["lenet5"]
    paths = draw_large(mnist.test_images[:200], folder / "drawings")
    python_pixels = np.array([preprocess_image(path) for path in paths])
    python_labels = load(run).predict(python_pixels)
    with serve_folder(folder) as base_url:
        page, blocked, errors = open_site(browser, base_url)
        answers = page.evaluate(CLASSIFY_DRAWINGS, [f"drawings/{p.name}" for p in paths])
    js_pixels = np.array([np.frombuffer(base64.b64decode(answer["pixels"]), np.uint8)
                          for answer in answers]).reshape(-1, 28, 28).astype(int)
    js_labels = np.array([answer["label"] for answer in answers])
    assert (js_labels == python_labels).mean() >= 0.98
    assert np.abs(js_pixels - python_pixels).mean() < 1.0  # of 255
    assert blocked == [] and errors == []


@needs_chromium
def test_opened_as_a_file_the_page_says_to_use_a_server(browser, tmp_path):
    write_site(model_file(tmp_path, "lenet5"), tmp_path / "site")
    page = browser.new_page()
    page.goto((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_function("!document.querySelector('#model-info').textContent"
                           ".startsWith('Loading')")
    assert "from a web server (python -m http.server" in \
        page.locator("#model-info").text_content()
    page.close()
