"""The training loop on a tiny synthetic dataset: files, resume, divergence, validation."""

import json
import math
import warnings

import numpy as np
import pytest

from lenet5 import checkpoint, files
from lenet5.arch import NONDIGIT
from lenet5.errors import Lenet5Error, TrainingDiverged
from lenet5.files import read_metrics
from lenet5.refusal import CALIBRATION_DIGITS
from lenet5.training import TrainConfig, resume_config, train
from lenet5.workers import can_fork


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
    for name in (files.MODEL_FILE, files.STATE_FILE):  # byte for byte, metadata included
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_divergence_stops_with_advice_and_keeps_last_good_epoch(synthetic_dataset, tmp_path):
    cfg = config(synthetic_dataset, tmp_path / "run", optimizer="sgd", lr=1e12,
                 schedule="constant")
    with pytest.raises(TrainingDiverged, match=r"lower --lr \(now 1e\+12\)"):
        train(cfg, log=quiet)
    assert not (tmp_path / "run").exists()  # no epoch saved: no run left to resume
    train(config(synthetic_dataset, tmp_path / "run", epochs=1), log=quiet)  # train again


@pytest.mark.parametrize("settings, advice", [
    (dict(optimizer="adam", lr=1.0, weight_decay=5.0), "lower --lr (now 1) towards lenet5's "
                                                       "default 0.003"),  # Adam scales steps
    (dict(optimizer="adamw", lr=1.0, weight_decay=5.0), "lower --weight-decay (now 5): with --lr "
                                                        "1 a step takes more than all"),
    (dict(init_std=0.2, lr=0.001), "lower --lr (now 0.001), e.g. to 0.00033"),
])
def test_divergence_advice_names_what_can_make_steps_too_large(settings, advice):
    from lenet5.training import _steadier

    assert _steadier(TrainConfig(**settings).resolved()).startswith(advice)


@pytest.mark.parametrize("settings, advice", [
    (dict(init_std=1e10), r"its training loss is nan; lower --init-std \(now 1e\+10\) to 0.29 "
                          "or less, as wide as lenet5's own initial weights, then train again "
                          r"\(no epoch was saved\)\.$"),
    (dict(optimizer="sgd", lr=0.1, weight_decay=1e6),
     r"lower --weight-decay \(now 1e\+06\): with --lr 0.1 a step takes more than all of each "
     r"weight, and lower --lr \(now 0.1\)"),
    (dict(optimizer="sgd", lr=0.001, schedule="step", step_epochs=1, gamma=1e20, epochs=3),
     r"lower --gamma \(now 1e\+20\) below 1, so that each step lowers the rate, then train "
     r"again into another --out \(.*run keeps epoch 1's model\)\.$"),
    (dict(optimizer="sgd", lr=100, init_std=1e-3, weight_decay=1e-3),  # nothing but the rate
     r"; lower --lr \(now 100\) towards lenet5's default 0.003, then"),
])
def test_divergence_names_the_setting_that_made_the_steps_too_large(
        synthetic_dataset, tmp_path, settings, advice):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warnings stay out of the terminal
        with pytest.raises(TrainingDiverged, match=advice):
            train(config(synthetic_dataset, tmp_path / "run", **settings), log=quiet)


def test_existing_run_is_not_overwritten(synthetic_dataset, tmp_path):
    train(config(synthetic_dataset, tmp_path / "run", epochs=1), log=quiet)
    with pytest.raises(Lenet5Error, match="already holds a training run; pass --resume"):
        train(config(synthetic_dataset, tmp_path / "run", epochs=1), log=quiet)


def test_resume_of_a_directory_that_is_no_run(tmp_path):
    with pytest.raises(Lenet5Error, match="--resume needs a run directory"):
        resume_config(tmp_path)


@pytest.mark.parametrize("field, value, flag", [
    ("epochs", 0, "--epochs"), ("epochs", -0.5, "--epochs"), ("epochs", float("inf"), "--epochs"),
    ("epochs", float("nan"), "--epochs"), ("batch_size", 0, "--batch-size"),
    ("val_size", -1, "--val-size"),
    ("limit", 0, "--limit"), ("arch", "vgg", "unknown architecture"),
])
def test_bad_settings_are_named(field, value, flag):
    with pytest.raises(Lenet5Error, match=flag):
        TrainConfig(**{field: value}).validate()


