"""Model and training-state files: safetensors (never pickle), validated on every load.

A model file holds the trainable parameters under ``lenet5.arch``'s names plus metadata:
``format`` (always ``lenet5-model``, the magic), ``format_version``, ``arch``, ``dataset``,
``classes`` and ``input_normalization`` (JSON), ``weights_sha256`` (the weights' checksum),
``metadata_sha256`` (the rest of the metadata's), and facts about the run. Loading checks the
metadata against one schema (``check_metadata``) and the weights and metadata against their
checksums; files written before a checksum existed have none and still load. Files are
written atomically (``files.write_atomic``) and byte for byte the same for the same contents.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from . import pretrained
from .arch import ARCHITECTURES, Architecture, arch_of
from .errors import Lenet5Error, ModelFileError, cannot_read
from .files import (
    MODEL_FILE,
    holds_run,
    is_number,
    is_onnx_file,
    not_trained_yet,
    unfinished_run,
    write_atomic,
)
from .hparams import OPTIMIZER_SLOTS

MAGIC = "lenet5-model"
STATE_MAGIC = "lenet5-training-state"
FORMAT_VERSION = 1
CHECKSUM = "weights_sha256"
METADATA_CHECKSUM = "metadata_sha256"
GRAPH_CHECKSUM = "graph_sha256"  # an exported ONNX file's (`onnx_graph.graph_sha256`)
REQUIRED = ("arch", "classes", "input_normalization")
# Metadata stored as plain strings; every other field is JSON (``encode_metadata``).
STRING_FIELDS = frozenset({"format", "arch", "pool", "activation", "dataset", "engine",
                           "lenet5_version", CHECKSUM, METADATA_CHECKSUM, GRAPH_CHECKSUM})
# The numbers each kind of input normalisation needs (``data.transforms.input_normalization``);
# mean_image's "mean" is an image, checked on its own.
NORMALIZATION_FIELDS = {"mean_std": ("mean", "std"), "mean_image": ("std",),
                        "lecun_1998": ("background", "ink")}


def encode_metadata(meta: dict) -> dict[str, str]:
    """Metadata values as safetensors stores them: strings as they are, the rest as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def decode_metadata(meta: dict[str, str]) -> dict:
    """JSON fields back to values; STRING_FIELDS (arch, dataset, ...) stay strings, as do
    other values that are not JSON."""
    decoded = {}
    for k, v in meta.items():
        try:
            decoded[k] = v if k in STRING_FIELDS else json.loads(v)
        except ValueError:
            decoded[k] = v
    return decoded


