"""`lenet5.files`: atomic writes, and reading a run directory's files back."""

import errno
import os
import stat
import time

import pytest

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


def test_a_damaged_config_names_who_needed_it(tmp_path):
    (tmp_path / files.CONFIG_FILE).write_text("{not json")
    with pytest.raises(Lenet5Error, match=r"config\.json; --resume needs a run directory"):
        files.read_config(tmp_path, "--resume")


def test_newest_run_is_the_last_model_written(tmp_path):
    assert files.newest_run(tmp_path) is None
    for age, name in ((100, "newer"), (200, "older")):
        model = tmp_path / name / files.MODEL_FILE
        model.parent.mkdir()
        model.write_bytes(b"x")
        os.utime(model, (time.time() - age,) * 2)
    assert files.newest_run(tmp_path).name == "newer"