def test_a_fraction_of_an_epoch_ends_with_a_part_pass_and_the_whole_schedule(
        synthetic_dataset, tmp_path, monkeypatch):
    """--epochs 1.5 (the fast recipe's 2.5): a second pass over the first half of its
    shuffled order, with the schedule's last step at the end of it, and the training accuracy
    of that pass over the digits it saw."""
    from lenet5.numpy_engine.model import NumpyEngine

    steps, learning_rates, digits, correct = [], [], [], []
    step, take = NumpyEngine.train_step, NumpyEngine.take_train_metrics
    monkeypatch.setattr(NumpyEngine, "train_step", lambda self, batch, lr: (
        steps.append(len(batch)), learning_rates.append(lr),
        digits.append(np.count_nonzero(self.train_y[batch] != NONDIGIT)),
        step(self, batch, lr))[-1])
    monkeypatch.setattr(NumpyEngine, "take_train_metrics",
                        lambda self: (metrics := take(self), correct.append(metrics[1]))[0])
    log = []
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1.5, batch_size=40,
                       optimizer="sgd", lr=0.05, schedule="onecycle", nondigits=0.2),
                log=log.append)
    per_pass = 720 // 40  # 600 digits and 120 made-up non-digits
    assert len(steps) == per_pass + per_pass // 2 and set(steps) == {40}
    assert learning_rates[-1] < 1e-3 * max(learning_rates)  # one-cycle ends at the last step
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and "test_acc" in rows[-1]
    assert rows[-1]["train_acc"] == correct[-1] / sum(digits[per_pass:])  # the digits it saw
    assert checkpoint.load_model(run)[1]["epochs"] == 1.5
    assert [line.split("  loss")[0] for line in log if line.startswith("epoch")] == [
        "epoch  1/1.5", "epoch 1.5/1.5"]
    assert "1.5 epochs" in log[-2]
    with pytest.raises(Lenet5Error, match=r"already complete \(1.5 epochs finished\); pass "
                       r"--epochs N with --resume .* more than 1.5 \(one step more: 1.56\)"):
        train(resume_config(run), resume=run, log=quiet)


@pytest.mark.parametrize("settings", [
    dict(optimizer="sgd", lr=0.05, schedule="constant", nondigits=0.2),
    dict(optimizer="sdlm", lr=1e-4, schedule="sdlm"),  # no second curvature in the pass
])
def test_resuming_after_a_part_pass_trains_the_rest_of_that_pass(synthetic_dataset, tmp_path,
                                                                 settings):
    """--epochs 1.5, then --resume --epochs 2: the second pass's other half, in the order the
    first command began it, and the run ends where an --epochs 2 run ends (a schedule that
    does not depend on the run's length, so that both take the same steps); its model file
    says 2 epochs."""
    straight = train(config(synthetic_dataset, tmp_path / "a", epochs=2, **settings), log=quiet)
    part = train(config(synthetic_dataset, tmp_path / "b", epochs=1.5, **settings), log=quiet)
    assert checkpoint.load_state(part / files.STATE_FILE)[2]["epochs"] == 1.5
    log = []
    resumed = train(resume_config(part, epochs=2), resume=part, log=log.append)
    assert log[0] == f"resuming {part} after 1.5 epochs"
    (p1, _), (p2, meta) = checkpoint.load_model(straight), checkpoint.load_model(resumed)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1) and meta["epochs"] == 2
    _, o1, _ = checkpoint.load_state(straight / files.STATE_FILE)
    _, o2, _ = checkpoint.load_state(resumed / files.STATE_FILE)
    assert all(np.array_equal(o1[k], o2[k]) for k in o1)
    assert [r["epoch"] for r in read_metrics(resumed)] == [1, 2]


def test_resuming_with_epochs_that_add_no_step_says_the_run_is_complete(synthetic_dataset,
                                                                        tmp_path):
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1.25), log=quiet)
    # 600 images, 19 steps a pass: 1.25 and 1.26 epochs are both 24 steps
    with pytest.raises(Lenet5Error, match=r"already complete \(1.25 epochs finished\)"):
        train(resume_config(run, epochs=1.26), resume=run, log=quiet)


@pytest.mark.parametrize("epochs, steps, rows", [(1.01, 23, [1]), (1.99, 46, [1, 2])])
def test_epochs_that_round_to_whole_passes_train_them_and_resume_after(
        synthetic_dataset, tmp_path, monkeypatch, epochs, steps, rows):
    """23 steps a pass (digits and non-digits): 1.01 epochs is 23 steps, one pass; 1.99 is 46,
    two. Each
    ends with the test pass, says its --epochs, and --resume --epochs 3 trains the passes
    after the last whole one (no empty pass)."""
    from lenet5.numpy_engine.model import NumpyEngine

    taken = []
    step = NumpyEngine.train_step
    monkeypatch.setattr(NumpyEngine, "train_step",
                        lambda self, batch, lr: (taken.append(1), step(self, batch, lr))[-1])
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=epochs), log=quiet)
    assert len(taken) == steps and [r["epoch"] for r in read_metrics(run)] == rows
    assert "test_acc" in read_metrics(run)[-1]
    assert checkpoint.load_model(run)[1]["epochs"] == epochs
    log = []
    train(resume_config(run, epochs=3), resume=run, log=log.append)
    assert len(taken) == 3 * 23 and [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]
    assert log[0] == f"resuming {run} after {epochs:g} epochs"


