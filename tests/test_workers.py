"""`lenet5.workers`: a training step's parts in forked processes, the same numbers
as threads give, and every way a worker can end."""

import os
import resource
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from blas import blas_thread_counts
from threadpoolctl import threadpool_limits

from lenet5.arch import LENET5, init_params
from lenet5.errors import Lenet5Error
from lenet5.hparams import OptimizerSpec
from lenet5.numpy_engine import model
from lenet5.numpy_engine.model import NumpyEngine
from lenet5.threads import shared_empty
from lenet5.workers import PartWorker, can_fork

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes are forked (Linux)")


@pytest.fixture
def three_parts(monkeypatch):
    """Engines made now cut a batch into three parts, whatever the cores."""
    monkeypatch.setattr(model, "compute_workers", lambda: 3)


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def _engine(processes, optimizer="adam"):
    return NumpyEngine(LENET5, init_params(LENET5, 0), OptimizerSpec(optimizer),
                       processes=processes)


def _same_parameters(threads: NumpyEngine, processes: NumpyEngine) -> None:
    for name, p in threads.net.params.items():
        np.testing.assert_array_equal(processes.net.params[name], p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_and_wait(pid: int) -> None:
    """SIGKILL, and wait until the process is a zombie (its pipes closed), not reaped."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < deadline, f"process {pid} still running 10 s after SIGKILL"
        time.sleep(0.001)


def _pipes_held(pid: int) -> set[str]:
    """The pipes a process holds an end of, as /proc names them ("pipe:[inode]")."""
    links = (os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    return {link for link in links if link.startswith("pipe:")}


def _pipes(worker) -> set[str]:
    return {f"pipe:[{os.fstat(fd).st_ino}]" for fd in (worker.requests, worker.replies)}


def _sums(index, rows, batch_size):
    if batch_size < 0:
        raise ValueError("a negative batch")
    return float(rows.sum() * batch_size + index), len(rows)


def test_a_worker_computes_each_part_it_is_given():
    worker = PartWorker(3, _sums, [])
    try:
        for rows in (np.arange(5), np.array([], np.int64), np.arange(20_000)):  # > a pipe's
            worker.start(rows, 2)
            assert worker.finish() == (float(rows.sum() * 2 + 3), len(rows))
        worker.start(np.arange(2), -1)
        with pytest.raises(Lenet5Error, match=r"failed in a training step \(ValueError: a "
                           r"negative batch\); set OPENBLAS_NUM_THREADS=1"):
            worker.finish()
        worker.start(np.arange(2), 1)  # it goes on after an error
        assert worker.finish() == (4.0, 2)
    finally:
        worker.stop()


@pytest.mark.parametrize("when", ["before start", "after start"])
def test_a_worker_that_died_is_one_sentence(when):
    worker = PartWorker(0, _sums, [])
    pid = worker.pid
    if when == "after start":
        worker.start(np.arange(5), 1)
        worker.finish()
        _kill_and_wait(pid)
        with pytest.raises(Lenet5Error, match=rf"process {pid} ended \(killed by signal 9\)"):
            worker.finish()
    else:
        _kill_and_wait(pid)
        with pytest.raises(Lenet5Error, match=rf"process {pid} ended \(killed by signal 9\)"):
            worker.start(np.arange(5), 1)
    assert not _alive(pid)  # reaped
    worker.stop()


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "sdlm"])
def test_processes_train_as_threads_do_to_the_last_bit(three_parts, optimizer):
    x, y = _data()
    engines = []
    for processes in (False, True):
        engine = _engine(processes, optimizer)
        engine.bind_training_data(x, y)
        if optimizer == "sdlm":
            engine.estimate_curvature(np.arange(100))
        for step in range(3):
            engine.train_step(np.arange(step * 100, step * 100 + 100), 1e-3)
        engines.append(engine)
    threads, processes = engines
    assert len(processes._forked.workers) == 2 and not threads._forked.workers
    _same_parameters(threads, processes)
    assert processes.take_train_metrics() == threads.take_train_metrics()


def test_a_part_too_small_to_split_needs_no_worker(three_parts):
    x, y = _data()
    engine = _engine(True)
    engine.bind_training_data(x, y)
    engine.train_step(np.arange(40), 1e-3)  # one part: fewer than 2 x 32 images
    assert not engine._forked.workers
    engine.train_step(np.arange(64), 1e-3)  # two parts: one worker
    assert len(engine._forked.workers) == 1


def test_a_rebinding_forks_workers_that_read_the_new_images(three_parts):
    """A private array rewritten in place and bound again: workers forked before it read the
    old images, so binding replaces them."""
    engines = []
    for processes in (False, True):
        x, y = _data()
        engine = _engine(processes)
        engine.bind_training_data(x, y)
        engine.train_step(np.arange(100), 1e-3)
        before = [w.pid for w in engine._forked.workers]
        x[...] = _data(seed=1)[0]
        engine.bind_training_data(x, y)
        assert not engine._forked.workers and not any(_alive(pid) for pid in before)
        engine.train_step(np.arange(100), 1e-3)
        engines.append(engine)
    _same_parameters(*engines)


def test_a_killed_worker_is_one_sentence_and_the_next_step_forks_a_new_one(three_parts):
    x, y = _data()
    engine = _engine(True)
    engine.bind_training_data(x, y)
    engine.train_step(np.arange(100), 1e-3)
    killed = engine._forked.workers[0].pid
    os.kill(killed, signal.SIGKILL)
    with pytest.raises(Lenet5Error, match=rf"worker process {killed} ended \(killed by signal "
                       rf"{int(signal.SIGKILL)}\).*`lenet5 train --resume RUN_DIR`.*"
                       "OPENBLAS_NUM_THREADS=1"):
        engine.train_step(np.arange(100), 1e-3)
    assert not engine._forked.workers  # all stopped: where each was in the step is unknown
    engine.train_step(np.arange(100), 1e-3)
    assert [w.pid != killed for w in engine._forked.workers] == [True, True]


def test_a_worker_s_error_is_raised_by_the_engine(three_parts):
    x, y = _data()
    engine = _engine(True)
    engine.bind_training_data(x, y)
    rows = np.arange(100)
    rows[-1] = 10_000  # in the last part, a worker's
    with pytest.raises(Lenet5Error, match="worker process failed in a training step "
                       r"\(IndexError: index 10000 is out of bounds"):
        engine.train_step(rows, 1e-3)


def test_an_interrupted_step_stops_the_workers(three_parts, monkeypatch):
    x, y = _data()
    engine = _engine(True)
    engine.bind_training_data(x, y)
    engine.train_step(np.arange(100), 1e-3)
    pids = [w.pid for w in engine._forked.workers]

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "train_part", interrupted)  # the engine's own part
    with pytest.raises(KeyboardInterrupt):
        engine.train_step(np.arange(100), 1e-3)
    assert not engine._forked.workers and not any(_alive(pid) for pid in pids)


def test_workers_end_with_their_engine(three_parts):
    x, y = _data()
    engine = _engine(True)
    engine.bind_training_data(x, y)
    engine.train_step(np.arange(100), 1e-3)
    pids = [w.pid for w in engine._forked.workers]
    assert all(_alive(pid) for pid in pids)
    del engine  # no cycle keeps it: its workers end now, not at the next garbage collection
    assert not any(_alive(pid) for pid in pids)  # ended and reaped: no zombies left


def test_workers_hold_no_other_worker_s_pipes(three_parts):
    """Each worker holds only its own two pipe ends, not its siblings' nor another engine's,
    so each sees its own pipe close when its engine closes it."""
    x, y = _data()
    engines = [_engine(True), _engine(True)]
    for engine in engines:
        engine.bind_training_data(x, y)
        engine.train_step(np.arange(100), 1e-3)
    workers = [w for engine in engines for w in engine._forked.workers]
    every_pipe = set().union(*map(_pipes, workers))
    assert len(workers) == 4 and len(every_pipe) == 8
    for worker in workers:
        assert _pipes_held(worker.pid) & every_pipe == _pipes(worker)


def test_the_engine_computes_on_one_blas_thread_while_it_has_workers(three_parts):
    """OpenBLAS stops its threads at a fork and starts them again (each spinning for work) when
    its thread count is raised: the engine keeps it at one while it has workers."""
    x, y = _data()
    with threadpool_limits(2, user_api="blas"):
        engine = _engine(True)
        engine.bind_training_data(x, y)
        engine.train_step(np.arange(100), 1e-3)
        engine.train_step(np.arange(100), 1e-3)
        assert blas_thread_counts() == {1}
        engine.bind_training_data(x.copy(), y)  # new arrays: the workers stop
        assert blas_thread_counts() == {2}
        engine.train_step(np.arange(100), 1e-3)
        assert blas_thread_counts() == {1}
        del engine
        assert blas_thread_counts() == {2}


def test_rebinding_the_same_shared_arrays_keeps_the_workers(three_parts):
    """Workers read shared arrays as they are now: rebinding the ones they have (an epoch's
    new inputs written over the last) needs no new fork, and they see the new images."""
    engines = []
    for processes in (False, True):
        rng = np.random.default_rng(0)
        x = shared_empty((300, 1, 32, 32), np.float32)
        y = shared_empty((300,), np.int64)
        x[...], y[...] = _data()
        engine = _engine(processes)
        engine.bind_training_data(x, y)
        engine.train_step(np.arange(100), 1e-3)
        pids = [w.pid for w in engine._forked.workers]
        x[...] = rng.normal(size=x.shape)  # the next epoch's inputs, in place
        engine.bind_training_data(x, y)
        assert [w.pid for w in engine._forked.workers] == pids
        engine.train_step(np.arange(100), 1e-3)
        other_labels = shared_empty(y.shape, y.dtype)  # other arrays: other workers
        other_labels[...] = rng.integers(0, 10, len(y))
        engine.bind_training_data(x, other_labels)
        assert not engine._forked.workers and not any(_alive(pid) for pid in pids)
        engine.train_step(np.arange(100), 1e-3)
        engines.append(engine)
    _same_parameters(*engines)


def test_workers_read_their_pipes_above_descriptor_1023():
    """A long-lived process (a server, a notebook) may hold many files: ``select`` cannot
    wait on descriptors above 1023, ``poll`` can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip("cannot open 1,100 files here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1050)]
    try:
        worker = PartWorker(0, _sums, [])
        assert min(worker.requests, worker.replies) > 1023
        worker.start(np.arange(4), 1)
        assert worker.finish() == (6.0, 4)
        worker.stop()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_two_engines_hold_one_blas_thread_until_both_stop(three_parts):
    """Holds overlap in any order: BLAS stays on one thread while either engine has workers."""
    x, y = _data()
    with threadpool_limits(2, user_api="blas"):
        first, second = _engine(True), _engine(True)
        for engine in (first, second):
            engine.bind_training_data(x, y)
            engine.train_step(np.arange(100), 1e-3)
        del engine, first  # the first holder goes first
        assert blas_thread_counts() == {1}
        second.train_step(np.arange(100), 1e-3)
        del second
        assert blas_thread_counts() == {2}
