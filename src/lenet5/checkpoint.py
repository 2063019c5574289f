"""Model and training-state files: safetensors (never pickle), validated on every load.

A model file holds the trainable parameters under ``lenet5.arch``'s names plus metadata:
``format`` (always ``lenet5-model``, the magic), ``format_version``, ``arch``, ``dataset``,
``classes`` and ``input_normalization`` (JSON), and facts about the run. Files are written
atomically (``files.write_atomic``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from . import pretrained
from .arch import ARCHITECTURES, arch_of, get_arch
from .errors import Lenet5Error, ModelFileError
from .files import MODEL_FILE, write_atomic

MAGIC = "lenet5-model"
STATE_MAGIC = "lenet5-training-state"
FORMAT_VERSION = 1


def encode_metadata(meta: dict) -> dict[str, str]:
    """Metadata values as safetensors stores them: strings as they are, the rest as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def save_model(path: Path, params: dict[str, np.ndarray], metadata: dict) -> None:
    meta = {"format": MAGIC, "format_version": str(FORMAT_VERSION), **encode_metadata(metadata)}
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}
    write_atomic(Path(path), save(tensors, metadata=meta))


def resolve_model_path(path: str | Path) -> Path:
    """A model file, a run directory holding ``model.safetensors``, or the name ``pretrained``
    (the model shipped with lenet5; ``./pretrained`` is a path)."""
    if str(path) == pretrained.NAME:
        return pretrained.path()
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise ModelFileError(f"no model at {path}; pass a {MODEL_FILE} file, a run directory "
                             f"made by `lenet5 train`, or {pretrained.NAME}.")
    return p


def _read(path: Path, magic: str, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable {what} ({exc}); it may be truncated or "
                             "corrupt: train again or restore it from a copy.") from None
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
                             f"reads ({FORMAT_VERSION}); upgrade lenet5 (pip install -U lenet5).")
    return tensors, meta


def _check_params(path: Path, arch_name: str, tensors: dict[str, np.ndarray]) -> None:
    if arch_name not in ARCHITECTURES:
        raise ModelFileError(f"{path} holds an unknown architecture {arch_name!r}; this lenet5 "
                             f"knows {', '.join(ARCHITECTURES)} — upgrade lenet5.")
    expected = get_arch(arch_name).param_shapes()
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        detail = "; ".join(f"{label}: {', '.join(names)}" for label, names in
                           (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
                           if names)
        raise ModelFileError(f"{path} does not hold {arch_name} weights ({detail}); it was made "
                             "for another architecture or is damaged.")
    bad = [k for k, v in tensors.items() if not np.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path} holds NaN or infinite weights in {', '.join(bad)}; "
                             "retrain with a lower --lr.")


def load_model(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(parameters, metadata with JSON fields decoded); raises ModelFileError with a hint."""
    p = resolve_model_path(path)
    tensors, meta = _read(p, MAGIC, "model file")
    for key in ("arch", "classes", "input_normalization"):
        if key not in meta:
            raise ModelFileError(f"{p} lacks the metadata field {key!r}; it was not written by "
                                 "lenet5: train again.")
    _check_params(p, meta["arch"], tensors)
    decoded = decode_metadata(meta)
    try:
        arch_of(decoded)
    except Lenet5Error as exc:
        raise ModelFileError(f"{p} names a variant this lenet5 does not know ({exc}); upgrade "
                             "lenet5 or train again.") from None
    return tensors, decoded


def decode_metadata(meta: dict[str, str]) -> dict:
    """JSON fields back to values; plain strings (arch, dataset, ...) stay strings."""
    decoded = {}
    for k, v in meta.items():
        try:
            decoded[k] = json.loads(v)
        except ValueError:
            decoded[k] = v
    return decoded


def save_state(path: Path, params: dict[str, np.ndarray], optimizer: dict[str, np.ndarray],
               metadata: dict) -> None:
    """Everything needed to resume: parameters, optimizer state, epoch and run facts."""
    tensors = {f"param.{k}": np.ascontiguousarray(v) for k, v in params.items()}
    tensors.update({f"optim.{k}": np.ascontiguousarray(v) for k, v in optimizer.items()})
    meta = {"format": STATE_MAGIC, "format_version": str(FORMAT_VERSION),
            **encode_metadata(metadata)}
    write_atomic(Path(path), save(tensors, metadata=meta))


def load_state(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    tensors, meta = _read(Path(path), STATE_MAGIC, "training state file")
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
    optimizer = {k[6:]: v for k, v in tensors.items() if k.startswith("optim.")}
    return params, optimizer, decode_metadata(meta)