def test_a_state_file_without_its_epochs_resumes_a_part_pass_from_its_steps(
        synthetic_dataset, tmp_path):
    """A state file written before it said its epochs: where the run stands comes from the
    optimizer's step count."""
    settings = dict(optimizer="sgd", lr=0.05, schedule="constant")
    straight = train(config(synthetic_dataset, tmp_path / "a", epochs=2, **settings), log=quiet)
    part = train(config(synthetic_dataset, tmp_path / "b", epochs=1.5, **settings), log=quiet)
    _resave_state(part, meta={"epochs": None})
    resumed = train(resume_config(part, epochs=2), resume=part, log=quiet)
    (p1, _), (p2, _) = checkpoint.load_model(straight), checkpoint.load_model(resumed)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)


def test_a_tiny_fraction_of_an_epoch_takes_one_step(synthetic_dataset, tmp_path):
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=0.001), log=quiet)
    [row] = read_metrics(run)
    assert 0 <= row["train_acc"] <= 1 and checkpoint.load_model(run)[1]["epochs"] == 0.001


def test_limit_uses_the_first_images(synthetic_dataset, tmp_path):
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1, limit=64), log=quiet)
    assert json.loads((run / "config.json").read_text())["train_images"] == 64


def test_no_test_each_epoch_measures_the_test_set_after_the_last_only(synthetic_dataset,
                                                                       tmp_path, monkeypatch):
    from lenet5 import training

    passes, measure = [], training.evaluate
    monkeypatch.setattr(training, "evaluate", lambda engine, x, y: passes.append(len(x))
                        or measure(engine, x, y))
    log = []
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=3, test_each_epoch=False),
                log=log.append)
    rows = read_metrics(run)
    assert ["test_acc" in r for r in rows] == [False, False, True] and "test_loss" in rows[-1]
    assert len(passes) == 2  # the untrained network's reference loss, then the last epoch
    epoch_lines = [line for line in log if line.startswith("epoch ")]
    assert "test" not in epoch_lines[0] and "test " in epoch_lines[2]
    assert checkpoint.load_model(run)[1]["test_accuracy"] == rows[-1]["test_acc"]


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


@pytest.mark.skipif(not can_fork(), reason="worker processes are forked (Linux)")
def test_a_run_forks_its_workers_once_and_trains_as_with_threads(synthetic_dataset, tmp_path,
                                                                  monkeypatch):
    """Each epoch's shifted inputs are written over the last epoch's shared array, and the
    labels are shared too: the worker forked at the first step reads them all."""
    from lenet5.numpy_engine import model
    from lenet5.workers import PartWorker

    monkeypatch.setattr(model, "compute_workers", lambda: 2)  # two parts of a batch of 128
    forks = []
    original = PartWorker.__init__
    monkeypatch.setattr(PartWorker, "__init__", lambda self, *args: (
        forks.append(1), original(self, *args))[1])
    weights = []
    for processes in (True, False):
        monkeypatch.setattr(model, "can_fork", lambda p=processes: p)
        run = train(config(synthetic_dataset, tmp_path / f"run-{processes}", epochs=3,
                           batch_size=128, augment="shift"), log=quiet)
        weights.append(checkpoint.load_model(run)[0])
    assert len(forks) == 1
    for name, w in weights[1].items():
        np.testing.assert_array_equal(weights[0][name], w)


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


# --- issue 17: resume checks, one training per directory, divergence, leftovers --------------

def finished_run(dataset, out, **kw):
    """A run directory with two finished epochs."""
    return train(config(dataset, out, **kw), log=quiet)


def resume(run, epochs=None):
    return train(resume_config(run, epochs), resume=run, log=quiet)


def _resave_state(run, *, meta=None, params=None, optimizer=None):
    old_params, old_optimizer, old_meta = checkpoint.load_state(run / files.STATE_FILE)
    checkpoint.save_state(run / files.STATE_FILE, old_params if params is None else params,
                          old_optimizer if optimizer is None else optimizer,
                          {k: v for k, v in {**old_meta, **(meta or {})}.items()
                           if k not in ("format", "format_version", "weights_sha256")
                           and v is not None})


def test_a_state_file_of_another_architecture_is_refused(synthetic_dataset, tmp_path):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    other = finished_run(synthetic_dataset, tmp_path / "old", arch="lenet5-1998", epochs=1)
    (other / files.STATE_FILE).replace(run / files.STATE_FILE)
    with pytest.raises(Lenet5Error, match=r"state\.safetensors was written by a lenet5-1998 "
                                          r"run, but .*config\.json says lenet5"):
        resume(run, 3)


@pytest.mark.parametrize("meta, problem", [
    ({"epoch": None}, "'epoch'"), ({"epoch": "abc"}, "'epoch'"), ({"epoch": "-1"}, "'epoch'"),
    ({"epoch": 5, "epochs": None}, r"epoch 5 .*metrics\.jsonl holds 2"),  # no "epochs": older
    ({"epochs": 3.5}, "'epochs'"), ({"epochs": 1}, "'epochs'"), ({"epochs": "x"}, "'epochs'"),
])
def test_a_bad_epoch_in_the_state_is_refused(synthetic_dataset, tmp_path, meta, problem):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    _resave_state(run, meta=meta)
    with pytest.raises(Lenet5Error, match=problem):
        resume(run, 6)