def weights_sha256(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over the tensors in a defined order: for each name, sorted, the JSON line
    ``[name, dtype, shape]`` (dtype as NumPy writes it, little-endian: ``"<f4"``), then the
    tensor's raw little-endian bytes in C order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = np.asarray(tensors[name])
        value = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        digest.update(json.dumps([name, value.dtype.str, list(value.shape)]).encode() + b"\n")
        digest.update(value.tobytes())
    return digest.hexdigest()


def metadata_sha256(meta: dict[str, str]) -> str:
    """SHA-256 over metadata as stored (strings), all but this checksum itself: the JSON of
    its [key, value] pairs in key order. A byte changed there (a mean, a pooling kind) would
    otherwise be a model that loads and answers wrong."""
    pairs = sorted([k, v] for k, v in meta.items() if k != METADATA_CHECKSUM)
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def check_metadata_checksum(path: Path, meta: dict[str, str], remedy: str) -> None:
    """Refuse metadata that do not match their METADATA_CHECKSUM (where they have one)."""
    if METADATA_CHECKSUM in meta and meta[METADATA_CHECKSUM] != metadata_sha256(meta):
        raise ModelFileError(f"{path} is damaged: its metadata do not match the checksum stored "
                             f"in it ({METADATA_CHECKSUM}); {remedy}.")


def _serialize(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
    """safetensors bytes with the metadata, checksums added, in sorted key order. safetensors
    writes it in hash-map order, which changes from one save to the next, and identical runs
    must give identical files."""
    meta = {**meta, CHECKSUM: weights_sha256(tensors)}
    blob = save(tensors, metadata={**meta, METADATA_CHECKSUM: metadata_sha256(meta)})
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the tensors stay 8-byte aligned, as safetensors has them
    return len(text).to_bytes(8, "little") + text + blob[8 + size:]


def save_model(path: Path, params: dict[str, np.ndarray], metadata: dict) -> None:
    meta = {**encode_metadata(metadata),  # metadata read from a file keeps this file's format
            "format": MAGIC, "format_version": str(FORMAT_VERSION)}
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}
    write_atomic(Path(path), _serialize(tensors, meta))


def resolve_model_path(path: str | Path) -> Path:
    """A model file, a run directory holding ``model.safetensors``, or the name ``pretrained``
    (the model shipped with lenet5; ``./pretrained`` is a path)."""
    if str(path) == pretrained.NAME:
        if not pretrained.path().is_file():
            raise ModelFileError(f"the pretrained model is not in this installation of lenet5 "
                                 f"({pretrained.path()} is missing); reinstall lenet5, or build "
                                 "it with `python scripts/build_pretrained.py`.")
        return pretrained.path()
    if not str(path).strip():  # Path("") is the current folder
        raise ModelFileError(f"the model given is empty; pass a {MODEL_FILE} file, a run "
                             f"directory made by `lenet5 train`, or {pretrained.NAME}.")
    p = Path(path)
    _refuse_unreadable(p)
    if p.is_dir() and unfinished_run(p):
        raise ModelFileError(f"no model at {path} yet: {not_trained_yet(path)}.")
    if p.is_dir() and holds_run(p) and not os.path.lexists(p / MODEL_FILE):
        raise ModelFileError(f"{path} is a run whose {MODEL_FILE} is missing (moved or "
                             "deleted); restore it, or pass another model.")
    if p.is_dir():
        p = p / MODEL_FILE
        _refuse_unreadable(p)
    if not p.is_file():
        raise ModelFileError(f"no model at {path}; pass a {MODEL_FILE} file, a run directory "
                             f"made by `lenet5 train`, or {pretrained.NAME}.")
    return p


def _refuse_unreadable(path: Path) -> None:
    """A ModelFileError where ``path`` cannot be looked at (a folder above it this user may
    not enter), which Path's tests would raise as a bare PermissionError on Python 3.11."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return  # the caller says there is no model there
    except OSError as exc:
        raise ModelFileError(cannot_read(path, exc.strerror or exc)) from None


def _begins_as_safetensors(path: Path) -> bool:
    """Whether a file starts as safetensors files do: 8 bytes of header length, then "{"."""
    try:
        with open(path, "rb") as file:
            return file.read(9)[8:9] == b"{"
    except OSError:
        return True  # unreadable: the reading itself says why


def _read(path: Path, magic: str, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not _begins_as_safetensors(path):  # a text file, a picture: no "truncated" advice
        kind = ("it is named as an ONNX file, which this command does not read"
                if is_onnx_file(path)
                else "it does not begin as a safetensors file does")
        raise ModelFileError(f"{path} is not a {what}: {kind}; pass a file written by `lenet5 "
                             "train` (or its run directory).")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())  # safetensors' message may span lines
        raise ModelFileError(f"{path} is not a readable {what} ({reason}); it may be truncated "
                             "or corrupt: train again or restore it from a copy.") from None
    except (TypeError, AttributeError):  # a dtype NumPy lacks (BF16, F8): never written by us
        raise ModelFileError(f"{path} holds tensors of a type lenet5 never writes (not "
                             "float32); it was not written by lenet5: pass a file written by "
                             "`lenet5 train`.") from None
    if meta.get("format") == STATE_MAGIC != magic:  # the run's other file
        raise ModelFileError(f"{path} is a run's training state, for --resume, not its model; "
                             f"pass the {MODEL_FILE} beside it, or the run directory.")
    if meta.get("format") != magic:
        raise ModelFileError(f"{path} is a safetensors file but not a lenet5 {what}; pass a "
                             f"file written by `lenet5 train`.")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ModelFileError(f"{path} has no valid format_version; it was not written by "
                             "lenet5: train again.") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} uses format version {version}, newer than this lenet5 "
                             f"reads ({FORMAT_VERSION}); upgrade lenet5 (`git pull` in your "
                             "clone, then `pip install -e . -c constraints.txt`).")
    if CHECKSUM in meta and meta[CHECKSUM] != weights_sha256(tensors):
        raise ModelFileError(f"{path} is damaged: its weights do not match the checksum stored "
                             f"in it ({CHECKSUM}); train again or restore it from a copy.")
    check_metadata_checksum(path, meta, "train again or restore it from a copy")
    return tensors, meta


def _bad_field(path: Path, field: str, problem: str) -> ModelFileError:
    return ModelFileError(f"{path} has a bad metadata field {field!r}: {problem}; the file is "
                          "damaged or was not written by lenet5: train again or restore it "
                          "from a copy.")


def _is_image(value: object) -> bool:
    return (isinstance(value, list) and len(value) == 28
            and all(isinstance(row, list) and len(row) == 28 and all(map(is_number, row))
                    for row in value))


def _architecture(path: Path, decoded: dict) -> Architecture:
    """The architecture and variant the metadata names (``arch``, ``pool``, ``activation``)."""
    name = decoded["arch"]
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ModelFileError(f"{path} names an unknown architecture {name!r} in its metadata "
                             f"field 'arch'; this lenet5 knows {', '.join(ARCHITECTURES)}: "
                             "upgrade lenet5, or pass a file written by `lenet5 train`.")
    try:
        return arch_of(decoded)
    except Lenet5Error as exc:
        raise ModelFileError(f"{path} names a variant of {name} that this lenet5 does not know: "
                             f"{str(exc).rstrip('.')}; pass a file written by `lenet5 train`, "
                             "or upgrade lenet5 if a newer one wrote it.") from None


NOT_OURS = "it was not written by lenet5: train again"


def require_fields(path: str | Path, meta: dict[str, str], keys: tuple[str, ...],
                   remedy: str = NOT_OURS) -> None:
    """Refuse a file whose metadata lacks any of `keys`, naming them all, and the `remedy`."""
    missing = [key for key in keys if key not in meta]
    if missing:
        raise ModelFileError(f"{path} lacks lenet5 metadata ({', '.join(missing)}); {remedy}.")


def check_metadata(path: Path, meta: dict[str, str], remedy: str = NOT_OURS) -> dict:
    """The metadata of a model (or exported) file, decoded, after checking it against the
    schema: ``arch`` a known architecture; ``classes`` one name (a string) per output;
    ``input_normalization`` an object of a known ``kind`` with finite numbers, a positive
    scale and the padding the architecture's input size needs; ``dataset`` a string.
    `remedy`: what to do about a file that lacks a field."""
    require_fields(path, meta, REQUIRED, remedy)
    decoded = decode_metadata(meta)
    arch = _architecture(path, decoded)
    classes = decoded["classes"]
    if not isinstance(classes, list):
        raise _bad_field(path, "classes", f"{meta['classes']!r} is not a list of class names")
    if len(classes) != arch.num_classes:
        raise _bad_field(path, "classes", f"it names {len(classes)} classes, but {arch.name} "
                         f"has {arch.num_classes} outputs")
    if not all(isinstance(c, str) for c in classes):
        raise _bad_field(path, "classes", "its entries must be strings")
    _check_normalization(path, decoded["input_normalization"], arch)
    return decoded


def _check_normalization(path: Path, norm: object, arch: Architecture) -> None:
    field = "input_normalization"
    if not isinstance(norm, dict):
        raise _bad_field(path, field, f"{norm!r} is not a JSON object")
    kind = norm.get("kind")
    if "kind" not in norm:
        raise _bad_field(path, field, "it has no 'kind'")
    if kind not in NORMALIZATION_FIELDS:
        raise _bad_field(path, field, f"unknown kind {kind!r} (known: "
                         f"{', '.join(NORMALIZATION_FIELDS)})")
    for key in NORMALIZATION_FIELDS[kind]:
        if not is_number(norm.get(key)):
            raise _bad_field(path, field, f"{key!r} is {norm.get(key)!r}, not a finite number")
    if kind == "mean_image" and not _is_image(norm.get("mean")):
        raise _bad_field(path, field, "its 'mean' must be a 28x28 image of finite numbers")
    scale = norm["ink"] - norm["background"] if kind == "lecun_1998" else norm["std"]
    if not scale > 0:
        raise _bad_field(path, field, "ink must be above background" if kind == "lecun_1998"
                         else "std must be above 0")
    pad = arch.pad
    if type(norm.get("pad")) is not int or norm["pad"] != pad:
        raise _bad_field(path, field, f"'pad' is {norm.get('pad')!r}, but {arch.name} reads "
                         f"{arch.input_size}x{arch.input_size} inputs, so it must be {pad}")


def check_params(path: Path, arch: Architecture, tensors: dict[str, np.ndarray]) -> None:
    """Exactly the architecture's parameters, each of its shape, all finite."""
    expected = arch.param_shapes()
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        detail = "; ".join(f"{label}: {', '.join(names)}" for label, names in
                           (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
                           if names)
        raise ModelFileError(f"{path} does not hold {arch.name} weights ({detail}); it was made "
                             "for another architecture or is damaged.")
    not_real = sorted(k for k, v in tensors.items() if v.dtype.kind != "f")
    if not_real:
        raise ModelFileError(f"{path} holds weights that are not real numbers "
                             f"({', '.join(not_real)}); it was not written by lenet5: pass a "
                             "file written by `lenet5 train`.")
    bad = [k for k, v in tensors.items() if not np.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path} holds NaN or infinite weights in {', '.join(bad)}; "
                             "retrain with a lower --lr.")


def load_model(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(parameters, metadata with JSON fields decoded); raises ModelFileError with a hint."""
    p = resolve_model_path(path)
    tensors, meta = _read(p, MAGIC, "model file")
    decoded = check_metadata(p, meta)
    check_params(p, arch_of(decoded), tensors)
    return tensors, decoded


def save_state(path: Path, params: dict[str, np.ndarray], optimizer: dict[str, np.ndarray],
               metadata: dict) -> None:
    """Everything needed to resume: parameters, optimizer state, epoch and run facts."""
    tensors = {f"param.{k}": np.ascontiguousarray(v) for k, v in params.items()}
    tensors.update({f"optim.{k}": np.ascontiguousarray(v) for k, v in optimizer.items()})
    meta = {"format": STATE_MAGIC, "format_version": str(FORMAT_VERSION),
            **encode_metadata(metadata)}
    write_atomic(Path(path), _serialize(tensors, meta))


def load_state(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(parameters, optimizer state, metadata) of a training-state file, checked on its own
    terms: ``epoch`` a finished epoch (1 or more), ``epochs`` the epochs trained in those
    passes (2.25 after three, the last a quarter; ``epoch`` where absent), the parameters those of
    its ``arch``, each optimizer tensor ``<slot>.<parameter>`` of its parameter's shape,
    ``steps`` a count, all finite. Whether it suits the run being resumed is the caller's to
    check."""
    tensors, meta = _read(Path(path), STATE_MAGIC, "training state file")
    decoded = decode_metadata(meta)
    epoch = decoded.get("epoch")
    if type(epoch) is not int or epoch < 1:
        raise _bad_field(path, "epoch", f"{meta.get('epoch')!r} is not the number of a "
                         "finished epoch")
    epochs = decoded.setdefault("epochs", epoch)  # (older files: whole passes only)
    if not is_number(epochs) or not epoch - 1 < epochs <= epoch + 1:
        raise _bad_field(path, "epochs", f"{meta.get('epochs')!r} is not the epochs trained "
                         f"in {epoch} passes")
    require_fields(path, meta, ("arch",))
    arch = _architecture(path, decoded)  # the shapes: any variant has the same
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
    optimizer = {k[6:]: v for k, v in tensors.items() if k.startswith("optim.")}
    check_params(path, arch, params)
    _check_optimizer_tensors(path, arch, optimizer)
    others = sorted(set(tensors) - {f"param.{k}" for k in params} - {f"optim.{k}" for k in
                                                                       optimizer})
    if others:
        raise ModelFileError(f"{path} holds unexpected tensors ({', '.join(others)}); it is "
                             "damaged or was not written by lenet5.")
    return params, optimizer, decoded


def _check_optimizer_tensors(path: Path, arch: Architecture,
                             optimizer: dict[str, np.ndarray]) -> None:
    shapes = arch.param_shapes()
    slots = {slot for names in OPTIMIZER_SLOTS.values() for slot in names}
    for key, value in optimizer.items():
        slot, _, name = key.partition(".")
        if key == "steps":
            if value.shape != (1,) or value.dtype.kind not in "iu" or value[0] < 0:
                raise ModelFileError(f"{path} holds a bad optimizer step count 'steps' "
                                     f"({value.tolist()}); it is damaged: train again.")
        elif slot not in slots or name not in shapes:
            raise ModelFileError(f"{path} holds an unexpected optimizer tensor {key!r}; it was "
                                 f"not written for {arch.name} or is damaged.")
        elif value.shape != shapes[name] or not np.isfinite(value).all():
            raise ModelFileError(f"{path} holds a damaged optimizer tensor {key!r} (shape "
                                 f"{value.shape}, expected {shapes[name]}, or not finite); "
                                 "train again or restore it from a copy.")
