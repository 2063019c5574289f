"""Model and state files: round trips, and every way a file can be wrong."""

import errno
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from lenet5 import checkpoint
from lenet5.arch import LENET5, init_params
from lenet5.errors import Lenet5Error, ModelFileError

META = {"arch": "lenet5", "dataset": "mnist", "classes": list("0123456789"),
        "input_normalization": {"kind": "mean_std", "pad": 2, "mean": 0.13, "std": 0.31}}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.safetensors"
    checkpoint.save_model(path, init_params(LENET5, 0), META)
    return path


def test_round_trip(model_file):
    params, meta = checkpoint.load_model(model_file)
    expected = init_params(LENET5, 0)
    assert all(np.array_equal(params[k], expected[k]) for k in expected)
    assert meta["arch"] == "lenet5" and meta["classes"] == list("0123456789")
    assert meta["input_normalization"]["mean"] == 0.13
    assert meta["format_version"] == checkpoint.FORMAT_VERSION


def test_run_directory_is_accepted(model_file):
    assert checkpoint.load_model(model_file.parent)[1]["dataset"] == "mnist"


def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(ModelFileError, match="no model at .*nowhere"):
        checkpoint.load_model(tmp_path / "nowhere")


def test_truncated_file(model_file):
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        checkpoint.load_model(model_file)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable model file"):
        checkpoint.load_model(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(ModelFileError, match="not a lenet5 model file"):
        checkpoint.load_model(path)


def test_newer_format_is_refused_with_upgrade_hint(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = {k: v for k, v in init_params(LENET5, 0).items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in META.items()}
    save_file(tensors, str(path), metadata={"format": checkpoint.MAGIC, "format_version": "99",
                                            **meta})
    with pytest.raises(ModelFileError, match="version 99.*upgrade lenet5"):
        checkpoint.load_model(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    params = init_params(LENET5, 0)
    params["C3.weight"] = np.zeros((16, 6, 3, 3), np.float32)
    del params["F6.bias"]
    checkpoint.save_model(path, params, META)
    with pytest.raises(ModelFileError, match="missing: F6.bias; wrong shape: C3.weight"):
        checkpoint.load_model(path)


def test_unknown_architecture_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    checkpoint.save_model(path, init_params(LENET5, 0), {**META, "arch": "alexnet"})
    with pytest.raises(ModelFileError, match="unknown architecture 'alexnet'"):
        checkpoint.load_model(path)


def test_nan_weights_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    params = init_params(LENET5, 0)
    params["F6.weight"][0, 0] = np.nan
    checkpoint.save_model(path, params, META)
    with pytest.raises(ModelFileError, match="NaN.*F6.weight"):
        checkpoint.load_model(path)


def test_full_disk_keeps_the_previous_file(model_file, monkeypatch):
    before = model_file.read_bytes()

    def no_space(fd):  # a full disk shows up at the latest when the data is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(Lenet5Error, match="No space left on device.*free some disk space"):
        checkpoint.save_model(model_file, init_params(LENET5, 1), META)
    monkeypatch.undo()
    assert model_file.read_bytes() == before
    assert [p.name for p in model_file.parent.iterdir()] == ["model.safetensors"]


def test_state_round_trip(tmp_path):
    path = tmp_path / "state.safetensors"
    params = init_params(LENET5, 0)
    optimizer = {"exp_avg.C1.weight": np.ones((6, 1, 5, 5), np.float32),
                 "steps": np.array([7], np.int64)}
    checkpoint.save_state(path, params, optimizer, {"epoch": 3, "arch": "lenet5"})
    p2, o2, meta = checkpoint.load_state(path)
    assert meta["epoch"] == 3 and o2["steps"][0] == 7
    assert np.array_equal(p2["C1.weight"], params["C1.weight"])


def test_state_file_is_not_a_model_file(tmp_path):
    path = tmp_path / "model.safetensors"
    checkpoint.save_state(path, init_params(LENET5, 0), {}, {"epoch": 1})
    with pytest.raises(ModelFileError, match="not a lenet5 model file"):
        checkpoint.load_model(path)