def test_a_wrong_shape_or_missing_parameter_is_refused(synthetic_dataset, tmp_path):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    params = checkpoint.load_state(run / files.STATE_FILE)[0]
    params["F6.weight"] = np.zeros((84, 3), np.float32)
    del params["C1.bias"]
    _resave_state(run, params=params)
    with pytest.raises(Lenet5Error, match="missing: C1.bias; wrong shape: F6.weight"):
        resume(run, 3)


@pytest.mark.parametrize("change", ["missing", "wrong shape", "another optimizer"])
def test_bad_optimizer_state_is_refused(synthetic_dataset, tmp_path, change):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    optimizer = checkpoint.load_state(run / files.STATE_FILE)[1]
    if change == "missing":
        del optimizer["exp_avg_sq.C3.weight"]
        problem = "missing: exp_avg_sq.C3.weight"
    elif change == "wrong shape":
        optimizer["exp_avg.C3.weight"] = np.zeros(7, np.float32)
        problem = "exp_avg.C3.weight"
    else:
        optimizer = {k.replace("exp_avg_sq", "momentum_buffer"): v for k, v in optimizer.items()
                     if not k.startswith("exp_avg.")}
        problem = "optimizer"
    _resave_state(run, optimizer=optimizer)
    with pytest.raises(Lenet5Error, match=problem):
        resume(run, 3)


@pytest.mark.parametrize("text, problem", [
    ("[1, 2]", r"config\.json holds a list, not a run's settings"),
    ('{"lr": "fast"}', r"'lr' in .*config\.json is 'fast', not a number"),
    ('{"epochs": "2"}', r"'epochs' in .*config\.json is '2', not a number"),
    ('{"batch_size": 2.5}', r"'batch_size' in .*config\.json is 2\.5, not a whole number"),
    ('{"arch": 5}', r"'arch' in .*config\.json is 5, not a string"),
    ('{"seed": true}', r"'seed' in .*config\.json is True, not a whole number"),
])
def test_a_config_of_wrong_types_is_refused(synthetic_dataset, tmp_path, text, problem):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    saved = json.loads((run / files.CONFIG_FILE).read_text())
    edit = json.loads(text)
    new = edit if isinstance(edit, list) else {**saved, **edit}
    (run / files.CONFIG_FILE).write_text(json.dumps(new))
    with pytest.raises(Lenet5Error, match=problem):
        resume(run, 3)


def test_unknown_config_keys_are_fine(synthetic_dataset, tmp_path):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    saved = json.loads((run / files.CONFIG_FILE).read_text())
    (run / files.CONFIG_FILE).write_text(json.dumps({**saved, "notes": [1, 2], "gpu": None}))
    resume(run, 3)
    assert len(read_metrics(run)) == 3


@pytest.mark.parametrize("epochs, problem", [(1, "already has 2 epochs finished"),
                                             (None, r"is already complete \(2 epochs fin"),
                                             (2, r"is already complete \(2 epochs fin")])
def test_resuming_a_run_that_has_its_epochs_says_so_and_writes_nothing(
        synthetic_dataset, tmp_path, epochs, problem):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(Lenet5Error, match=problem):
        resume(run, epochs)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_run_directory_being_trained_is_refused_naming_the_process(synthetic_dataset,
                                                                     tmp_path):
    from test_files import _hold_lock

    holder = _hold_lock(tmp_path / "run")
    try:
        with pytest.raises(Lenet5Error, match=rf"being written by process {holder.pid}"):
            finished_run(synthetic_dataset, tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    finished_run(synthetic_dataset, tmp_path / "run")  # the killed holder's lock is gone
    assert not (tmp_path / "run" / files.LOCK_FILE).exists()


def test_stale_temporaries_are_removed_on_resume(synthetic_dataset, tmp_path):
    run = finished_run(synthetic_dataset, tmp_path / "run")
    stale = run / f".{files.MODEL_FILE}.a1b2c3d4.tmp"
    stale.write_bytes(b"half a model")
    resume(run, 3)
    assert not stale.exists() and not list(run.glob(".*.tmp"))


def test_a_lone_model_file_in_out_is_not_overwritten(synthetic_dataset, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / files.MODEL_FILE).write_bytes(b"someone's model")
    with pytest.raises(Lenet5Error, match=r"already holds .*model\.safetensors"):
        finished_run(synthetic_dataset, tmp_path / "run")
    assert (tmp_path / "run" / files.MODEL_FILE).read_bytes() == b"someone's model"


@pytest.mark.parametrize("name", [files.CONFIG_FILE, files.METRICS_FILE])
def test_a_user_s_settings_or_metrics_in_out_are_not_overwritten(synthetic_dataset, tmp_path,
                                                                 name):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name).write_text('{"mine": 1}')
    with pytest.raises(Lenet5Error, match=f"already holds {name}, which a new run would "
                                          "overwrite; choose another --out"):
        finished_run(synthetic_dataset, tmp_path / "run")
    assert (tmp_path / "run" / name).read_text() == '{"mine": 1}'


