"""`lenet5.threads`: small training steps run on one BLAS thread unless the user chose; work
spread over threads; arrays shared with forked processes."""

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from blas import blas_thread_counts
from threadpoolctl import threadpool_limits

from lenet5 import threads
from lenet5.threads import THREAD_VARIABLES


def test_small_training_steps_run_on_one_blas_thread(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    threads._blas_threads.cache_clear()
    with threadpool_limits(2, user_api="blas"):  # as on a 2-core machine, whatever this one is
        if blas_thread_counts() != {2}:
            pytest.skip("this BLAS cannot run two threads")
        with threads.blas_threads_for(16):
            assert blas_thread_counts() == {1}
        assert blas_thread_counts() == {2}  # restored after the step
        with threads.blas_threads_for(threads.ONE_BLAS_THREAD_BELOW):
            assert blas_thread_counts() == {2}
        with threads.one_blas_thread():  # SDLM's curvature pass, whatever the batch size
            assert blas_thread_counts() == {1}
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # the user's own choice wins
        threads._blas_threads.cache_clear()
        with threads.blas_threads_for(16):
            assert blas_thread_counts() == {2}
    threads._blas_threads.cache_clear()


@pytest.fixture
def two_blas_threads(monkeypatch):
    """BLAS on two threads, no thread count in the environment (lenet5 then chooses)."""
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    threads._blas_threads.cache_clear()
    with threadpool_limits(2, user_api="blas"):
        if blas_thread_counts() != {2}:
            pytest.skip("this BLAS cannot run two threads")
        yield
    threads._blas_threads.cache_clear()


def test_compute_workers_follow_blas_threads_unless_the_user_chose(two_blas_threads,
                                                                   monkeypatch):
    assert threads.compute_workers() == 2
    with threadpool_limits(1, user_api="blas"):  # as `lenet5 sweep` runs each run
        assert threads.compute_workers() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice: BLAS threads only
    threads._blas_threads.cache_clear()
    assert threads.compute_workers() == 1


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in /proc")
def test_a_held_blas_thread_survives_a_fork_without_restarting_blas(two_blas_threads):
    """After a fork OpenBLAS has stopped its threads, and any change of its thread count starts
    them again (each spinning for work): inside the hold nothing changes it."""
    with threads.hold_one_blas_thread():
        assert blas_thread_counts() == {1} and threads.compute_workers() == 2
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        running = len(list(Path("/proc/self/task").iterdir()))
        with threads.one_blas_thread():
            assert len(list(Path("/proc/self/task").iterdir())) == running
        assert blas_thread_counts() == {1}
    assert blas_thread_counts() == {2}


def test_run_parts_keeps_the_order_and_waits_for_every_part():
    from concurrent.futures import ThreadPoolExecutor

    from lenet5.threads import run_parts

    parts = threads.part_slices(256, 4)
    done = []
    with ThreadPoolExecutor(3) as pool:
        assert run_parts(pool, parts, lambda i, part: (i, part.start)) == [
            (i, part.start) for i, part in enumerate(parts)]

        def first_fails(i, part):
            if i == 0:
                raise ValueError("part 0")
            done.append(i)

        with pytest.raises(ValueError, match="part 0"):
            run_parts(pool, parts, first_fails)
    assert sorted(done) == [1, 2, 3]


def test_run_parts_hold_the_caller_s_numpy_error_state():
    """A training step's overflow, silenced where it is reported instead, stays silent in
    every part."""
    from concurrent.futures import ThreadPoolExecutor

    from lenet5.threads import run_parts

    with ThreadPoolExecutor(2) as pool, np.errstate(over="ignore"):
        assert run_parts(pool, threads.part_slices(256, 3),
                         lambda i, part: np.geterr()["over"]) == ["ignore"] * 3


def test_over_blocks_computes_every_block_once_on_any_number_of_threads(compute_threads):
    for workers in (1, 2):
        with compute_threads(workers):
            seen = []
            threads.over_blocks(1000, 256, seen.append)  # list.append is thread-safe
            assert sorted((part.start, part.stop) for part in seen) == [
                (0, 256), (256, 512), (512, 768), (768, 1000)]
            seen.clear()
            threads.over_blocks(0, 256, seen.append)
            assert seen == []


def test_over_blocks_draws_on_the_calling_thread_in_order(compute_threads):
    """What ``draw`` makes for a part (random numbers, in the stream's order) reaches that
    part's ``compute``, whichever thread runs it."""
    drawn, got = [], []

    def draw(part):
        drawn.append(part.start)
        return part.start, threading.get_ident()

    with compute_threads(2):
        threads.over_blocks(1000, 100, lambda part, *made: got.append((part.start, *made)),
                            draw)
    assert drawn == list(range(0, 1000, 100))
    assert sorted(got) == [(start, start, threading.get_ident()) for start in drawn]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_shared_arrays_are_seen_across_a_fork_both_ways():
    shared = threads.shared_empty((2, 3), np.float32)
    shared[...] = 1
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: sees the parent's later write, then writes its own
        try:
            os.read(ready_r, 1)
            shared[1] = shared[0] + 1
        finally:
            os._exit(0)
    shared[0] = 5  # after the fork
    os.write(ready_w, b"x")
    os.waitpid(pid, 0)
    np.testing.assert_array_equal(shared, [[5, 5, 5], [6, 6, 6]])
    assert threads.shared_empty((0, 4), np.int64).shape == (0, 4)
    copy = threads.shared_copy(np.arange(6).reshape(2, 3), np.float32)
    assert threads.is_shared(copy) and copy.dtype == np.float32
    np.testing.assert_array_equal(copy, [[0, 1, 2], [3, 4, 5]])
    assert not threads.is_shared(copy[1:]) and threads.shared_copy(copy[1:]).dtype == np.float32
