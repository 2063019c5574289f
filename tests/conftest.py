"""Shared fixtures: a tiny learnable dataset registered like MNIST, real MNIST on demand, and a
guard for tests of forked workers."""

from __future__ import annotations

import contextlib
import gc
import hashlib

import numpy as np
import pytest

from lenet5.data import DATASETS, write_idx
from lenet5.data import datasets as ds


def _synthetic_digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class k is a bright 6x6 square at one of ten fixed places, plus noise: learnable in
    a few steps, so loop tests run in seconds."""
    labels = rng.integers(0, 10, n).astype(np.uint8)  # (N,)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)  # (N, 28, 28)
    rows = 3 + (labels // 5) * 12  # (N,)
    cols = 2 + (labels % 5) * 5
    offsets = np.arange(6)
    r = rows[:, None, None] + offsets[None, :, None]  # (N, 6, 1)
    c = cols[:, None, None] + offsets[None, None, :]  # (N, 1, 6)
    images[np.arange(n)[:, None, None], r, c] = 255
    return images, labels


@pytest.fixture
def synthetic_dataset(tmp_path, monkeypatch) -> str:
    """Register dataset 'synthetic' (600 train, 200 test images) in a private cache."""
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    train_x, train_y = _synthetic_digits(600, rng)
    test_x, test_y = _synthetic_digits(200, rng)
    directory = tmp_path / "data" / "synthetic"
    directory.mkdir(parents=True)
    files = {}
    for name, array in ((ds.TRAIN_IMAGES, train_x), (ds.TRAIN_LABELS, train_y),
                        (ds.TEST_IMAGES, test_x), (ds.TEST_LABELS, test_y)):
        write_idx(directory / name, array)
        files[name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    info = ds.DatasetInfo(name="synthetic", files=files, classes=tuple("0123456789"),
                          n_train=600, n_test=200)
    monkeypatch.setitem(DATASETS, "synthetic", info)
    return "synthetic"


@pytest.fixture(scope="session")
def mnist():
    """The real, verified MNIST (fetched once into the user's cache if missing)."""
    from lenet5.data import load

    return load("mnist", log=lambda _: None)


@pytest.fixture(scope="session")
def mnist_test_digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test set as (images (10000, 28, 28) uint8, labels (10000,) uint8): real
    handwriting for the image-preprocessing tests."""
    return mnist.test_images, mnist.test_labels


@pytest.fixture(scope="session")
def trained_run(mnist, tmp_path_factory):
    """A run directory with a briefly trained model (5,000 MNIST images, 2 epochs of batch 32:
    95.5% on the test set, some 12 s of CPU), shared by every test that needs real accuracy."""
    from lenet5.training import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "run"
    config = TrainConfig(limit=5000, epochs=2, batch_size=32, out=str(out))
    return train(config, log=lambda _: None, progress=False)


# --- a real HTTP server for the lenet5.server tests ------------------------------------------

@pytest.fixture(scope="module")
def serve():
    """``serve(app) -> base URL``: runs a FastAPI app on uvicorn at 127.0.0.1 (a free port) in
    a background thread until the module's tests are done."""
    import contextlib

    pytest.importorskip("uvicorn", reason="the web extra is not installed")
    from browser import serve_app

    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(serve_app(app))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator (some test files keep their own seed)."""
    return np.random.default_rng(0)


@pytest.fixture
def compute_threads(monkeypatch):
    """``with compute_threads(k):`` runs its block with lenet5 splitting work over k threads,
    as on a k-core machine (the test is skipped where this BLAS cannot run k threads); no
    thread count is set in the environment meanwhile, so lenet5 chooses."""
    from threadpoolctl import threadpool_limits

    from lenet5 import threads

    for name in threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    threads._blas_threads.cache_clear()

    @contextlib.contextmanager
    def limited(workers: int):
        with threadpool_limits(workers, user_api="blas"):
            if threads.compute_workers() != workers:
                pytest.skip(f"this BLAS cannot run {workers} threads")
            yield

    yield limited
    threads._blas_threads.cache_clear()


@pytest.fixture(autouse=True)
def no_blas_hold_left():
    """Each test ends with no engine holding BLAS on one thread (``threads.hold_one_blas_thread``)
    for its workers: one a failed test's traceback keeps alive is collected here, so that it
    does not hold on into the tests after it."""
    yield
    from lenet5 import threads

    if threads._HOLD.count:
        gc.collect()
    assert not threads._HOLD.count, "an engine with worker processes outlived its test"