def stopped_in_first_epoch(dataset: str, directory) -> None:
    """A run into `directory` stopped (Ctrl-C) as its first epoch begins: config.json alone."""
    def killed_in_first_epoch(line: str) -> None:
        if line.startswith("training"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config(dataset, directory), log=killed_in_first_epoch)
    assert not (directory / files.STATE_FILE).exists()


def test_resume_before_any_epoch_finished_starts_the_run_again(synthetic_dataset, tmp_path):
    stopped_in_first_epoch(synthetic_dataset, tmp_path / "run")
    resume(tmp_path / "run")
    assert len(read_metrics(tmp_path / "run")) == 2


def test_a_run_stopped_in_its_first_epoch_may_be_started_anew(synthetic_dataset, tmp_path):
    """No epoch of it was saved: a new run in its folder, with other settings, loses nothing."""
    stopped_in_first_epoch(synthetic_dataset, tmp_path / "run")
    train(config(synthetic_dataset, tmp_path / "run", epochs=1, seed=5), log=quiet)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 5


@pytest.mark.parametrize("full_at, advice", [
    (3, "starts it again (no epoch had been saved)"),  # config, epoch 1's model, its metrics
    (6, "continues the run after 1 epoch"),  # ... epoch 1's state, epoch 2's model, metrics
])
def test_a_full_disk_advises_a_resume_that_works(synthetic_dataset, tmp_path, monkeypatch,
                                                 full_at, advice):
    import errno
    import os

    calls = []

    def fsync_until_the_disk_fills(fd):
        calls.append(fd)
        if len(calls) == full_at:
            raise OSError(errno.ENOSPC, "No space left on device")

    run = tmp_path / "run"
    with monkeypatch.context() as patch, \
            pytest.raises(Lenet5Error, match=rf"free some disk space.*--resume {run}") as raised:
        patch.setattr(os, "fsync", fsync_until_the_disk_fills)
        train(config(synthetic_dataset, run), log=quiet)
    assert advice in str(raised.value)
    resume(run)
    assert len(read_metrics(run)) == 2


def test_a_full_disk_in_a_sweep_s_run_advises_the_sweep(synthetic_dataset, tmp_path,
                                                        monkeypatch):
    """A sweep's run had been told to go on with `lenet5 train --resume`."""
    import errno
    import os

    calls = []

    def fsync_until_the_disk_fills(fd):
        calls.append(fd)
        if len(calls) == 6:  # epoch 2's model
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync_until_the_disk_fills)
    with pytest.raises(Lenet5Error, match=r"free some disk space or write somewhere else; then "
                                          r"the same `lenet5 sweep` command continues the run "
                                          r"after 1 epoch\.$"):
        train(config(synthetic_dataset, tmp_path / "run"), log=quiet,
              resumed_by="the same `lenet5 sweep` command")


def test_other_write_errors_do_not_advise_disk_space(synthetic_dataset, tmp_path, monkeypatch):
    import errno
    import os

    def denied(fd):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "fsync", denied)
    with pytest.raises(Lenet5Error, match="permission") as raised:
        train(config(synthetic_dataset, tmp_path / "run"), log=quiet)
    assert "disk space" not in str(raised.value) and "--resume" not in str(raised.value)


def test_divergence_in_the_first_epoch_claims_no_good_epoch(synthetic_dataset, tmp_path):
    cfg = config(synthetic_dataset, tmp_path / "run", optimizer="sgd", lr=1e12,
                 schedule="constant")
    with pytest.raises(TrainingDiverged) as raised:
        train(cfg, log=quiet)
    assert "last good epoch" not in str(raised.value) and "keeps" not in str(raised.value)


def test_weights_blown_up_by_the_last_step_stop_with_advice(synthetic_dataset, tmp_path):
    """One step at --lr 1e300: its loss, measured before the step, was finite, and the run
    had saved a model of NaN weights, its threshold NaN, tested at chance with warnings."""
    cfg = config(synthetic_dataset, tmp_path / "run", lr=1e300, epochs=1, batch_size=10_000)
    with pytest.raises(TrainingDiverged, match=r"in epoch 1: its weights are no longer finite "
                                               r"numbers; lower --lr \(now 1e\+300\)"):
        train(cfg, log=quiet)
    assert not (tmp_path / "run").exists()


def test_a_finite_blow_up_of_the_loss_stops_with_advice(synthetic_dataset, tmp_path):
    """--lr 1e6 with Adam: the loss reaches ~1e30 but stays finite."""
    cfg = config(synthetic_dataset, tmp_path / "run", lr=1e6, epochs=3)
    with pytest.raises(TrainingDiverged, match=r"training diverged in epoch 1: .*times the "
                                               r"untrained network's .*lower --lr \(now 1e\+06"):
        train(cfg, log=quiet)
    assert not (tmp_path / "run" / files.MODEL_FILE).exists()


