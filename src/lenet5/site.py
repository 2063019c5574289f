"""`lenet5 export MODEL --format web -o DIR`: the draw-a-digit page as a static site that
computes in the browser, for any static host (`python -m http.server`, a course page, GitHub
Pages) and with no network.

DIR holds the page of `lenet5 serve` (index.html, static/app.js, static/style.css) plus
static/engine.js, a forward pass in plain JavaScript; the model's own ``model.safetensors``;
and ``model.json``, the network as a list of layers. engine.js computes whatever that list
says, so an architecture built from known layer kinds and activations needs no JavaScript
change: only a line in LAYER_JSON for a new layer class.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np

from . import checkpoint
from .arch import (
    RBF,
    Architecture,
    AvgPool,
    Conv,
    Dense,
    Layer,
    MaxPool,
    Subsample,
    arch_of,
    rbf_centres_of,
)
from .data.transforms import mean_std
from .errors import Lenet5Error
from .files import TEMPORARY, is_onnx_file, remove_abandoned, write_atomic, write_error
from .version import __version__

SITE_FORMAT = "lenet5-web"
"""model.json's "format": how `write_site` recognises a folder it may write over."""
SITE_VERSION = 1
JS_ACTIVATIONS = ("none", "relu", "tanh", "sigmoid", "scaled_tanh")
"""The activations engine.js computes (its ACTIVATIONS)."""
ENGINE_SCRIPT = '<script src="static/engine.js" defer></script>'
APP_SCRIPT = '<script src="static/app.js" defer></script>'
"""The served page's script tag; the site loads engine.js before it, which is how app.js
knows to compute in the browser instead of asking /api/predict."""


def _pool(kind: str) -> Callable[[Layer], dict]:
    return lambda layer: {"kind": kind, "size": layer.size}


LAYER_JSON: dict[type, Callable[[Layer], dict]] = {
    Conv: lambda layer: {"kind": "conv", "in_channels": layer.in_channels,
                         "out_channels": layer.out_channels, "kernel": layer.kernel,
                         "table": None if layer.table is None else list(map(list, layer.table))},
    MaxPool: _pool("maxpool"),
    AvgPool: _pool("avgpool"),
    Subsample: lambda layer: {"kind": "subsample", "channels": layer.channels, "size": layer.size},
    Dense: lambda layer: {"kind": "dense", "in_features": layer.in_features,
                          "out_features": layer.out_features},
    RBF: lambda layer: {"kind": "rbf", "in_features": layer.in_features,
                        "out_features": layer.out_features,
                        "centres": rbf_centres_of(layer).tolist()},
}
"""Each arch layer class as engine.js reads it (kinds: conv, maxpool, avgpool, subsample,
dense, rbf); parameters are the tensors "<name>.weight" and "<name>.bias"."""


def layer_json(layer: Layer) -> dict:
    """One layer of model.json: name, kind and its sizes, activation."""
    activation = getattr(layer, "activation", None) or "none"
    if activation not in JS_ACTIVATIONS:
        raise ValueError(f"engine.js cannot compute activation {activation!r} of {layer.name}")
    return {"name": layer.name, **LAYER_JSON[type(layer)](layer), "activation": activation}


def architecture_json(arch: Architecture) -> dict:
    """The architecture as engine.js reads it: its name, input side and layers in order."""
    return {"arch": arch.name, "description": arch.description, "input_size": arch.input_size,
            "layers": [layer_json(layer) for layer in arch.layers]}


def site_json(metadata: dict) -> dict:
    """model.json for a model with this metadata: the architecture, how 28x28 pixels become its
    input ((pixel / 255 - mean) / std after padding), and facts shown on the page."""
    arch = arch_of(metadata)
    norm = metadata["input_normalization"]
    mean, std = mean_std(norm)  # mean: a number, or an image (size, size)
    return {"format": SITE_FORMAT, "version": SITE_VERSION, "lenet5": __version__,
            **architecture_json(arch),
            "input": {"size": arch.input_size, "pad": norm["pad"],
                      "mean": np.asarray(mean).tolist(), "std": std,
                      "normalization": norm},
            "classes": [str(c) for c in metadata["classes"]],
            "model": {key: metadata.get(key) for key in ("dataset", "test_accuracy", "epochs")}}


