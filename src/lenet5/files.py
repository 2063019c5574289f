"""The files lenet5 writes and reads back: atomic writes, and a run directory's contents.

A run directory (``lenet5 train --out``) holds MODEL_FILE, STATE_FILE (what ``--resume``
needs), CONFIG_FILE (the settings it was started with) and METRICS_FILE (one JSON line per
finished epoch). Every write goes to a temporary file first and is renamed into place, so a
full disk or a killed process never leaves a half-written file where a good one was; only
regular files are ever replaced, never a device, FIFO, socket or folder of the same name.
While a run is trained, LOCK_FILE holds the trainer's PID (``run_lock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import Lenet5Error

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
RUN_FILES = (MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE)
RUNS_DIR = Path("runs")  # where runs go by default, and where `serve` looks for one

# What a failed write means to the user, by errno; the others give their strerror alone.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
ERRNO_MEANINGS = {
    errno.ENOSPC: "the disk is full: free some disk space or write somewhere else",
    errno.EDQUOT: "your disk quota is used up: free some disk space or write somewhere else",
    errno.EACCES: "you have no permission to write there; choose a folder you can write to",
    errno.EPERM: "the operation is not permitted there; choose a folder you can write to",
    errno.EROFS: "that file system is read-only; write somewhere else",
    errno.EEXIST: "a file of that name is where a folder is needed; choose another path",
    errno.ENOENT: "check the path, or write somewhere else",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "that is a folder; name a file",
    errno.ENAMETOOLONG: "choose a shorter path",
}
_KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


class WriteError(Lenet5Error):
    """A file could not be written; ``errno`` says why (None: lenet5 refused to)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    @property
    def disk_full(self) -> bool:
        return self.errno in DISK_FULL


def write_error(path: Path, exc: OSError, action: str = "write") -> WriteError:
    """One sentence for a failed write of ``path``: the system's words, then what they mean."""
    meaning = ERRNO_MEANINGS.get(exc.errno)
    reason = exc.strerror or str(exc)
    return WriteError(f"could not {action} {path}: {reason}" + (f"; {meaning}." if meaning
                                                                 else "."), exc.errno)