def test_chance_accuracy_after_an_epoch_stops_with_advice(synthetic_dataset, tmp_path):
    """lenet5-1998 at --lr 10 saturates: a bounded loss, one class for every image."""
    cfg = config(synthetic_dataset, tmp_path / "run", arch="lenet5-1998", lr=10, epochs=4,
                 batch_size=16)
    with pytest.raises(TrainingDiverged, match=r"training diverged in epoch \d: training "
                                               r"accuracy .* chance .*lower --lr \(now 10") \
            as raised:
        train(cfg, log=quiet)
    assert f"{tmp_path / 'run'} keeps epoch" in str(raised.value)


@pytest.mark.parametrize("field, value, flag", [
    ("seed", -1, "--seed must be at least 0"),
    ("momentum", -1.0, "--momentum"), ("momentum", float("nan"), "--momentum"),
    ("momentum", 1.5, "--momentum"), ("weight_decay", -1.0, "--weight-decay"),
    ("weight_decay", float("inf"), "--weight-decay"), ("lr", float("inf"), "--lr"),
    ("lr", float("nan"), "--lr"), ("refusal_error", 0.0, "--refusal-error"),
    ("refusal_error", 1.0, "--refusal-error"), ("refusal_error", float("nan"), "--refusal-error"),
    ("calibration_digits", 99, "--calibration-digits must be at least 100"),
])
def test_hyper_parameters_are_checked_before_training(field, value, flag):
    kw = {"optimizer": "sgd"} if field == "momentum" else {}
    with pytest.raises(Lenet5Error, match=flag):
        TrainConfig(**{field: value, **kw}).validate()


def test_momentum_with_adam_is_refused():
    with pytest.raises(Lenet5Error, match="--momentum applies to --optimizer sgd only"):
        TrainConfig(optimizer="adam", momentum=0.5).validate()
    with pytest.raises(Lenet5Error, match="--momentum applies to --optimizer sgd only"):
        TrainConfig(momentum=0.5).validate()  # the default optimizer is adam
    TrainConfig(optimizer="sgd", momentum=0.5).validate()


@pytest.mark.parametrize("options, message", [
    ({"optimizer": "sgd", "beta1": 0.8}, "--beta1 applies to --optimizer adam or adamw only"),
    ({"optimizer": "sdlm", "beta2": 0.99}, "--beta2 applies to --optimizer adam or adamw only "
     r"\(this run uses sdlm\); drop --beta2 or add --optimizer adam"),
])
def test_settings_of_another_optimizer_are_refused(options, message):
    with pytest.raises(Lenet5Error, match=message):
        TrainConfig(**options).validate()
    TrainConfig(**options).validate(new_run=False)  # a resumed run's config.json holds them all
    TrainConfig(**{**options, "optimizer": "adamw"}).validate()  # the optimizer that takes it


def test_no_nesterov_with_adam_asks_for_nothing_and_is_let_through():
    TrainConfig(optimizer="adam", nesterov=False).validate()
    with pytest.raises(Lenet5Error, match="--momentum applies"):  # 0 is a value given
        TrainConfig(optimizer="adam", momentum=0.0).validate()


@pytest.mark.parametrize("epoch, loss, accuracy, lr, verdict", [
    (1, 0.9, 0.70, 3e-3, None),  # a healthy run
    (0, 2.30, 0.10, 1.0, None),  # the first epoch is never judged on accuracy
    (1, 2.70, 0.10, 1e-4, None),  # at chance but learning: the loss fell from 3.0
    (1, 2.99, 0.10, 1.0, "diverged in epoch 2: training accuracy is 10.0%.*lower --lr"),
    (1, 2.99, 0.10, 1e-4, "stalled in epoch 2: .*try lenet5's default settings"),
    (1, 46.5, 0.80, 3e-3, "diverged in epoch 2: its training loss 46.5 is over 10 times"),
    (1, float("nan"), 0.10, 3e-3, "diverged in epoch 2: its training loss is nan"),
])
def test_progress_checks_tell_divergence_from_slow_learning(tmp_path, epoch, loss, accuracy, lr,
                                                           verdict):
    from types import SimpleNamespace

    from lenet5.training import Run, check_progress

    cfg = TrainConfig(lr=lr, optimizer="sgd").resolved()
    run = Run(tmp_path, engine=None, run_config={}, steps_per_epoch=469, steps_done=0,
              untrained_loss=4.6,
              metrics=[{"epoch": 1, "train_loss": 3.0}][:epoch])
    data = SimpleNamespace(train_labels=np.arange(60000) % 10, digits=60000)
    if verdict is None:
        check_progress(cfg, run, data, epoch, loss, accuracy)
    else:
        with pytest.raises(TrainingDiverged, match=verdict):
            check_progress(cfg, run, data, epoch, loss, accuracy)


