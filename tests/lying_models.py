"""Model files whose metadata lies (issue 17): one way to rewrite a file's metadata, and the
lies the tests, and `benchmarks/replay_issue17_runs.py`, tell with it."""

from __future__ import annotations

import json
from pathlib import Path

NORM = {"kind": "mean_std", "pad": 2, "mean": 0.13, "std": 0.31}
LIES = {
    "std 0": ("input_normalization", json.dumps({**NORM, "std": 0})),
    "pad 5": ("input_normalization", json.dumps({**NORM, "pad": 5})),
    "empty": ("input_normalization", "{}"),
    "not JSON": ("input_normalization", "mean 0.13, std 0.31"),
    "string mean": ("input_normalization", json.dumps({**NORM, "mean": "0.13"})),
    "unknown kind": ("input_normalization", json.dumps({**NORM, "kind": "zca"})),
    "NaN std": ("input_normalization", json.dumps({**NORM, "std": float("nan")})),
    "1998 ink = background": ("input_normalization", json.dumps(
        {"kind": "lecun_1998", "pad": 2, "background": 1.0, "ink": 1.0})),
    "classes 5": ("classes", "5"),
    "3 classes": ("classes", json.dumps(["0", "1", "2"])),
    "numbers as classes": ("classes", json.dumps(list(range(10)))),
    "arch a list": ("arch", json.dumps(["lenet5"])),
    "arch a number": ("arch", "5"),
}
"""Each lie: (metadata field, the raw string stored in its place)."""
ISSUE_LIES = ("std 0", "pad 5", "empty", "not JSON", "string mean", "classes 5", "3 classes")
"""The lies issue 17 found tracebacks for."""


def rewrite_metadata(path: Path | str, **changes: str | None) -> None:
    """Re-save the safetensors file ``path`` with metadata fields replaced (raw strings, as
    safetensors stores them); a value None removes the field. The tensors, and with them the
    weights' checksum, stay as they were; the metadata's checksum is made again, as a tool
    that writes such a file would: what is tested is the schema."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from lenet5.checkpoint import METADATA_CHECKSUM, metadata_sha256

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    if METADATA_CHECKSUM in meta:
        meta[METADATA_CHECKSUM] = metadata_sha256(meta)
    save_file(tensors, str(path), metadata=meta)
