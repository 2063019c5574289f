"""The training loop on a tiny synthetic dataset: files, resume, divergence, validation."""

import json

import numpy as np
import pytest

from lenet5 import checkpoint, files
from lenet5.errors import Lenet5Error, TrainingDiverged
from lenet5.files import read_metrics
from lenet5.training import TrainConfig, resume_config, train


def quiet(_: str) -> None:
    pass


def config(dataset: str, out, **kw) -> TrainConfig:
    return TrainConfig(**{"dataset": dataset, "out": str(out), "epochs": 2, "batch_size": 32,
                          "seed": 3, **kw})


def test_run_directory_holds_model_metrics_config_and_state(synthetic_dataset, tmp_path):
    run = train(config(synthetic_dataset, tmp_path / "run", val_size=100), log=quiet)
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_acc", "test_loss",
                            "test_acc", "seconds", "lr"}
    assert rows[-1]["test_acc"] > 0.9  # the synthetic classes are easy
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train_images"] == 500 and cfg["val_size"] == 100 and cfg["seed"] == 3
    params, meta = checkpoint.load_model(run)
    assert meta["arch"] == "lenet5" and meta["dataset"] == "synthetic"
    assert meta["test_accuracy"] == rows[-1]["test_acc"]
    assert (run / files.STATE_FILE).is_file()
    assert not list(run.glob("*.tmp"))


def test_resume_ends_bit_identical_to_an_uninterrupted_run(synthetic_dataset, tmp_path):
    straight = train(config(synthetic_dataset, tmp_path / "a", epochs=3), log=quiet)

    def killed_after_first_epoch(line: str) -> None:
        if line.startswith("epoch  1/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(synthetic_dataset, tmp_path / "b", epochs=3), log=killed_after_first_epoch)
    assert len(read_metrics(tmp_path / "b")) == 1
    resumed = train(resume_config(tmp_path / "b"), resume=tmp_path / "b", log=quiet)

    p1, _ = checkpoint.load_model(straight)
    p2, _ = checkpoint.load_model(resumed)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    _, o1, _ = checkpoint.load_state(straight / files.STATE_FILE)
    _, o2, _ = checkpoint.load_state(resumed / files.STATE_FILE)
    assert all(np.array_equal(o1[k], o2[k]) for k in o1)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(straight)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(resumed)]


def test_same_seed_same_run(synthetic_dataset, tmp_path):
    a = train(config(synthetic_dataset, tmp_path / "a", epochs=1), log=quiet)
    b = train(config(synthetic_dataset, tmp_path / "b", epochs=1), log=quiet)
    pa, pb = checkpoint.load_model(a)[0], checkpoint.load_model(b)[0]
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_divergence_stops_with_advice_and_keeps_last_good_epoch(synthetic_dataset, tmp_path):
    cfg = config(synthetic_dataset, tmp_path / "run", optimizer="sgd", lr=1e12,
                 schedule="constant")
    with pytest.raises(TrainingDiverged, match=r"lower --lr \(now 1e\+12\)"):
        train(cfg, log=quiet)
    assert not (tmp_path / "run" / files.MODEL_FILE).exists()


def test_existing_run_is_not_overwritten(synthetic_dataset, tmp_path):
    train(config(synthetic_dataset, tmp_path / "run", epochs=1), log=quiet)
    with pytest.raises(Lenet5Error, match="already holds a training run; pass --resume"):
        train(config(synthetic_dataset, tmp_path / "run", epochs=1), log=quiet)


def test_resume_of_a_directory_that_is_no_run(tmp_path):
    with pytest.raises(Lenet5Error, match="--resume needs a run directory"):
        resume_config(tmp_path)


@pytest.mark.parametrize("field, value, flag", [
    ("epochs", 0, "--epochs"), ("batch_size", 0, "--batch-size"), ("val_size", -1, "--val-size"),
    ("limit", 0, "--limit"), ("arch", "vgg", "unknown architecture"),
])
def test_bad_settings_are_named(field, value, flag):
    with pytest.raises(Lenet5Error, match=flag):
        TrainConfig(**{field: value}).validate()


def test_limit_uses_the_first_images(synthetic_dataset, tmp_path):
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1, limit=64), log=quiet)
    assert json.loads((run / "config.json").read_text())["train_images"] == 64