def test_refusal_flags_reach_the_calibration(synthetic_dataset, tmp_path):
    from lenet5.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", synthetic_dataset, "--epochs", "1", "--refusal-error",
                 "0.05", "--calibration-digits", "300", "--out", str(out), "--no-report",
                 "--json"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["refusal_error"], saved["calibration_digits"]) == (0.05, 300)
    refusal = checkpoint.load_model(out)[1]["refusal"]
    assert (refusal["target_error"], refusal["digits"]) == (0.05, 300)


@pytest.mark.parametrize("field, value, words", [
    ("arch", "vgg", "unknown architecture 'vgg'"), ("batch_size", 0, "--batch-size must be at "
                                                    "least 1, got 0")])
def test_a_resumed_run_s_impossible_setting_names_its_config_json(synthetic_dataset, tmp_path,
                                                                  field, value, words):
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1), log=quiet)
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, field: value}))
    with pytest.raises(Lenet5Error, match=f"{run / 'config.json'} holds a setting lenet5 cannot "
                                          f"train with \\({words}.*\\); restore the config.json"):
        resume_config(run, epochs=2)


def test_a_run_saved_before_calibration_digits_existed_resumes_with_the_default(
        synthetic_dataset, tmp_path):
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1, calibration_digits=200),
                log=quiet)
    saved = json.loads((run / "config.json").read_text())
    del saved["calibration_digits"]  # as config.json was written before the option
    (run / "config.json").write_text(json.dumps(saved))
    train(resume_config(run, epochs=2), resume=run, log=quiet)
    assert checkpoint.load_model(run)[1]["refusal"]["digits"] == min(
        CALIBRATION_DIGITS, saved["train_images"])


def test_a_refusal_target_no_threshold_meets_is_said(synthetic_dataset, tmp_path):
    """A network barely trained reads its calibration digits wrong at any threshold."""
    log = []
    train(config(synthetic_dataset, tmp_path / "run", epochs=0.05, optimizer="sgd", lr=1e-6),
          log=log.append)
    assert log[-1].endswith("at any threshold: the network has not learned enough to say "
                            "which are digits")


def test_one_validation_digit_calibrates_on_it_alone(synthetic_dataset, tmp_path):
    """Half of one calibration digit is no non-digit: none is measured, and the run ends."""
    run = train(config(synthetic_dataset, tmp_path / "run", epochs=1, val_size=1), log=quiet)
    refusal = checkpoint.load_model(run)[1]["refusal"]
    assert refusal["digits"] == 1 and refusal["nondigits_refused"] is None


def test_training_with_non_digits_calibrates_a_refusal_threshold(synthetic_dataset, tmp_path):
    """Made-up non-digits join the training set (train_acc still counts digits only) and the
    run ends by storing a refusal threshold calibrated on digits it did not train on."""
    run = train(config(synthetic_dataset, tmp_path / "run", val_size=100, nondigits=0.5,
                       refusal_error=0.05), log=quiet)
    rows = read_metrics(run)
    correct = rows[-1]["train_acc"] * 500  # of the 500 digits, not the 250 non-digits too
    assert correct == pytest.approx(round(correct)) and 0 < correct <= 500
    assert json.loads((run / "config.json").read_text())["train_images"] == 500
    _, meta = checkpoint.load_model(run)
    refusal = meta["refusal"]
    assert 0.0 < refusal["threshold"] < 1.0 and refusal["digits"] == 100
    assert refusal["target_error"] == 0.05  # --refusal-error, as stated
    assert refusal["calibrated_on"] == "the validation split"
    for bad in (-1.0, 1.5, math.nan, math.inf, 1e12):  # nan and inf had given tracebacks,
        with pytest.raises(Lenet5Error, match=(  # 1e12 asked for terabytes
                rf"--nondigits must be between 0 and 1 \(a share of the training set\), got "
                rf"{bad}\.")):
            train(config(synthetic_dataset, tmp_path / "bad", nondigits=bad), log=quiet)
    TrainConfig(nondigits=2.0).validate(new_run=False)  # a run started before the bound resumes


@pytest.mark.parametrize("epochs", [1, 1.5])
def test_a_run_stopped_while_calibrating_resumes_with_the_calibration_alone(
        synthetic_dataset, tmp_path, monkeypatch, epochs):
    """Every epoch is saved before the calibration; stopped there, the model file has no
    threshold, and --resume (as the interruption advises) calibrates it without training."""
    from lenet5 import training
    from lenet5.numpy_engine.model import NumpyEngine

    straight = train(config(synthetic_dataset, tmp_path / "a", epochs=epochs), log=quiet)
    calibrate = training.calibrate_model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "calibrate_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config(synthetic_dataset, tmp_path / "b", epochs=epochs), log=quiet)
    stopped = tmp_path / "b"
    assert "refusal" not in checkpoint.load_model(stopped)[1]
    monkeypatch.setattr(training, "calibrate_model", calibrate)
    monkeypatch.setattr(NumpyEngine, "train_step", lambda *_: pytest.fail("trained again"))
    log = []
    train(resume_config(stopped), resume=stopped, log=log.append)
    assert log[1] == "every epoch of it had finished; calibrating its 'not a digit' threshold"
    assert (stopped / files.MODEL_FILE).read_bytes() == (straight / files.MODEL_FILE).read_bytes()
    assert [r["epoch"] for r in read_metrics(stopped)] == [
        r["epoch"] for r in read_metrics(straight)]
    with pytest.raises(Lenet5Error, match="already complete"):
        train(resume_config(stopped), resume=stopped, log=quiet)


