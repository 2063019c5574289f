"""Model and state files: round trips, and every way a file can be wrong."""

import errno
import json
import os

import numpy as np
import pytest
from lying_models import LIES, rewrite_metadata
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


@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_model_argument_says_so(empty, model_file, monkeypatch):
    monkeypatch.chdir(model_file.parent)  # "" had been taken for this folder: "no model at ;"
    with pytest.raises(ModelFileError, match="^the model given is empty; pass a"):
        checkpoint.load_model(empty)


def test_an_onnx_file_is_named_as_one(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\x08\x08\x12\x07pytorch")  # as an ONNX file begins
    with pytest.raises(ModelFileError, match=r"m\.onnx is not a model file: it is named as an "
                                             "ONNX file, which this command does not read; "):
        checkpoint.load_model(tmp_path / "m.onnx")


def test_truncated_file(model_file):
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        checkpoint.load_model(model_file)


@pytest.mark.parametrize("text", ["hello", "some notes, not a model at all\n"])
def test_not_a_safetensors_file(tmp_path, text):
    path = tmp_path / "model.safetensors"
    path.write_text(text)
    with pytest.raises(ModelFileError, match="is not a model file: it does not begin as a "
                       "safetensors file does; pass a file written by `lenet5 train`"):
        checkpoint.load_model(path)


def test_a_safetensors_file_cut_in_its_header_is_truncated(model_file):
    model_file.write_bytes(model_file.read_bytes()[:40])
    with pytest.raises(ModelFileError, match="not a readable model file .* truncated or corrupt"):
        checkpoint.load_model(model_file)


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


def test_a_variant_the_architecture_lacks_is_one_sentence(tmp_path):
    path = tmp_path / "model.safetensors"
    checkpoint.save_model(path, init_params(LENET5, 0), {**META, "arch": "lenet5-1998",
                                                         "pool": "max"})
    with pytest.raises(ModelFileError) as info:
        checkpoint.load_model(path)
    assert str(info.value) == (
        f"{path} names a variant of lenet5-1998 that this lenet5 does not know: --pool max is "
        "a variant of lenet5 only; lenet5-1998 has its own (subsample); pass a file written "
        "by `lenet5 train`, or upgrade lenet5 if a newer one wrote it.")


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
    with pytest.raises(ModelFileError, match=r"is a run's training state, for --resume, not its "
                                             r"model; pass the model\.safetensors beside it, or "
                                             r"the run directory\."):
        checkpoint.load_model(path)


# --- issue 17: one metadata schema, a checksum of the weights, identical bytes ---------------

@pytest.mark.parametrize("lie", LIES)
def test_lying_metadata_is_one_clear_error_naming_file_and_field(model_file, lie):
    field, value = LIES[lie]
    rewrite_metadata(model_file, **{field: value})
    with pytest.raises(ModelFileError) as raised:
        checkpoint.load_model(model_file)
    message = str(raised.value)
    assert str(model_file) in message and repr(field) in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence


def test_a_model_file_lacking_fields_names_every_one(model_file):
    rewrite_metadata(model_file, classes=None, input_normalization=None)
    with pytest.raises(ModelFileError, match=r"lacks lenet5 metadata \(classes, "
                                             r"input_normalization\); it was not written by "
                                             r"lenet5: train again\.$"):
        checkpoint.load_model(model_file)


def test_the_weights_checksum_is_sha256_over_sorted_names_dtypes_shapes_and_bytes(model_file):
    import hashlib

    params, meta = checkpoint.load_model(model_file)
    digest = hashlib.sha256()
    for name in sorted(params):
        value = np.ascontiguousarray(params[name], dtype="<f4")
        digest.update(json.dumps([name, "<f4", list(value.shape)]).encode() + b"\n")
        digest.update(value.tobytes())
    assert meta["weights_sha256"] == digest.hexdigest()


def _flip_a_bit(path, from_end: int = 1000):
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_weights_is_refused(model_file):
    _flip_a_bit(model_file)
    with pytest.raises(ModelFileError, match=r"is damaged: its weights do not match the "
                                             r"checksum .*train again or restore it"):
        checkpoint.load_model(model_file)


@pytest.mark.parametrize("stored, changed", [(b"0.13", b"0.93"), (b"mean_std", b"mean_img")])
def test_a_changed_byte_in_the_metadata_is_refused(model_file, stored, changed):
    """A mean or a kind changed in place still reads as metadata: only the checksum tells."""
    data = model_file.read_bytes()
    assert data.count(stored) == 1
    model_file.write_bytes(data.replace(stored, changed))
    with pytest.raises(ModelFileError, match=r"is damaged: its metadata do not match the "
                                             r"checksum stored in it \(metadata_sha256\); "
                                             r"train again or restore it from a copy\.$"):
        checkpoint.load_model(model_file)


@pytest.mark.parametrize("checksum", ["weights_sha256", "metadata_sha256"])
def test_files_written_before_the_checksum_still_load(model_file, checksum):
    rewrite_metadata(model_file, **{checksum: None})
    params, meta = checkpoint.load_model(model_file)
    assert checksum not in meta and set(params) == set(LENET5.param_shapes())


def test_a_flipped_bit_in_a_state_file_is_refused(tmp_path):
    path = tmp_path / "state.safetensors"
    checkpoint.save_state(path, init_params(LENET5, 0), {"steps": np.array([1], np.int64)},
                          {"epoch": 1, "arch": "lenet5"})
    _flip_a_bit(path)
    with pytest.raises(ModelFileError, match="is damaged: its weights do not match"):
        checkpoint.load_state(path)


def test_identical_saves_give_identical_bytes(tmp_path):
    meta = {**META, "engine": "numpy", "epochs": 2, "test_accuracy": 0.99, "lenet5_version": "x"}
    blobs = set()
    for i in range(5):
        checkpoint.save_model(tmp_path / f"{i}.safetensors", init_params(LENET5, 0), meta)
        checkpoint.save_state(tmp_path / f"s{i}.safetensors", init_params(LENET5, 0),
                              {"steps": np.array([3], np.int64)}, {"epoch": 2, "arch": "lenet5"})
        blobs.add(((tmp_path / f"{i}.safetensors").read_bytes(),
                   (tmp_path / f"s{i}.safetensors").read_bytes()))
    assert len(blobs) == 1


@pytest.mark.parametrize("meta, optimizer, params_change, problem", [
    ({"arch": "lenet5"}, {}, None, "'epoch'"),
    ({"arch": "lenet5", "epoch": "abc"}, {}, None, "'epoch'"),
    ({"arch": "lenet5", "epoch": -1}, {}, None, "'epoch'"),
    ({"arch": "lenet5", "epoch": True}, {}, None, "'epoch'"),
    ({"epoch": 1}, {}, None, r"lacks lenet5 metadata \(arch\)"),
    ({"arch": "lenet5", "epoch": 1}, {}, ("C1.weight", np.zeros((6, 1, 3, 3))), "C1.weight"),
    ({"arch": "lenet5", "epoch": 1}, {}, ("C1.weight", None), "missing: C1.weight"),
    ({"arch": "lenet5", "epoch": 1}, {"exp_avg.C1.weight": np.zeros(3)}, None,
     "exp_avg.C1.weight"),
    ({"arch": "lenet5", "epoch": 1}, {"steps": np.array([-2])}, None, "steps"),
    ({"arch": "lenet5", "epoch": 1}, {"exp_avg.C9.weight": np.zeros(3)}, None, "C9.weight"),
])
def test_state_files_are_checked_against_their_schema(tmp_path, meta, optimizer, params_change,
                                                      problem):
    params = init_params(LENET5, 0)
    if params_change is not None:
        name, value = params_change
        if value is None:
            del params[name]
        else:
            params[name] = value.astype(np.float32)
    path = tmp_path / "state.safetensors"
    checkpoint.save_state(path, params, optimizer, meta)
    with pytest.raises(ModelFileError, match=problem) as raised:
        checkpoint.load_state(path)
    assert str(path) in str(raised.value)


def test_string_fields_stay_strings_even_when_they_look_like_json(tmp_path):
    path = tmp_path / "model.safetensors"
    checkpoint.save_model(path, init_params(LENET5, 0), {**META, "dataset": "2024"})
    assert checkpoint.load_model(path)[1]["dataset"] == "2024"