def test_no_test_each_epoch_measures_the_test_set_after_the_last_only(synthetic_dataset,
                                                                       tmp_path, monkeypatch):
    from lenet5 import training

    passes = []
    monkeypatch.setattr(training, "evaluate", lambda engine, x, y: passes.append(len(x))
                        or (0.0, np.asarray(y)))
    log = []
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=3, test_each_epoch=False),
                log=log.append)
    rows = read_metrics(run)
    assert ["test_acc" in r for r in rows] == [False, False, True] and len(passes) == 1
    assert rows[-1]["test_acc"] == 1.0 and "test_loss" in rows[-1]
    assert "test" not in log[1] and "test 100.00%" in log[3]  # the epoch lines
    assert checkpoint.load_model(run)[1]["test_accuracy"] == 1.0


@pytest.mark.parametrize("augment", ["none", "shift", "affine", "elastic"])
def test_every_augmentation_trains(synthetic_dataset, tmp_path, augment):
    run = train(config(synthetic_dataset, tmp_path / "run", augment=augment), log=quiet)
    assert json.loads((run / "config.json").read_text())["augment"] == augment
    assert read_metrics(run)[-1]["test_acc"] > 0.5


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("augment", ["none", "shift"])
def test_engine_is_given_each_epochs_inputs(synthetic_dataset, tmp_path, monkeypatch, engine,
                                            augment):
    """Augmented inputs are refilled in place each epoch; every engine must be told (an engine
    that copies to a device would otherwise keep training on the first epoch's)."""
    if engine == "torch":
        pytest.importorskip("torch")
        from lenet5.torch_engine.model import TorchEngine as cls
    else:
        from lenet5.numpy_engine.model import NumpyEngine as cls
    bound = []  # what the engine holds after each binding
    original = cls.bind_training_data
    monkeypatch.setattr(cls, "bind_training_data", lambda self, x, y: (
        original(self, x, y), bound.append(float(self.train_x.sum()))))
    train(config(synthetic_dataset, tmp_path / "run", engine=engine, epochs=3, augment=augment),
          log=quiet)
    if augment == "none":
        assert len(bound) == 1  # the same inputs all along: copied once
    else:
        assert len(bound) == 3 and len(set(bound)) == 3  # fresh distortions every epoch


def test_unknown_augmentation_is_named():
    with pytest.raises(Lenet5Error, match="unknown --augment 'blur'"):
        TrainConfig(augment="blur").validate()


@pytest.mark.parametrize("variant", [{"pool": "avg"}, {"activation": "sigmoid", "pool": "avg"},
                                     {"activation": "tanh"}])
def test_variants_train_and_their_model_files_say_which(synthetic_dataset, tmp_path, variant):
    from lenet5.model import load

    run = train(config(synthetic_dataset, tmp_path / "run", epochs=3, lr=1e-2,
                       schedule="constant", **variant), log=quiet)
    assert read_metrics(run)[-1]["test_acc"] > 0.5
    model = load(run)
    assert {k: model.metadata[k] for k in variant} == variant
    assert {k: getattr(model.arch, k) for k in variant} == variant
    saved = json.loads((run / files.CONFIG_FILE).read_text())
    assert {k: saved[k] for k in variant} == variant


def test_mean_image_normalization_and_normal_init(synthetic_dataset, tmp_path):
    from lenet5.model import load

    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1, normalization="mean_image",
                       init_std=0.05, optimizer="sgd", lr=1e-3, momentum=0.0,
                       schedule="step", step_epochs=1, gamma=0.75), log=quiet)
    model = load(run)
    norm = model.metadata["input_normalization"]
    assert norm["kind"] == "mean_image" and np.array(norm["mean"]).shape == (28, 28)
    x = model.inputs(np.zeros((1, 28, 28), np.uint8))  # (1, 1, 32, 32): minus the mean image
    np.testing.assert_allclose(x[0, 0, 2:-2, 2:-2], -255 * np.array(norm["mean"]), rtol=1e-5)
    assert np.all(x[0, 0, :2] == 0)  # the padding is no image's: nothing subtracted there


def test_step_schedule_takes_its_step_and_factor():
    from lenet5.hparams import Schedule

    s = TrainConfig(schedule="step", lr=0.1, step_epochs=2, gamma=0.5).resolved().schedule_spec()
    assert s == Schedule("step", lr=0.1, step_epochs=2, gamma=0.5)
