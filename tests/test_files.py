"""`lenet5.files`: atomic writes, and reading a run directory's files back."""

import errno
import os
import stat
import time

import pytest
from leftovers import dead_pid, leave_behind

from lenet5 import files
from lenet5.errors import Lenet5Error


def test_write_atomic_creates_folders_and_shareable_files(tmp_path):
    path = tmp_path / "a" / "b" / "file.bin"
    files.write_atomic(path, b"first")
    files.write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["file.bin"]  # no temporary file left


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError), files.atomic_file(path) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_a_full_disk_is_one_sentence_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    path.write_bytes(b"good")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(Lenet5Error, match=r"could not write .*file\.bin: No space left"):
        files.write_atomic(path, b"new")
    assert path.read_bytes() == b"good"


def test_metrics_round_trip_and_a_missing_file_is_named(tmp_path):
    rows = [{"epoch": 1, "test_acc": 0.9}, {"epoch": 2, "test_acc": 0.95}]
    files.write_metrics(tmp_path, rows)
    assert files.read_metrics(tmp_path) == rows
    with pytest.raises(Lenet5Error, match=r"cannot read .*metrics\.jsonl"):
        files.read_metrics(tmp_path / "nowhere")


def test_newest_run_is_the_last_model_written(tmp_path):
    assert files.newest_run(tmp_path) is None
    for age, name in ((100, "newer"), (200, "older")):
        model = tmp_path / name / files.MODEL_FILE
        model.parent.mkdir()
        model.write_bytes(b"x")
        os.utime(model, (time.time() - age,) * 2)
    assert files.newest_run(tmp_path).name == "newer"


# --- issue 17: special files, errno messages, the run lock, stale temporaries ----------------

def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _device(path):
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # what /dev/full is


@pytest.mark.parametrize("make, kind", [(_fifo, "FIFO"), (_socket, "socket"),
                                        (_device, "character device"), (os.mkdir, "folder")])
def test_writes_refuse_to_replace_what_is_not_a_regular_file(tmp_path, make, kind):
    target = tmp_path / "target"
    make(target)
    before = os.lstat(target)
    with pytest.raises(Lenet5Error, match=rf"{target} is a {kind}, not a regular file"):
        files.write_atomic(target, b"data")
    with pytest.raises(Lenet5Error, match="not a regular file"), files.atomic_file(target) as f:
        f.write(b"data")
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert os.listdir(tmp_path) == ["target"]  # no temporary left behind


def test_a_symlink_to_a_device_is_refused_too(tmp_path):
    link = tmp_path / "link"
    _fifo(tmp_path / "pipe")
    link.symlink_to(tmp_path / "pipe")
    with pytest.raises(Lenet5Error, match="is a FIFO, not a regular file"):
        files.write_atomic(link, b"data")
    assert link.is_symlink()


@pytest.mark.parametrize("code, meaning", [
    (errno.EEXIST, "a file of that name is where a folder is needed; choose another path"),
    (errno.ENOENT, "check the path, or write somewhere else"), (errno.ENOTDIR, "not a folder"),
    (errno.EACCES, "permission"), (errno.EROFS, "read-only"),
])
def test_write_errors_say_what_the_errno_means_without_disk_space_advice(tmp_path, monkeypatch,
                                                                         code, meaning):
    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(files.WriteError) as raised:
        files.write_atomic(tmp_path / "file.bin", b"new")
    message = str(raised.value)
    assert meaning in message and "disk space" not in message and "--resume" not in message
    assert raised.value.errno == code and not raised.value.disk_full


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_advises_freeing_space_but_not_resume(tmp_path, monkeypatch, code):
    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(files.WriteError, match="free some disk space") as raised:
        files.write_atomic(tmp_path / "file.bin", b"new")
    assert raised.value.disk_full and "--resume" not in str(raised.value)


