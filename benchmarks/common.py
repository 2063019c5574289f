"""What every benchmark needs: the machine its figures came from, and its results file.

Speed and the exact numbers of a seeded run depend on the CPU kind (AVX-512 or not) and on
the kernels OpenBLAS picks for it (`OPENBLAS_CORETYPE` can force them), so every results
file names both.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_kind() -> str:
    """'AVX-512', 'AVX2' or 'no AVX2' from the CPU's flags (Linux), else the architecture."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.machine()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def blas_kernels() -> str:
    """The BLAS numpy uses (scipy may load its own too) and the kernels it picked, e.g.
    'openblas 0.3.31 SkylakeX kernels'."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl reports)
    from threadpoolctl import threadpool_info

    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas:
        return "no BLAS found"
    lib = min(blas, key=lambda lib: "numpy" not in lib["filepath"])  # numpy's, if it is there
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return (f"{lib['internal_api']} {lib['version']} {lib.get('architecture') or '?'} kernels"
            + (f" (OPENBLAS_CORETYPE={forced})" if forced else ""))


def machine() -> str:
    """One line naming everything a timing or a seeded result depends on."""
    import numpy

    return (f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores, {cpu_kind()}; "
            f"{blas_kernels()}; Python {platform.python_version()}, numpy {numpy.__version__}; "
            f"{time.strftime('%Y-%m-%d')}")


@contextlib.contextmanager
def picture_folder(keep: str | None, prefix: str) -> Iterator[Path]:
    """Where a benchmark writes the pictures it reads: `keep` (--keep, left there), or a
    temporary folder removed afterwards (thousands of files a run)."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield Path(scratch)


def write_results(path: Path, text: str) -> None:
    """Write a benchmark's results file (creating its folder) and show it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)


def child_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a timed child process: lenet5 importable from this checkout, and
    OMP_NUM_THREADS where ``threads`` is given."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    return env


def time_tutorial(device: str, epochs: int, threads: int | None = None) -> dict:
    """The tutorials' loop (benchmarks/tutorial_loop.py) in a fresh process: its JSON."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tutorial_loop.py"),
                           "--epochs", str(epochs), "--device", device, "--json"],
                          check=True, env=child_env(threads), capture_output=True, text=True)
    return json.loads(done.stdout)
