"""A training step's parts in forked worker processes, where the system can fork (Linux).

Two threads computing two parts of a NumPy engine's step wait for each other at every hand-over
of Python's GIL between NumPy calls: a part takes about 1.18x as long beside another thread
as alone. Processes have a GIL each. A worker is forked from the engine and computes its part
of every step on the engine's own parameters, which the engine keeps in shared memory, so
that the optimizer's in-place updates reach it; it writes its gradients into shared memory
the engine gave it and sends back its loss through a pipe, which also carries the rows of
each part. It reads the training images as they were at the fork, or, where they lie in
shared memory (``threads.shared_empty``), as they are: an engine stops its workers whenever
it is given new images. Nothing here knows an engine; the torch engine, measured with the
same workers, gained nothing (a torch part ran slower in a worker), and keeps its threads
(measurements: benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import sys
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from .errors import Lenet5Error

REQUEST = struct.Struct("qq")  # the whole batch's size, the rows in this part (then the rows)
REPLY = struct.Struct("dqq")  # loss summed over the part, images right, error text's length
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

    def __init__(self, index: int, compute: Compute,
                 single_threaded: Callable[[], contextlib.AbstractContextManager],
                 inherited: list[int]):
        """``inherited``: the engine's ends of other workers' pipes, which the new process
        closes, so that each worker sees its own pipe close when the engine closes it."""
        requests_in, self.requests = os.pipe()
        self.replies, replies_out = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the worker: it never returns from here
            status = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
                for fd in (self.requests, self.replies, *inherited):
                    os.close(fd)
                with single_threaded():
                    _serve(index, compute, requests_in, replies_out)
                status = 0
            finally:
                os._exit(status)  # no atexit handlers, no flushing the engine's buffers
        os.close(requests_in)
        os.close(replies_out)

    def start(self, rows: np.ndarray, batch_size: int) -> None:
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
                              f"({error}); set OPENBLAS_NUM_THREADS=1 to train in one process, "
                              "which shows where.")
        return loss, correct

    def _ended(self) -> Lenet5Error:
        """What to tell the user when the process has ended (its pipe closed), reaping it."""
        pid, (_, status) = self.pid, os.waitpid(self.pid, 0)
        self.pid = 0  # reaped
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return Lenet5Error(f"the training worker process {pid} ended ({how}) during a training "
                           "step; go on from the last finished epoch with `lenet5 train "
                           "--resume RUN_DIR`, or set OPENBLAS_NUM_THREADS=1 to train in one "
                           "process without workers.")

    def stop(self) -> None:
        """End the process now, wherever it is, and reap it."""
        for fd in (self.requests, self.replies):
            os.close(fd)
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0


class ForkedParts:
    """An engine's workers: the parts of a step after the first, one per worker, forked at the
    first step that needs them and stopped by ``stop`` or with the engine."""

    def __init__(self, owner: object, compute: Compute,
                 single_threaded: Callable[[], contextlib.AbstractContextManager]):
        self.compute, self.single_threaded = compute, single_threaded
        self.workers: list[PartWorker] = []
        weakref.finalize(owner, _stop_all, self.workers)

    def run(self, batch: np.ndarray, parts: list[slice], first: Callable[[slice], T]
            ) -> tuple[T, list[tuple[float, int]]]:
        """``first(parts[0])`` here while worker i - 1 computes ``parts[i]`` of ``batch``;
        its result and the workers' (loss sum, images right), in order."""
        try:
            while len(self.workers) < len(parts) - 1:
                inherited = [fd for w in self.workers for fd in (w.requests, w.replies)]
                self.workers.append(PartWorker(len(self.workers), self.compute,
                                               self.single_threaded, inherited))
            busy = self.workers[:len(parts) - 1]
            for worker, part in zip(busy, parts[1:], strict=True):
                worker.start(batch[part], len(batch))
            result = first(parts[0])
            return result, [worker.finish() for worker in busy]
        except BaseException:  # the workers' places in the step are unknown: new ones next
            self.stop()
            raise

    def stop(self) -> None:
        _stop_all(self.workers)


def _stop_all(workers: list[PartWorker]) -> None:
    while workers:
        workers.pop().stop()


def _serve(index: int, compute: Compute, requests: int, replies: int) -> None:
    """Compute parts until the engine closes the pipe."""
    while (header := _read(requests, REQUEST.size)) is not None:
        batch_size, count = REQUEST.unpack(header)
        rows = np.frombuffer(bytearray(_read(requests, 8 * count) or b""), np.int64)  # (count,)
        try:
            loss, correct = compute(index, rows, batch_size)
            error = b""
        except Exception as exc:  # the engine raises it
            loss, correct, error = 0.0, 0, f"{type(exc).__name__}: {exc}".encode()
        _write(replies, REPLY.pack(loss, correct, len(error)) + error)


def _read(fd: int, size: int) -> bytes | None:
    """Exactly ``size`` bytes from a pipe, or None where it closed first."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