def _page() -> dict[str, bytes]:
    """The served page's files, index.html loading engine.js before app.js."""
    web, static = files("lenet5") / "web", files("lenet5") / "server" / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    if html.count(APP_SCRIPT) != 1:
        raise RuntimeError(f"server/static/index.html must load app.js once as {APP_SCRIPT}")
    html = html.replace(APP_SCRIPT, f"{ENGINE_SCRIPT}\n  {APP_SCRIPT}")
    return {"index.html": html.encode("utf-8"),
            "static/app.js": (static / "app.js").read_bytes(),
            "static/style.css": (static / "style.css").read_bytes(),
            "static/engine.js": (web / "engine.js").read_bytes()}


def _is_site(folder: Path) -> bool:
    """A site, or what an export stopped part-way left of one: nothing but the site's files,
    index.html ours (model.json, the mark of a site, is written last)."""
    try:
        if json.loads((folder / "model.json").read_text())["format"] == SITE_FORMAT:
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        page = (folder / "index.html").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    names = _site_files()
    return ENGINE_SCRIPT in page and all(  # (stops at the first other file: -o ~ is no walk)
        _written(path.relative_to(folder)).as_posix() in names for path in folder.rglob("*")
        if not path.is_dir())


def _written(path: Path) -> Path:
    """The file `path` is, or is what a killed write of left (``atomic_file``'s temporary)."""
    written = TEMPORARY.fullmatch(path.name)
    return path.with_name(written["name"]) if written else path


def _site_files() -> set[str]:
    """A site's files, as paths within its folder."""
    return {*_page(), "model.safetensors", "model.json"}


def _check_target(out: Path) -> None:
    if is_onnx_file(out):  # meant --format onnx, most likely
        raise Lenet5Error(f"-o {out} names an ONNX file, but --format web writes a folder; give "
                          f"a folder such as {out.with_suffix('')}, or --format onnx.")
    if out.exists() and not out.is_dir():
        raise Lenet5Error(f"-o {out} is a file; give a folder for the site (it is created if "
                          "missing).")
    if out.is_dir() and any(out.iterdir()) and not _is_site(out):
        raise Lenet5Error(f"-o {out} is a folder with other files in it; give a new or empty "
                          "folder, or one written by `lenet5 export --format web` to replace "
                          "that site.")


def write_site(model_path: str | Path, out_dir: str | Path) -> dict:
    """Write the static site for a model file or run directory into ``out_dir`` (created if
    missing; an earlier site there is replaced). Returns the facts: path, arch, files, bytes."""
    source = checkpoint.resolve_model_path(model_path)
    _, metadata = checkpoint.load_model(source)  # a damaged or foreign file fails here
    out = Path(out_dir)
    _check_target(out)
    contents = {**_page(), "model.safetensors": source.read_bytes(),
                "model.json": json.dumps(site_json(metadata), separators=(",", ":")).encode()}
    for folder in {(out / name).parent for name in contents}:  # what killed exports left
        remove_abandoned(folder, TEMPORARY, {Path(name).name for name in contents})
    for name, data in contents.items():
        if name == "model.safetensors":  # model.json, the mark of a finished site, goes
            try:  # before the weights and comes back after them: a site replaced part-way
                (out / "model.json").unlink(missing_ok=True)  # is no finished one
            except OSError as exc:  # describing one model beside another's weights
                raise write_error(out / "model.json", exc, "replace") from None
        write_atomic(out / name, data)
    return {"format": "web", "path": str(out), "arch": metadata["arch"],
            "files": sorted(contents), "bytes": sum(len(data) for data in contents.values())}
