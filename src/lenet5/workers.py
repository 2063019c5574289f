"""A training step's parts in forked worker processes, where the system can fork (Linux).

Two threads computing two parts of a NumPy engine's step wait for each other at every hand-over
of Python's GIL between NumPy calls: a part takes about 1.18x as long beside another thread
as alone. Processes have a GIL each. A worker is forked from the engine and computes its part
of every step on the engine's own parameters, which the engine keeps in shared memory, so
that the optimizer's in-place updates reach it; it writes its gradients into shared memory
the engine gave it and sends back its loss through a pipe, which also carries the rows of
each part. It reads the training images as they were at the fork, or, where they lie in
shared memory (``threads.shared_empty``), as they are now: an engine forks new workers when
it is given other arrays, or a private array again. Nothing here knows an engine; the torch
engine, measured
with the same workers, gained nothing (two torch parts at once take about 1.3x as long as one
alone, in threads or processes alike) and keeps its threads (measurements:
benchmarks/README.md).

The engine's process may have other threads when it forks (its inference pool, OpenBLAS's,
a progress bar's, torch's OpenMP pool where torch is loaded too; Python 3.12 and later warn
of it): a worker only runs NumPy on one thread, takes no lock those threads may hold, and
ends with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import struct
import sys
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from .errors import Lenet5Error

REQUEST = struct.Struct("qq")  # the whole batch's size, the rows in this part (then the rows)
REPLY = struct.Struct("dqq")  # loss summed over the part, images right, error text's length
SPIN = 0.001
"""Seconds a process polls a pipe before its read sleeps. A worker waits about 0.2 ms between
two parts (the engine's update), the engine about 0.1 ms for a worker's part, and waking a
sleeping process cost about as long again: polling made a step of 128 2-7% faster (40-step
blocks alternated, 14 pairs, four times, 2-core EPYC VM). The second core is idle meanwhile."""
IN_ONE_PROCESS = "set OPENBLAS_NUM_THREADS=1 to train in one process without workers"
"""The advice every error of a worker ends with."""
T = TypeVar("T")
# compute(worker index, rows, batch size) -> (loss summed over the rows, images right),
# having written the part's gradients where that worker's engine reads them
Compute = Callable[[int, np.ndarray, int], tuple[float, int]]


def can_fork() -> bool:
    """Whether worker processes can be forked here: Linux only; macOS's system libraries are
    not safe to use in a forked child."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class PartWorker:
    """One forked process that computes one part of each training step: ``start`` hands it
    its rows, ``finish`` waits for its loss, ``stop`` ends it."""

    def __init__(self, index: int, compute: Compute, workers: list[PartWorker]):
        """Fork the process and append this worker to ``workers`` at once, so that whoever
        stops that list stops it, whatever interrupts the engine next."""
        requests_in, self.requests = os.pipe()
        self.replies, replies_out = os.pipe()
        _ENGINE_ENDS.update((self.requests, self.replies))  # the worker closes them too
        try:
            self.pid = os.fork()
        except OSError as exc:
            _ENGINE_ENDS.difference_update((self.requests, self.replies))
            for fd in (requests_in, self.requests, self.replies, replies_out):
                os.close(fd)
            raise Lenet5Error(f"could not start a training worker process ({exc}); "
                              f"{IN_ONE_PROCESS}.") from None
        if self.pid == 0:  # the worker: it never returns from here
            _work(index, compute, requests_in, replies_out)
        workers.append(self)
        os.close(requests_in)
        os.close(replies_out)

    def start(self, rows: np.ndarray, batch_size: int) -> None:
        """Hand the worker its part of a step: the rows of a batch of ``batch_size``."""
        rows = np.ascontiguousarray(rows, np.int64)  # (count,)
        try:
            _write(self.requests, REQUEST.pack(batch_size, len(rows)) + rows.tobytes())
        except BrokenPipeError:
            raise self._ended() from None

    def finish(self) -> tuple[float, int]:
        """The part's (loss sum, images right); its gradients are where ``compute`` wrote
        them, valid until the next ``start``."""
        reply = _read(self.replies, REPLY.size)
        if reply is None:
            raise self._ended()
        loss, correct, length = REPLY.unpack(reply)
        if length:
            error = (_read(self.replies, length) or b"").decode(errors="replace")
            raise Lenet5Error(f"the training worker process failed in a training step "
                              f"({error}); {IN_ONE_PROCESS}, which shows where.")
        return loss, correct

    def _ended(self) -> Lenet5Error:
        """What to tell the user when the process has ended (its pipe closed), reaping it."""
        pid, (_, status) = self.pid, os.waitpid(self.pid, 0)
        self.pid = 0  # reaped
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return Lenet5Error(f"the training worker process {pid} ended ({how}) during a training "
                           "step; go on from the last finished epoch with `lenet5 train "
                           f"--resume RUN_DIR`, or {IN_ONE_PROCESS}.")

    def stop(self) -> None:
        """End the process now, wherever it is, and reap it."""
        for fd in (self.requests, self.replies):
            os.close(fd)
            _ENGINE_ENDS.discard(fd)
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0


class ForkedParts:
    """An engine's workers: the parts of a step after the first, one per worker, forked at the
    first step that needs them and stopped by ``stop`` or with the engine (``owner``). The
    engine's process is inside ``single_threaded`` from before the first fork until they
    stop, and the workers inherit it (``threads.hold_one_blas_thread``)."""

    def __init__(self, owner: object,
                 single_threaded: Callable[[], contextlib.AbstractContextManager]):
        self.single_threaded = single_threaded
        self.workers: list[PartWorker] = []
        self._held: contextlib.ExitStack | None = None  # single_threaded, while workers live
        weakref.finalize(owner, self.stop)  # self holds nothing of the owner's

    def run(self, batch: np.ndarray, parts: list[slice], first: Callable[[slice], T],
            compute: Compute) -> tuple[T, list[tuple[float, int]]]:
        """``first(parts[0])`` here while worker i - 1 computes ``parts[i]`` of ``batch``;
        its result and the workers' (loss sum, images right), in order. Workers forked now
        compute with ``compute`` (held by them, not here, so that an engine passing its own
        method is not kept alive by its workers)."""
        try:
            if self._held is None:
                self._held = contextlib.ExitStack()
                self._held.enter_context(self.single_threaded())
            while len(self.workers) < len(parts) - 1:
                PartWorker(len(self.workers), compute, self.workers)
            busy = self.workers[:len(parts) - 1]
            for worker, part in zip(busy, parts[1:], strict=True):
                worker.start(batch[part], len(batch))
            result = first(parts[0])
            return result, [worker.finish() for worker in busy]
        except BaseException:  # the workers' places in the step are unknown: new ones next
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the workers, and give the engine's process back its threads."""
        while self.workers:
            self.workers.pop().stop()
        if self._held is not None:
            self._held.close()
            self._held = None


# This process's ends of every worker's pipes, of every engine: a new worker closes them all,
# so that each worker sees its own pipe close when its engine closes it (or exits).
_ENGINE_ENDS: set[int] = set()


def _work(index: int, compute: Compute, requests: int, replies: int) -> None:
    """The worker process's life, from the fork to its exit: it never returns."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle;
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # SIGTERM ends the worker, whatever
        # handler `lenet5 train` gave the engine's process
        gc.freeze()  # the engine's objects: never traversed here, so their pages stay shared
        for fd in _ENGINE_ENDS:
            os.close(fd)
        _serve(index, compute, requests, replies)
        status = 0
    finally:
        os._exit(status)  # no atexit handlers, no flushing the engine's buffers


def _serve(index: int, compute: Compute, requests: int, replies: int) -> None:
    """Compute parts until the engine closes the pipe."""
    while (header := _read(requests, REQUEST.size)) is not None:
        batch_size, count = REQUEST.unpack(header)
        data = _read(requests, 8 * count)
        if data is None:  # closed in the middle of a request
            return
        rows = np.frombuffer(data, np.int64)  # (count,)
        try:
            loss, correct = compute(index, rows, batch_size)
            error = b""
        except Exception as exc:  # the engine raises it
            loss, correct, error = 0.0, 0, f"{type(exc).__name__}: {exc}".encode()
        _write(replies, REPLY.pack(loss, correct, len(error)) + error)


def _wait(fd: int) -> None:
    """Poll ``fd`` for up to SPIN seconds before a read blocks on it (``poll``, not
    ``select``: it takes descriptors above 1023, which a process with many files open gets)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.perf_counter() + SPIN
    while not poller.poll(0) and time.perf_counter() < deadline:
        pass


def _read(fd: int, size: int) -> bytearray | None:
    """Exactly ``size`` bytes from a pipe, or None where it closed first."""
    _wait(fd)
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if not n:
            return None
        got += n
    return data


def _write(fd: int, data: bytes) -> None:
    """All of ``data`` into a pipe (a large part's rows take several writes)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