@pytest.mark.parametrize(("nondigits", "said"), [
    (0.2, "on 600 synthetic images and 120 made-up non-digits for 1 epoch -> "),
    (0.0, "on 600 synthetic images for 1 epoch -> ")])
def test_the_first_line_counts_the_made_up_non_digits(synthetic_dataset, tmp_path, nondigits,
                                                      said):
    """An epoch of the default recipe holds them beside the images: its length says so."""
    lines = []
    train(config(synthetic_dataset, tmp_path / "run", epochs=1, nondigits=nondigits),
          log=lines.append)
    assert said in lines[0]


@pytest.mark.parametrize("epochs, left", [(2, (files.MODEL_FILE, files.METRICS_FILE)),
                                          (2, (files.MODEL_FILE,)), (2, (files.METRICS_FILE,)),
                                          (1, (files.MODEL_FILE, files.METRICS_FILE))])
def test_a_run_without_its_state_file_is_not_trained_over(synthetic_dataset, tmp_path, epochs,
                                                           left):
    """Its finished epochs would be lost to a fresh start: resuming it is refused, and the
    files are left as they were (a finished one-epoch run: its model is calibrated)."""
    run = finished_run(synthetic_dataset, tmp_path / "run", epochs=epochs)
    for name in {files.STATE_FILE, files.MODEL_FILE, files.METRICS_FILE} - set(left):
        (run / name).unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(Lenet5Error, match=r"holds finished epochs but no state\.safetensors, .*"
                                          r"move its model\.safetensors and metrics\.jsonl away"):
        resume(run, 3)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.parametrize("written", [1, 2])  # the model; the model and the metrics
def test_a_run_stopped_inside_its_first_epochs_save_starts_again(synthetic_dataset, tmp_path,
                                                                 monkeypatch, written):
    """The save writes the model, the metrics, then the state: stopped before the state, the
    run has no epoch to go on from, and --resume trains it from the start."""
    write_atomic = files.write_atomic
    calls = []

    def stopped(path, data):
        calls.append(path)
        if len(calls) == 2 + written:  # config.json first, then the save
            raise KeyboardInterrupt
        write_atomic(path, data)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(files, "write_atomic", stopped)
        patch.setattr(checkpoint, "write_atomic", stopped)
        train(config(synthetic_dataset, tmp_path / "run"), log=quiet)
    run = tmp_path / "run"
    assert (run / files.MODEL_FILE).exists() and not (run / files.STATE_FILE).exists()
    log = []
    train(resume_config(run), resume=run, log=log.append)
    assert log[0] == f"no epoch of {run} had finished; starting it from the beginning"
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


@pytest.mark.parametrize("steps, per_epoch, written", [(8446, 563, "15.002"), (14, 9, "1.6"),
                                                       (1, 469, "0.002"), (938, 469, "2")])
def test_the_epochs_for_a_number_of_steps_are_the_shortest_that_take_them(steps, per_epoch,
                                                                          written):
    from lenet5.training import _epochs_for, _steps_in

    assert _epochs_for(steps, per_epoch) == written
    assert _steps_in(float(written), per_epoch) == steps


@pytest.mark.parametrize("refusal, words", [
    ({"threshold": 0.3933, "refused": 0.0321, "error_accepted": 0.0159, "target_error": 0.016},
     "below a probability of 0.393, calibrated on training digits, each redrawn as if cut out "
     "of a written number (harder than a photo of one digit): 321 of 10,000 refused, 1.59% of "
     "the rest read wrong"),
    ({"threshold": 5.1e-06, "refused": 0.954, "error_accepted": 0.01, "target_error": 0.016},
     "below a probability of 5.1e-06,"),  # not "0.000", which reads as refusing nothing
    ({"threshold": 0.99, "refused": 0.9999, "error_accepted": 1.0, "target_error": 0.016},
     "9,999 of 10,000 refused, 100.00% of the rest read wrong, more than --refusal-error 1.6% "
     "at any threshold: the network has not learned enough to say which are digits"),
])
def test_the_refusal_line_says_what_was_calibrated(refusal, words):
    from lenet5.training import _describe_refusal

    line = _describe_refusal({**refusal, "digits": 10000, "calibrated_on": "training digits"})
    assert words in line and line.count(". ") == 0
