"""How many threads BLAS may use, for the engines and the server, and NumPy work spread over
the cores (a NumPy engine's batch in parts, pictures in blocks; arrays that processes forked
to share that work read).

A user who sets a thread count in the environment keeps it: lenet5 then changes nothing.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

# Where users set BLAS/OpenMP thread counts; where any is set, lenet5 leaves threads alone.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Images per worker thread, at least: a batch smaller than twice this is computed in one
# piece, the same way on any machine (smaller parts would also spend the cores on overheads).
MIN_PART_IMAGES = 32
# Training steps on fewer images than this, which are one piece, run on one BLAS thread (see
# blas_threads_for).
ONE_BLAS_THREAD_BELOW = 2 * MIN_PART_IMAGES
T = TypeVar("T")


def user_set_threads() -> bool:
    """Whether the environment names a thread count (then it is the user's choice)."""
    return bool(set(THREAD_VARIABLES) & set(os.environ))


@functools.cache
def _blas_threads() -> ThreadpoolController | None:
    """threadpoolctl's view of the BLAS libraries loaded, or None where the user chose."""
    return None if user_set_threads() else ThreadpoolController()


def one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS on one thread inside the block (unless the user set the thread count), so that
    what is computed there does not depend on the machine's core count: OpenBLAS splits a
    GEMM differently on more threads, and the last bits of float32 results change, which
    20 passes of the 1998 network amplify into a different run."""
    controller = _blas_threads()
    if controller is None or _HOLD.count:  # the user's choice, or one thread already
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


class _Hold:
    """The process's hold of one BLAS thread: how many holders, the workers ``compute_workers``
    answered before the first, and the limit to lift after the last."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # a finalizer may stop workers inside a hold's update
        self.count = 0
        self.workers = 1
        self.limiter: contextlib.AbstractContextManager | None = None


_HOLD = _Hold()


@contextlib.contextmanager
def hold_one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for the whole block, for processes forked inside it: OpenBLAS stops
    its threads at every fork and starts them again at the next change of its thread count,
    each then spinning for work for about 0.1 s on a core the processes need (the first dozen
    training steps after a fork took twice as long). Inside, ``one_blas_thread`` changes
    nothing, ``compute_workers`` answers what it did before, and forked processes inherit the
    one thread without setting it. Holds may overlap in any order (two engines' workers): the
    first sets one thread, the last lifts it, unless someone else changed it meanwhile."""
    with _HOLD.lock:
        if not _HOLD.count:
            _HOLD.workers = compute_workers()
            _HOLD.limiter = one_blas_thread()
            _HOLD.limiter.__enter__()
        _HOLD.count += 1
    try:
        yield
    finally:
        with _HOLD.lock:
            _HOLD.count -= 1
            if not _HOLD.count and _HOLD.limiter is not None:
                limiter, _HOLD.limiter = _HOLD.limiter, None
                if _blas_counts() == {1}:  # ours still: lift it
                    limiter.__exit__(None, None, None)


def _blas_counts() -> set[int]:
    controller = _blas_threads()
    return set() if controller is None else {
        lib["num_threads"] for lib in controller.select(user_api="blas").info()}


def blas_threads_for(batch_size: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for a training step on fewer than ONE_BLAS_THREAD_BELOW images, all
    of them for larger ones: the second core buys nothing measurable on a small step, so
    small-batch runs (the 1998 network's default) give the same result on any number of
    cores for free (measurements: benchmarks/README.md)."""
    return one_blas_thread() if batch_size < ONE_BLAS_THREAD_BELOW else contextlib.nullcontext()


def compute_workers() -> int:
    """How many threads NumPy work may be split over (a NumPy engine's batch, each part
    running BLAS on one thread; blocks of pictures): as many as BLAS would use now (one per
    core, or fewer where a caller limited it, as `lenet5 sweep` does for each of its runs);
    one where the user set a thread count."""
    if _blas_threads() is None:
        return 1
    if _HOLD.count:
        return _HOLD.workers
    return max(1, min(_blas_counts(), default=1))


def run_parts(pool: Executor, parts: list[slice], compute: Callable[[int, slice], T]
              ) -> list[T]:
    """``compute(i, parts[i])`` for every part, the first on this thread and the others on
    the pool's at the same time; the results in order, every thread done even when one
    raised. Each part runs in a copy of this thread's context: NumPy's error state
    (`np.errstate`, a context variable since NumPy 2) holds in the pool's threads too."""
    futures = [pool.submit(contextvars.copy_context().run, compute, i, part)
               for i, part in enumerate(parts[1:], 1)]
    try:
        first = compute(0, parts[0])
    finally:
        rest = [future.result() for future in futures]
    return [first, *rest]


def part_slices(n: int, workers: int) -> list[slice]:
    """range(n) cut into at most ``workers`` contiguous, near-equal parts of at least
    MIN_PART_IMAGES each (one part when n is smaller): how an engine splits a batch over its
    worker threads."""
    parts = max(1, min(workers, n // MIN_PART_IMAGES))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def over_blocks(n: int, block: int, compute: Callable[..., object],
                draw: Callable[[slice], tuple] = lambda part: ()) -> None:
    """``compute(part, *draw(part))`` for every run ``part`` of ``block`` consecutive items of
    range(n), on ``compute_workers`` threads at once. ``draw`` runs on this thread, one part
    after another in order: where random numbers are drawn, so that their stream, and so the
    result, is the same on any number of cores. Each ``compute`` writes only its own part of
    an output. At most two parts per thread wait at a time, so what ``draw`` makes for all
    of them need not fit in memory at once. NumPy releases the GIL in its array operations,
    so parts of a few hundred pictures keep every core busy."""
    parts = [slice(start, min(start + block, n)) for start in range(0, n, block)]
    workers = min(compute_workers(), len(parts))
    if workers <= 1:
        for part in parts:
            compute(part, *draw(part))
        return
    with one_blas_thread(), ThreadPoolExecutor(workers) as pool:  # BLAS: one core each
        waiting: collections.deque[Future] = collections.deque()
        for part in parts:
            if len(waiting) >= 2 * workers:
                waiting.popleft().result()
            waiting.append(pool.submit(compute, part, *draw(part)))
        for future in waiting:
            future.result()


def shared_empty(shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """An uninitialised array in an anonymous shared mapping: processes forked from this one
    read what it writes there, whenever it writes it, and its writes never make the kernel
    copy a page, as writing a private array does while a forked process still maps it."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(1, count * dtype.itemsize))  # zero bytes is not a mapping
    array = np.frombuffer(buffer, dtype, count).reshape(shape)
    _SHARED[id(array)] = array
    return array


def shared_copy(array: np.ndarray, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """A copy of ``array`` (as ``dtype``, its own by default) made by ``shared_empty``."""
    copy = shared_empty(np.shape(array), dtype or np.asarray(array).dtype)
    copy[...] = array
    return copy


def is_shared(array: np.ndarray) -> bool:
    """Whether ``array`` is one that ``shared_empty`` made (not a view of one)."""
    return _SHARED.get(id(array)) is array


# shared_empty's arrays, while they live, by id (arrays are not hashable)
_SHARED: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
