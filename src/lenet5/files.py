"""The files lenet5 writes and reads back: atomic writes, and a run directory's contents.

A run directory (``lenet5 train --out``) holds MODEL_FILE, STATE_FILE (what ``--resume``
needs), CONFIG_FILE (the settings it was started with) and METRICS_FILE (one JSON line per
finished epoch). Every write goes to a temporary file first and is renamed into place, so a
full disk or a killed process never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import Lenet5Error

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RUNS_DIR = Path("runs")  # where runs go by default, and where `serve` looks for one


@contextlib.contextmanager
def atomic_file(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A new file to write, which takes ``path``'s place only when the block ends without an
    error (flushed to disk first); otherwise it is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; models, runs and data are meant to be shared
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_file``), creating its folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            f.write(data)
    except OSError as exc:
        raise Lenet5Error(f"could not write {path}: {exc.strerror or exc}; free some disk space "
                          "or choose another --out, then run again (use --resume to continue "
                          "a training run from its last finished epoch).") from None


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    write_atomic(Path(run_dir) / METRICS_FILE,
                 "".join(json.dumps(row) + "\n" for row in rows).encode())


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-epoch rows of a run's metrics file."""
    path = Path(run_dir) / METRICS_FILE
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        raise Lenet5Error(f"cannot read {path}; pass a run directory made by `lenet5 train`.")\
            from None


def read_config(run_dir: str | Path, needed_by: str) -> dict:
    """The settings a run was started with; ``needed_by`` names the flag or command that
    needs them, for the error message."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise Lenet5Error(f"cannot read {path}; {needed_by} needs a run directory made by "
                          "`lenet5 train`.") from None


def newest_run(runs: Path = RUNS_DIR) -> Path | None:
    """The run directory under ``runs`` whose model file was written last, if any."""
    models = sorted(runs.glob(f"*/{MODEL_FILE}"), key=lambda p: p.stat().st_mtime)
    return models[-1].parent if models else None
