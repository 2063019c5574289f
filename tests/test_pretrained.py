"""The model shipped with lenet5: found by name everywhere a MODEL is taken, and as good as
its metadata says."""

import json

import numpy as np
import pytest
from PIL import Image

import lenet5
from lenet5 import checkpoint, pretrained
from lenet5.cli import main
from lenet5.engine import evaluate
from lenet5.errors import Lenet5Error, ModelFileError
from lenet5.recipes import load_recipe
from lenet5.refusal import METADATA_KEY
from lenet5.threads import one_blas_thread
from lenet5.training import calibration_again

SHIPPED = pretrained.path().is_file()
needs_model = pytest.mark.skipif(not SHIPPED, reason="no pretrained model in this checkout; "
                                 "build it with scripts/build_pretrained.py")


@needs_model
def test_its_metadata_says_where_it_comes_from():
    _, metadata = checkpoint.load_model(pretrained.NAME)
    facts = metadata["pretrained"]
    assert facts["recipe"] == "default" and facts["seeds"]["n"] == 5
    assert abs(facts["test_accuracy"] - facts["seeds"]["mean"]) <= facts["seeds"]["std"]
    assert facts["test_accuracy"] == metadata["test_accuracy"]


@needs_model
@pytest.mark.mnist
@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_it_scores_what_its_metadata_says_in_both_engines(engine, mnist):
    if engine == "torch":
        pytest.importorskip("torch")
    model = lenet5.load("pretrained", engine=engine, device="cpu")
    _, predictions = evaluate(model.engine, model.inputs(mnist.test_images),
                              mnist.test_labels.astype(np.int64))
    accuracy = float(np.mean(predictions == mnist.test_labels))
    claimed = model.metadata["pretrained"]["test_accuracy"]
    if engine == "numpy":  # the engine it was trained and measured with: to the image
        assert accuracy == claimed
    else:  # float32 sums in another order may flip an image sitting on a tie
        assert abs(accuracy - claimed) <= 2e-4


@needs_model
@pytest.mark.mnist
@pytest.mark.slow
def test_its_refusal_is_calibrated_as_training_calibrates_now():
    """Whoever changes how a digit's confidence is measured (`lenet5.refusal`) recalibrates
    the shipped threshold: `python scripts/build_pretrained.py --recalibrate`. (Other BLAS
    kernels may move the last bits of a confidence, so the threshold is compared closely, not
    exactly.)"""
    _, metadata = checkpoint.load_model(pretrained.NAME)
    config = load_recipe("default").config({"seed": metadata["pretrained"]["seed"]})
    with one_blas_thread():
        now = calibration_again(lenet5.load(pretrained.NAME), config)
    shipped = metadata[METADATA_KEY]
    assert now["threshold"] == pytest.approx(shipped["threshold"], rel=1e-3)
    for rate in ("refused", "error_accepted", "nondigits_refused"):
        assert now[rate] == pytest.approx(shipped[rate], abs=1e-3)
    assert {k: now[k] for k in ("target_error", "calibrated_on", "digits")} == \
        {k: shipped[k] for k in ("target_error", "calibrated_on", "digits")}


def test_the_name_finds_the_shipped_file_and_a_path_does_not(tmp_path, monkeypatch):
    assert checkpoint.resolve_model_path("pretrained") == pretrained.path()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError, match="no model at ./pretrained"):
        checkpoint.resolve_model_path("./pretrained")


@needs_model
def test_predict_without_a_model_uses_it(tmp_path, capsys):
    from PIL import Image

    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255  # a 1
    Image.fromarray(image).save(tmp_path / "one.png")
    assert main(["predict", str(tmp_path / "one.png"), "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["label"] == 1
    assert main(["predict", "pretrained", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == 1


def test_predict_reads_its_first_argument_as_the_model_only_when_it_names_one(tmp_path):
    from lenet5.cli import _model_and_images

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    photos = tmp_path / "photos"
    photos.mkdir()
    assert _model_and_images([str(run), str(photos)]) == (str(run), [str(photos)])
    assert _model_and_images(["m.safetensors", "a.png"]) == ("m.safetensors", ["a.png"])
    assert _model_and_images(["m.onnx", "a.png"]) == ("m.onnx", ["a.png"])
    assert _model_and_images(["pretrained", "a.png"]) == ("pretrained", ["a.png"])
    assert _model_and_images([str(photos), "a.png"]) == ("pretrained", [str(photos), "a.png"])
    assert _model_and_images(["a.png", "b.png"]) == ("pretrained", ["a.png", "b.png"])
    with pytest.raises(Lenet5Error, match="is a model, not a picture; name the model first"):
        _model_and_images(["a.png", str(run)])  # its figures are no pictures of digits
    assert main(["predict", str(photos), str(run)]) == 1
    mistyped = str(tmp_path / "runs" / "mine")  # no such run: an error that names it
    assert _model_and_images([mistyped, "a.png"]) == (mistyped, ["a.png"])
    assert main(["predict", mistyped, str(photos)]) == 1


def test_predict_with_a_run_killed_in_its_first_epoch_says_so(tmp_path, capsys):
    """A run directory with no model yet is the model argument, not a folder of pictures
    that the pretrained model would answer for without a word."""
    killed = tmp_path / "killed"
    killed.mkdir()
    settings = {"arch": "lenet5", "engine": "numpy", "epochs": 15, "seed": 0}
    (killed / "config.json").write_text(json.dumps(settings))
    Image.new("L", (28, 28), 255).save(tmp_path / "a.png")
    assert main(["predict", str(killed), str(tmp_path / "a.png")]) == 1
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1
    assert (f"no model at {killed} yet: its training has not finished an epoch; if it stopped, "
            f"resume it with `lenet5 train --resume {killed}`.") in err


def test_a_folder_of_pictures_with_some_other_config_json_is_still_pictures(tmp_path):
    from lenet5.cli import _model_and_images

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "config.json").write_text('{"camera": "x"}')  # not a run's settings
    assert _model_and_images([str(photos), "a.png"]) == ("pretrained", [str(photos), "a.png"])
    run = tmp_path / "run"  # a run's settings, and its resume state: a model moved away
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"arch": "lenet5", "engine": "numpy",
                                                 "epochs": 15, "seed": 0}))
    (run / "state.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError, match=f"{run} is a run whose model.safetensors is missing "
                                             r"\(moved or deleted\); restore it, or pass another"):
        checkpoint.load_model(run)
    # predict takes it as the model, and says so, where the pretrained model would have
    # answered for the pictures without a word
    assert _model_and_images([str(run), "a.png"]) == (str(run), ["a.png"])
    (run / "config.json").unlink()  # its resume state alone still marks it as a run
    assert _model_and_images([str(run), "a.png"]) == (str(run), ["a.png"])


def test_export_without_a_model_writes_it(tmp_path, capsys):
    assert main(["export", "--format", "web", "-o", str(tmp_path / "site"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "web"
    shipped = (tmp_path / "site" / "model.safetensors").read_bytes()
    assert shipped == pretrained.path().read_bytes()