def refuse_special_file(path: Path) -> None:
    """Raise WriteError if ``path`` (or what a symlink there points to) exists and is not a
    regular file: an atomic rename would replace a device node or FIFO with a plain file."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "special file")
    raise WriteError(f"{path} is a {kind}, not a regular file; lenet5 only replaces regular "
                     "files: choose another file name.")


TEMPORARY_NAME_BYTES = 64
"""A file written atomically is first a temporary one named after it, cut to this many bytes:
a name near the usual limit of 255 (a picture's, saved by --save-input) leaves no room for
the dot, the random part and ".tmp" (a 244-byte name had failed, "File name too long")."""


def cut_name(name: str, size: int) -> str:
    """``name`` cut to at most ``size`` bytes, not inside a UTF-8 character (a name in
    another encoding keeps its bytes as they are)."""
    encoded = os.fsencode(name)
    end = min(size, len(encoded))
    while 0 < end < len(encoded) and size - end < 3 and encoded[end] & 0xC0 == 0x80:
        end -= 1  # a continuation byte would start the rest: back to its character's start
    return os.fsdecode(encoded[:end])


def temporary_file(path: Path, suffix: str) -> tuple[int, Path]:
    """A new empty file beside ``path`` to write it in, named for it and for this process,
    ``.NAME.PID.RANDOM<suffix>`` (`temporaries(suffix)` finds them: what a killed process
    left is told by its PID), open (its descriptor) and readable by all, as models, runs
    and data are meant to be shared (mkstemp makes 0600)."""
    named = cut_name(path.name, TEMPORARY_NAME_BYTES)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{named}.{os.getpid()}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o644)
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, Path(tmp)


def temporaries(suffix: str) -> re.Pattern[str]:
    """The names `temporary_file` gives, its groups "name" and "pid" (none in the names of
    before PIDs, ``.NAME.RANDOM<suffix>``)."""
    return re.compile(rf"\.(?P<name>.+?)(?:\.(?P<pid>\d+))?\.[A-Za-z0-9_]+{re.escape(suffix)}")


@contextlib.contextmanager
def atomic_file(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A new file to write, which takes ``path``'s place only when the block ends without an
    error (flushed to disk first); otherwise it is removed and ``path`` is untouched. A
    ``path`` that exists and is not a regular file is refused (``refuse_special_file``)."""
    path = Path(path)
    refuse_special_file(path)
    fd, tmp = temporary_file(path, suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        refuse_special_file(path)  # again: it may have appeared while we wrote
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_file``), creating its folder; a
    failure is a WriteError saying what its errno means."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            f.write(data)
    except OSError as exc:
        raise write_error(path, exc) from None


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[Path]:
    """Hold ``directory``'s LOCK_FILE (created with the folder) while the block runs, so only
    one process trains a run at a time; another gets a WriteError naming the holder's PID.

    The lock is an ``flock``, which the kernel drops when its holder dies, so a run killed
    with ``kill -9`` leaves no lock behind; the file is removed on release.
    """
    directory = Path(directory)
    path = directory / LOCK_FILE
    # a run that wrote nothing leaves no folder behind, nor the ones made to hold it (a
    # sweep's setting)
    with made_folder(directory, "create the run directory"):
        try:
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise WriteError(f"{directory} is being written by process {holder} "
                                     "(another `lenet5 train`); wait for it to finish, or "
                                     "choose another --out.") from None
                if os.path.exists(path) and os.path.samestat(os.fstat(fd), os.stat(path)):
                    break  # else its holder removed it between our open and flock: try again
                os.close(fd)
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as exc:  # a full disk: the folder's own entries fitted, its PID not
                raise write_error(path, exc) from None
            yield path
        finally:
            path.unlink(missing_ok=True)  # while still locked: no one else holds this file
            os.close(fd)


def training_now(directory: Path) -> bool:
    """Whether a `lenet5 train` is writing ``directory`` now: its lock file names a live
    process (one killed outright leaves the file, naming a process that is gone). Read, not
    locked: taking the lock, even shared, could turn away a run starting at that moment."""
    try:
        pid = int((directory / LOCK_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's too)."""
    try:
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, OverflowError):
        return False
    return True


ABANDONED_AFTER = 60.0
"""Seconds a temporary named for a process that no longer runs must have lain unchanged
before it is taken for what a killed process left: a process of another machine or container
sharing the folder looks gone from here, but one still writing keeps its file fresh."""


def abandoned(path: str | Path, pid: int, after: float = ABANDONED_AFTER) -> bool:
    """Whether the temporary ``path``, named for process ``pid``, was left by a process killed
    outright (``kill -9``, a power cut), which had no chance to remove it: that process is
    gone and ``path`` has lain unchanged ``after`` seconds."""
    try:
        idle = time.time() - os.lstat(path).st_mtime
    except OSError:
        return False
    return idle >= after and not process_alive(pid)


TEMPORARY = temporaries(".tmp")
"""What `atomic_file` writes in: ``.NAME.PID.RANDOM.tmp``."""


def remove_abandoned(folder: str | Path, pattern: re.Pattern[str],
                     names: Collection[str] | None = None, after: float = ABANDONED_AFTER
                     ) -> None:
    """Remove from `folder` what processes killed outright left there, which they had no
    chance to remove: this user's entries named by `pattern` (its group "pid" the process's)
    that are `abandoned` (unchanged for `after` seconds); with `names`, only those whose group
    "name" is one of them."""
    named = None if names is None else {cut_name(name, TEMPORARY_NAME_BYTES) for name in names}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not (match and match["pid"] and (named is None or match["name"] in named)):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile (another cleaning up): the rest
            if (entry.stat(follow_symlinks=False).st_uid == os.getuid()
                    and abandoned(entry.path, int(match["pid"]), after)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)


def remove_stale_temporaries(directory: str | Path) -> list[str]:
    """Remove what killed writes of the run files left (``.model.safetensors.x1y2z3.tmp``);
    call it holding ``run_lock``, when no write can be under way. Returns the names removed."""
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = TEMPORARY.fullmatch(entry.name)
            if match and match["name"] in RUN_FILES and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    write_atomic(Path(run_dir) / METRICS_FILE,
                 "".join(json.dumps(row) + "\n" for row in rows).encode())


METRICS_NEEDED = ("epoch",)
"""What every row of a metrics file holds; it and the rest (METRICS_MEASURED), where a row has
them, are numbers."""
METRICS_MEASURED = ("train_loss", "train_acc", "val_acc", "test_loss", "test_acc", "seconds",
                    "lr")


def read_metrics(run_dir: str | Path, tested: bool = False) -> list[dict]:
    """The per-epoch rows of a run's metrics file, each checked to hold the numbers a row
    holds (with `tested`, the last a test accuracy too, as a finished run's does): a file
    edited by hand is one sentence, not a KeyError in whatever reads it."""
    path = Path(run_dir) / METRICS_FILE
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        rows = None
    if rows is None or not all(isinstance(row, dict) for row in rows):
        raise Lenet5Error(f"cannot read {path}; pass a run directory made by `lenet5 train`.")
    for number, row in enumerate(rows, start=1):
        needed = METRICS_NEEDED + (("test_acc",) if tested and number == len(rows) else ())
        wrong = [key for key in METRICS_NEEDED + METRICS_MEASURED
                 if (key in needed or key in row) and not is_number(row.get(key))]
        if wrong:
            raise Lenet5Error(f"{path} is damaged: its row {number} has no number for "
                              f"{', '.join(wrong)}; train the run again, or pass another run "
                              "directory.")
    return rows


def is_number(value: object) -> bool:
    """A finite int or float from decoded JSON (its true and false are no numbers)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_config(run_dir: str | Path, needed_by: str) -> dict:
    """The settings a run was started with; ``needed_by`` names the flag or command that
    needs them, for the error message."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        text = path.read_text()
    except (OSError, ValueError):
        raise Lenet5Error(f"cannot read {path}; {needed_by} needs a run directory made by "
                          "`lenet5 train`.") from None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise Lenet5Error(f"{path} is damaged (not JSON: {exc}); restore the config.json that "
                          "`lenet5 train` wrote, or train a new run.") from None
    if not isinstance(config, dict):
        kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
            type(config), "number")
        raise Lenet5Error(f"{path} holds a {kind}, not a run's settings; {needed_by} needs a run "
                          "directory made by `lenet5 train`.")
    return config


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (``lenet5 export``'s), by its suffix; a folder so
    named is not one."""
    return Path(path).suffix.lower() == ".onnx" and not Path(path).is_dir()


def unfinished_run(directory: Path) -> bool:
    """Whether a folder is a run `lenet5 train` started that has no model yet (killed in its
    first epoch, or still in it): its config.json holds a run's settings, and neither its
    model nor its resume state is there."""
    if any(os.path.lexists(directory / name) for name in (MODEL_FILE, STATE_FILE)):
        return False
    return holds_run(directory)


def holds_run(directory: Path) -> bool:
    """Whether a folder is a run `lenet5 train` started, whatever of it is left: its resume
    state is there, or its config.json holds a run's settings."""
    if os.path.lexists(directory / STATE_FILE):
        return True
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"arch", "engine", "epochs", "seed"} <= config.keys()


def refuse_others_files(folder: Path, names: Iterable[str], ours: Callable[[], bool],
                        writer: str, instead: str) -> None:
    """A Lenet5Error where `folder` (an --out) holds any of `names` but ``ours()`` says no
    `writer` (a lenet5 command) wrote them: it writes over its own, but the user's would be
    lost; `instead` says where else to write."""
    there = [name for name in names if os.path.lexists(folder / name)]
    if there and not ours():
        raise Lenet5Error(f"--out {folder} holds {', '.join(there)}, which no lenet5 {writer} "
                          f"wrote; {instead}, or move them away.")


def make_folder(folder: Path, action: str = "create") -> None:
    """``folder`` and its parents made where missing, or a WriteError that names it and says
    why: before any work that ends by writing there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc, action) from None


@contextlib.contextmanager
def made_folder(folder: Path, action: str = "create") -> Iterator[None]:
    """``make_folder`` for a block that writes there: the folders it made are removed again
    where the block leaves them empty, so a write that failed leaves no empty folder."""
    made = list(itertools.takewhile(lambda f: not f.exists(), (folder, *folder.parents)))
    make_folder(folder, action)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            for each in made:  # innermost first, until one holds something
                each.rmdir()


def not_trained_yet(directory: str | Path) -> str:
    """What to say of an `unfinished_run` wherever its model is wanted."""
    return (f"its training has not finished an epoch; if it stopped, resume it with `lenet5 "
            f"train --resume {directory}`")


def newest_run(runs: Path = RUNS_DIR, finished: Callable[[Path], bool] = lambda run: True
               ) -> Path | None:
    """The run directory under ``runs`` whose model file was written last, of those that
    ``finished`` says are (a run stopped part-way writes its model after every epoch)."""
    models = sorted(runs.glob(f"*/{MODEL_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((model.parent for model in models if finished(model.parent)), None)