LOCK_HOLDER = """
import sys, time
from lenet5 import files
with files.run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(directory):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(directory)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_directory_is_locked_by_one_process_at_a_time(tmp_path):
    holder = _hold_lock(tmp_path / "run")
    try:
        with pytest.raises(Lenet5Error, match=rf"is being written by process {holder.pid}"), \
                files.run_lock(tmp_path / "run"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with files.run_lock(tmp_path / "run"):  # a crashed holder leaves no lock behind
        assert (tmp_path / "run" / files.LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (tmp_path / "run" / files.LOCK_FILE).exists()  # released and removed


def test_a_lock_on_a_file_named_like_the_run_is_one_sentence(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(Lenet5Error, match="could not create the run directory"), \
            files.run_lock(tmp_path / "run"):
        pass


def test_a_full_disk_when_taking_the_lock_names_the_lock_file(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(files.WriteError, match=r"could not write .*run/\.lock: No space left on "
                                               r"device; the disk is full") as caught, \
            files.run_lock(tmp_path / "run"):
        pass
    assert caught.value.disk_full
    assert not (tmp_path / "run").exists()  # the folder it made is gone again


def test_an_existing_run_folder_that_cannot_be_written_names_the_lock_file(tmp_path,
                                                                           monkeypatch):
    (tmp_path / "run").mkdir()

    def read_only(path, flags, mode=0o777):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.os, "open", read_only)
    with pytest.raises(files.WriteError, match=r"could not write .*run/\.lock: Read-only file "
                                               r"system; that file system is read-only"), \
            files.run_lock(tmp_path / "run"):
        pass


def test_stale_temporaries_of_the_run_files_are_removed_and_nothing_else(tmp_path):
    ours = [f".{name}.k2j4_x9q.tmp" for name in (files.MODEL_FILE, files.STATE_FILE,
                                                 files.CONFIG_FILE, files.METRICS_FILE)]
    others = [".notes.txt.k2j4_x9q.tmp", "model.safetensors.tmp", ".model.safetensors",
              files.MODEL_FILE]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(files.remove_stale_temporaries(tmp_path)) == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted(others)


@pytest.mark.parametrize("text, kind", [("[1, 2]", "list"), ('"a string"', "string"),
                                        ("7", "number"), ("null", "null")])
def test_a_config_that_is_not_an_object_is_named(tmp_path, text, kind):
    (tmp_path / files.CONFIG_FILE).write_text(text)
    with pytest.raises(Lenet5Error, match=rf"config\.json holds a {kind}, not a run's settings; "
                                          "report needs"):
        files.read_config(tmp_path, "report")


def test_a_damaged_config_is_called_damaged_and_a_missing_one_missing(tmp_path):
    with pytest.raises(Lenet5Error, match=r"cannot read .*config\.json; --resume needs a run "
                                          "directory made by"):
        files.read_config(tmp_path, "--resume")
    (tmp_path / files.CONFIG_FILE).write_text('{"arch": "lenet5",')
    with pytest.raises(Lenet5Error, match=r"config\.json is damaged \(not JSON: .*\); restore "
                                          "the config.json that `lenet5 train` wrote, or train "
                                          r"a new run\.$"):
        files.read_config(tmp_path, "--resume")


def test_metrics_rows_that_are_not_objects_are_refused(tmp_path):
    (tmp_path / files.METRICS_FILE).write_text('{"epoch": 1}\n[2]\n')
    with pytest.raises(Lenet5Error, match=r"cannot read .*metrics\.jsonl"):
        files.read_metrics(tmp_path)


def test_an_unfinished_run_has_a_run_s_settings_and_no_model_or_state(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not files.unfinished_run(run)  # no config.json
    (run / files.CONFIG_FILE).write_text('{"camera": "x"}')
    assert not files.unfinished_run(run)  # some other program's settings
    (run / files.CONFIG_FILE).write_text('{"arch": "lenet5", "engine": "numpy", "epochs": 15, '
                                         '"seed": 0}')
    assert files.unfinished_run(run)
    for written in (files.STATE_FILE, files.MODEL_FILE):
        (run / written).write_bytes(b"")
        assert not files.unfinished_run(run)
        (run / written).unlink()
    (run / files.CONFIG_FILE).write_text("[1, 2")  # broken
    assert not files.unfinished_run(run)


def test_training_now_is_a_lock_file_naming_a_live_process(tmp_path):
    assert not files.training_now(tmp_path)  # no lock file
    for holder, live in ((f"{os.getpid()}\n", True), ("999999999\n", False), ("", False),
                         ("not a pid", False)):
        (tmp_path / files.LOCK_FILE).write_text(holder)
        assert files.training_now(tmp_path) == live, holder


def test_a_lock_on_a_run_that_wrote_nothing_leaves_no_folder_it_made(tmp_path):
    """A run (in a sweep: DIR/setting/seed-0) that wrote nothing leaves none of the folders
    made for it; a folder that was there, or that holds something, stays."""
    with files.run_lock(tmp_path / "sweep" / "setting" / "seed-0"):
        pass
    assert list(tmp_path.iterdir()) == []
    with files.run_lock(tmp_path / "sweep" / "setting" / "seed-0"):
        (tmp_path / "sweep" / "summary.md").write_text("kept")
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["summary.md"]


@pytest.mark.parametrize("name", ["L" * 250 + ".png", "a" + "é" * 125 + ".png"])  # 254, 255
def test_a_name_near_the_limit_is_written_atomically(tmp_path, name):
    """The temporary file is named after a cut of the name: the whole name, with a dot, a
    random part and .tmp, would pass 255 bytes ("File name too long")."""
    with files.atomic_file(tmp_path / name) as f:
        [temporary] = [p.name for p in tmp_path.iterdir()]
        f.write(b"x")
    temporary.encode()  # valid UTF-8: the cut of the name falls between characters
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes() == b"x"


@pytest.mark.parametrize(("name", "size", "cut"), [
    ("abc", 64, "abc"),
    ("7" * 248 + "é", 249, "7" * 248),  # the é's first byte alone is no character
    ("a" + "é" * 40, 64, "a" + "é" * 31),
    ("😀" * 3, 5, "😀"),
    (os.fsdecode(b"\xe9" * 300), 249, os.fsdecode(b"\xe9" * 249)),  # Latin-1: bytes kept
])
def test_a_name_is_cut_between_characters(name, size, cut):
    assert files.cut_name(name, size) == cut


def test_a_temporary_is_abandoned_once_its_process_is_gone_and_it_lay_a_minute(tmp_path):
    gone = dead_pid()
    path = leave_behind(tmp_path / ".x.part", old=False)
    assert not files.abandoned(path, gone)  # just written: another machine's, maybe
    leave_behind(path)
    assert files.abandoned(path, gone)
    assert not files.abandoned(path, os.getpid())  # its writer lives
    assert not files.abandoned(tmp_path / "gone.part", gone)  # nothing there
    assert files.process_alive(os.getpid()) and not files.process_alive(gone)


def test_only_the_abandoned_temporaries_of_the_names_given_are_removed(tmp_path):
    gone, long = dead_pid(), "a" * 200 + ".png"  # a long name's temporary holds it cut
    cut = files.cut_name(long, files.TEMPORARY_NAME_BYTES)
    removed = [leave_behind(tmp_path / f".{name}.{gone}.k2j4_x9q.tmp")
               for name in ("report.html", cut)]
    kept = [leave_behind(tmp_path / f".report.html.{gone}.b2.tmp", old=False),  # fresh
            leave_behind(tmp_path / f".report.html.{os.getpid()}.c3.tmp"),  # its writer lives
            leave_behind(tmp_path / f".notes.txt.{gone}.d4.tmp"),  # not a name given
            leave_behind(tmp_path / ".report.html.e5f6g7h8.tmp")]  # no pid: whose is unknown
    files.remove_abandoned(tmp_path, files.TEMPORARY, {"report.html", long})
    assert not any(path.exists() for path in removed) and all(path.exists() for path in kept)
    with files.atomic_file(tmp_path / "x.png"):  # what it writes has such a name
        (writing,) = tmp_path.glob(".x.png.*")
        assert files.TEMPORARY.fullmatch(writing.name)["pid"] == str(os.getpid())


def test_others_files_of_a_command_s_names_are_refused_its_own_not(tmp_path):
    (tmp_path / "summary.md").write_text("mine")
    names = ("summary.json", "summary.md")
    with pytest.raises(Lenet5Error, match=r"holds summary\.md, which no lenet5 sweep wrote; "
                                          r"sweep elsewhere, or move them away\.$"):
        files.refuse_others_files(tmp_path, names, lambda: False, "sweep", "sweep elsewhere")
    files.refuse_others_files(tmp_path, names, lambda: True, "sweep", "sweep elsewhere")
    files.refuse_others_files(tmp_path / "empty", names, lambda: False, "sweep", "elsewhere")
