"""One training loop for every engine and architecture.

It knows data, epochs, schedules, metrics and files; the network itself sits behind
``lenet5.engine.Engine``. Randomness is derived from (seed, epoch), so a run resumed from its
last finished epoch replays exactly the batches an uninterrupted run would have seen.

``train`` reads top to bottom: the data (``load_training_data``), the run directory and its
engine, new or resumed (``start_run``), then each epoch (``train_epoch``) and its files
(``save_epoch``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, files
from .arch import Architecture, get_arch, init_params
from .data import datasets
from .data.nondigits import with_nondigits
from .data.transforms import (
    NORMALIZATIONS,
    input_normalization,
    prepare_inputs,
    split_validation,
)
from .engine import Engine, evaluate, make_engine
from .errors import Lenet5Error, TrainingDiverged
from .hparams import (
    AUGMENTATIONS,
    OPTIMIZER_OPTIONS,
    OPTIMIZER_SLOTS,
    SDLM_SAMPLES,
    OptimizerSpec,
    Schedule,
    defaults_for,
)
from .model import Model
from .refusal import (
    CALIBRATION_DIGITS,
    METADATA_KEY,
    TARGET_ERROR,
    calibrate_model,
    calibrated,
)
from .threads import over_blocks, shared_copy, shared_empty
from .version import __version__

Log = Callable[[str], None]
INPUT_CHUNK = 2048  # images prepared at a time: the float32 inputs of a chunk take 8 MiB
# Random streams, np.random.default_rng([seed, stream]), besides the shuffling ([seed, epoch]):
DISTORTION_STREAM = 1  # with the epoch: that epoch's distortions
NONDIGIT_STREAM = 2  # the made-up non-digits added to the training set
CALIBRATION_STREAM = 3  # the redrawn digits and non-digits the refusal is calibrated on
# Fewer calibration digits than this leave the threshold to a handful of wrong readings (at the
# default 1.6% error, 100 digits allow 1.6 wrong ones).
MIN_CALIBRATION_DIGITS = 100
# --nondigits adds at most as many made-up non-digits as there are digits (the default: 0.2)
MAX_NONDIGITS = 1.0
# each optimizer-specific setting -> the optimizers that take it
OPTIMIZERS_TAKING = {name: [o for o, names in OPTIMIZER_OPTIONS.items() if name in names]
                     for names in OPTIMIZER_OPTIONS.values() for name in names}


@dataclass
class TrainConfig:
    """A run's settings. Hyper-parameters left None take ``hparams.defaults_for(arch)``."""

    arch: str = "lenet5"
    pool: str | None = None  # the modern network's variants; None: the architecture's own
    activation: str | None = None
    engine: str = "numpy"
    device: str = "auto"
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: float | None = None  # a fraction: the last pass over part of the data
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    step_epochs: int | None = None
    gamma: float | None = None
    init_std: float | None = None  # weights N(0, init_std^2) instead of the architecture's init
    nondigits: float | None = None  # made-up non-digits added, as a share of the training set
    normalization: str | None = None  # data.transforms.NORMALIZATIONS; None: the arch's
    seed: int = 0
    augment: str | None = None
    val_size: int = 0
    refusal_error: float = TARGET_ERROR  # calibration: wrong digits allowed among those accepted
    calibration_digits: int = CALIBRATION_DIGITS  # calibration: redrawn digits it is set on
    limit: int | None = None
    test_each_epoch: bool | None = None  # False: the test set after the last epoch only
    out: str | None = None

    def architecture(self) -> Architecture:
        return get_arch(self.arch, self.pool, self.activation)

    def resolved(self) -> TrainConfig:
        """A copy with every None setting replaced by the architecture's default."""
        arch = self.architecture()
        defaults = {**defaults_for(self.arch), **arch.variant,
                    "normalization": arch.input_normalization}
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **filled)

    def validate(self, new_run: bool = True) -> None:
        """Every setting in range before any work; ``new_run``: also refuse settings the
        optimizer would ignore (a resumed run's config.json holds every default)."""
        limit = 1 if self.limit is None else self.limit
        if self.epochs is not None and not 0 < self.epochs < math.inf:
            raise Lenet5Error(f"--epochs must be a positive number, got {self.epochs}.")
        for flag, value, low in (("--batch-size", self.batch_size, 1),
                                 ("--val-size", self.val_size, 0), ("--limit", limit, 1),
                                 ("--seed", self.seed, 0),
                                 ("--calibration-digits", self.calibration_digits,
                                  MIN_CALIBRATION_DIGITS)):
            if value is not None and value < low:
                raise Lenet5Error(f"{flag} must be at least {low}, got {value}.")
        if self.nondigits is not None and not 0 <= self.nondigits <= (  # runs started before
                MAX_NONDIGITS if new_run else sys.float_info.max):  # the bound still resume
            raise Lenet5Error(f"--nondigits must be between 0 and {MAX_NONDIGITS:g} (a share of "
                              f"the training set), got {self.nondigits}.")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise Lenet5Error(f"unknown --augment {self.augment!r}; choose one of: "
                              f"{', '.join(AUGMENTATIONS)}.")
        if self.normalization is not None and self.normalization not in NORMALIZATIONS:
            raise Lenet5Error(f"unknown --normalization {self.normalization!r}; choose one of: "
                              f"{', '.join(NORMALIZATIONS)}.")
        if not 0.0 < self.refusal_error < 1.0:
            raise Lenet5Error(f"--refusal-error must be between 0 and 1 (a share of digits), "
                              f"got {self.refusal_error}.")
        if self.init_std is not None and not self.init_std > 0:
            raise Lenet5Error(f"--init-std must be positive, got {self.init_std}.")
        resolved = self.resolved()
        resolved.optimizer_spec()
        resolved.schedule_spec()
        if new_run:
            self._refuse_other_optimizers_settings(resolved.optimizer)

    def _refuse_other_optimizers_settings(self, optimizer: str) -> None:
        """Refuse a setting of an optimizer this run does not use: it would be ignored."""
        for name in self._other_optimizers_settings(optimizer):
            takers = OPTIMIZERS_TAKING[name]
            flag = "--" + name.replace("_", "-")
            raise Lenet5Error(f"{flag} applies to --optimizer {' or '.join(takers)} only "
                              f"(this run uses {optimizer}); drop {flag} or add "
                              f"--optimizer {takers[0]}.")

    def _other_optimizers_settings(self, optimizer: str) -> list[str]:
        """The settings given that `optimizer` does not take (--no-nesterov, which asks for
        nothing, is not one)."""
        given = {name: getattr(self, name) for name in OPTIMIZERS_TAKING}
        return [name for name, value in given.items()  # identity: --momentum 0 is given
                if value is not None and value is not False
                and optimizer not in OPTIMIZERS_TAKING[name]]

    def without_other_optimizers_settings(self) -> TrainConfig:
        """A copy without the settings its optimizer does not take: for a sweep whose grid
        varies the optimizer, where the base's --beta1 is meant for the Adam runs only."""
        unused = self._other_optimizers_settings(self.resolved().optimizer)
        return dataclasses.replace(self, **dict.fromkeys(unused))

    def optimizer_spec(self) -> OptimizerSpec:
        return OptimizerSpec(name=self.optimizer, momentum=self.momentum, nesterov=self.nesterov,
                             weight_decay=self.weight_decay, beta1=self.beta1, beta2=self.beta2)

    def schedule_spec(self) -> Schedule:
        return Schedule(name=self.schedule, lr=self.lr, step_epochs=self.step_epochs,
                        gamma=self.gamma)


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return files.RUNS_DIR / f"{config.arch}-{config.engine}-{stamp}"


def run_directory(config: TrainConfig, resume: str | Path | None) -> Path:
    return Path(resume or config.out or default_run_dir(config))


# --- data ---------------------------------------------------------------------------------

@dataclass
class TrainingData:
    """What a run learns from and is measured on. The training images stay uint8 (N, 28, 28)
    until an epoch needs them, distorted or not; validation and test inputs are prepared."""

    train_images: np.ndarray  # (N, 28, 28) uint8: the digits, then the made-up non-digits
    train_labels: np.ndarray  # (N,) int64, arch.NONDIGIT for a non-digit
    digits: int  # how many of them are digits (what training accuracy counts)
    normalization: dict  # how 28x28 images become network inputs (stored in model files)
    classes: list[str]
    x_val: np.ndarray | None  # (V, 1, 32, 32) float32, or None without --val-size
    y_val: np.ndarray  # (V,) int64
    x_test: np.ndarray  # (T, 1, 32, 32) float32
    y_test: np.ndarray  # (T,) int64
    calibration: tuple[np.ndarray, np.ndarray, str]  # digits, labels, what they are (refusal)


def load_training_data(config: TrainConfig, arch: Architecture, log: Log) -> TrainingData:
    data, (images, labels), (val_images, val_labels) = _training_digits(config, log)
    norm = input_normalization(arch, images, config.normalization)
    calibration = _calibration_digits(images, labels, val_images, val_labels)
    train_images, train_labels = with_nondigits(  # the non-digits teach the network to refuse
        images, labels, config.nondigits, np.random.default_rng([config.seed, NONDIGIT_STREAM]))
    return TrainingData(
        train_images=train_images, train_labels=train_labels, digits=len(images),
        normalization=norm, classes=list(data.classes),
        x_val=prepare_inputs(val_images, norm) if len(val_images) else None,
        y_val=val_labels.astype(np.int64),
        x_test=prepare_inputs(data.test_images, norm), y_test=data.test_labels.astype(np.int64),
        calibration=calibration)


def _training_digits(config: TrainConfig, log: Log
                     ) -> tuple[datasets.Dataset, tuple[np.ndarray, np.ndarray],
                                tuple[np.ndarray, np.ndarray]]:
    """The dataset, and its training digits (images, labels) split into the ones trained on
    and the validation split (empty without --val-size)."""
    data = datasets.load(config.dataset, config.data_dir, log=log)
    images, labels = data.train_images, data.train_labels
    if config.limit:
        images, labels = images[:config.limit], labels[:config.limit]
    images, labels, val_images, val_labels = split_validation(images, labels, config.val_size,
                                                              config.seed)
    return data, (images, labels), (val_images, val_labels)


def _calibration_digits(images: np.ndarray, labels: np.ndarray, val_images: np.ndarray,
                        val_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """What the refusal is calibrated on: digits the network did not train on, never the
    test set -- the validation split, else training digits redrawn (refused as often as
    unseen ones); (digits, labels, what they are)."""
    return ((val_images, val_labels, "the validation split") if len(val_images)
            else (images, labels, "training digits (there is no validation split)"))


class EpochInputs:
    """Binds each epoch's training inputs to the engine: the clean inputs once, or fresh random
    distortions every epoch, written over the previous epoch's array. Inputs are made in
    chunks that stay in the CPU's caches, on one thread per core (``threads.over_blocks``).
    The inputs and labels are in shared memory (``threads.shared_empty``): an engine's worker
    processes, forked from this one, read each epoch's inputs as they are rewritten, so they
    need not be forked again, and rewriting them copies no page a worker still maps."""

    def __init__(self, config: TrainConfig, data: TrainingData, engine: Engine):
        self.config, self.data, self.engine = config, data, engine
        n = len(data.train_images)
        self.inputs = shared_empty((n, 1, *[28 + 2 * data.normalization["pad"]] * 2),
                                   np.float32)
        self.labels = shared_copy(data.train_labels)
        if config.augment == "none":  # every epoch reads the same inputs
            self._prepare(lambda part: data.train_images[part])
            engine.bind_training_data(self.inputs, self.labels)

    def _prepare(self, images_of: Callable[[slice], np.ndarray]) -> None:
        """self.inputs[part] = the prepared ``images_of(part)``, for chunks of every image."""
        over_blocks(len(self.inputs), INPUT_CHUNK, lambda part: prepare_inputs(
            images_of(part), self.data.normalization, out=self.inputs[part]))

    def bind(self, epoch: int) -> None:
        if self.config.augment == "none":
            return
        from .data.distortions import distort, shift_by, shift_offsets

        rng = np.random.default_rng([self.config.seed, epoch, DISTORTION_STREAM])
        images = self.data.train_images
        if self.config.augment == "shift":  # shifted chunk by chunk, as they are prepared
            offsets = shift_offsets(len(images), rng)
            self._prepare(lambda part: shift_by(images[part], offsets[:, part]))
        else:
            distorted = distort(images, rng, elastic=self.config.augment == "elastic")
            self._prepare(lambda part: distorted[part])
        self.engine.bind_training_data(self.inputs, self.labels)


# --- the run: new or resumed ----------------------------------------------------------------

@dataclass
class Run:
    directory: Path
    engine: Engine
    run_config: dict  # what config.json holds: the settings plus facts about the run
    metrics: list[dict]  # one row per finished epoch
    steps_per_epoch: int  # training steps in a whole pass
    steps_done: int  # training steps taken before this command (a part pass's included)
    untrained_loss: float  # what a healthy run's training loss falls from (``check_progress``)
    refusal: dict | None = None  # the calibrated "not a digit" threshold, once training is done


def start_run(config: TrainConfig, arch: Architecture, data: TrainingData,
              resume: str | Path | None, log: Log) -> Run:
    """The run directory and its engine: fresh weights, or the state of the last finished
    epoch when resuming (fresh weights again if none had finished). Writes config.json."""
    directory = run_directory(config, resume)
    params = fresh = init_params(arch, config.seed, config.init_std)
    optimizer_state, steps_done, metrics = None, 0, []
    steps_per_epoch = _steps_per_epoch(config, data)
    if resume is None:
        _refuse_existing_run(directory)
    elif (resumed := _resume_state(directory, config, arch, steps_per_epoch)) is not None:
        params, optimizer_state, trained, steps_done, metrics = resumed
        log(f"resuming {directory} after {_epochs(trained)}")
    else:
        log(f"no epoch of {directory} had finished; starting it from the beginning")
    engine = make_engine(config.engine, arch, params, config.optimizer_spec(), config.device)
    if optimizer_state is not None:
        engine.load_optimizer_state(optimizer_state)
    run_config = {**dataclasses.asdict(config), "input_normalization": data.normalization,
                  "classes": data.classes, "train_images": data.digits,
                  "device": engine.device, "lenet5_version": __version__,
                  "python": platform.python_version(), "machine": platform.machine()}
    files.write_atomic(directory / files.CONFIG_FILE,
                       json.dumps(run_config, indent=2).encode())
    return Run(directory, engine, run_config, metrics, steps_per_epoch, steps_done,
               untrained_loss(config, arch, fresh, data))


def _refuse_existing_run(directory: Path) -> None:
    """A new run never writes over another run's files, nor over a model, settings or metrics
    left in --out; a run stopped before its first epoch ended has nothing to lose, and is
    started anew."""
    if (directory / files.STATE_FILE).exists():
        raise Lenet5Error(f"{directory} already holds a training run; pass --resume {directory} "
                          "to continue it or choose another --out.")
    for name in files.RUN_FILES:
        if name == files.CONFIG_FILE and files.unfinished_run(directory):
            continue
        if (directory / name).exists():
            raise Lenet5Error(f"{directory} already holds {name}, which a new run would "
                              "overwrite; choose another --out, or move that file away.")


def _resume_state(directory: Path, config: TrainConfig, arch: Architecture,
                  steps_per_epoch: int) -> tuple[dict, dict, float, int, list[dict]] | None:
    """(parameters, optimizer state, epochs trained, steps taken, the metrics of the whole
    passes among them) from the run's state file, checked against its config.json and
    metrics; None if no epoch had finished (or the first one's save was cut short). Where it
    stands is the optimizer's step count: a run that ended with a part pass (--epochs 2.25)
    goes on with the rest of that pass, and one that took every step but was stopped before
    its model file held a refusal threshold goes on with the calibration."""
    state_path = directory / files.STATE_FILE
    if not state_path.exists():
        if _saved_past_its_first_epoch(directory):  # starting again would write over them
            raise Lenet5Error(f"{directory} holds finished epochs but no {files.STATE_FILE}, "
                              "the optimizer's state --resume goes on from; move its "
                              f"{files.MODEL_FILE} and {files.METRICS_FILE} away to train it "
                              "again from the start, or train a new run elsewhere.")
        return None
    params, optimizer_state, meta = checkpoint.load_state(state_path)
    if meta["arch"] != config.arch:
        raise Lenet5Error(f"{state_path} was written by a {meta['arch']} run, but "
                          f"{directory / files.CONFIG_FILE} says {config.arch}; the run "
                          "directory is mixed up: resume the run the state belongs to, or start "
                          "a new one with another --out.")
    expected = {f"{slot}.{name}" for slot in OPTIMIZER_SLOTS[config.optimizer]
                for name in arch.param_shapes()} | {"steps"}
    if set(optimizer_state) != expected:
        detail = "; ".join(f"{label}: {', '.join(sorted(keys))}" for label, keys in
                           (("missing", expected - set(optimizer_state)),
                            ("unexpected", set(optimizer_state) - expected)) if keys)
        raise Lenet5Error(f"{state_path} does not hold the state of the {config.optimizer} "
                          f"optimizer that {directory / files.CONFIG_FILE} names ({detail}); "
                          "the run directory is damaged or mixed up: start a new run.")
    epoch, trained, metrics = meta["epoch"], meta["epochs"], files.read_metrics(directory)
    if epoch > len(metrics):
        raise Lenet5Error(f"{state_path} says epoch {epoch} finished, but "
                          f"{directory / files.METRICS_FILE} holds {len(metrics)}; the run "
                          "directory is damaged: start a new run.")
    done, total = int(optimizer_state["steps"][0]), _steps_in(config.epochs, steps_per_epoch)
    if not (epoch - 1) * steps_per_epoch < done <= epoch * steps_per_epoch:
        raise Lenet5Error(f"{state_path} says epoch {epoch} finished after {done} training "
                          f"steps, but a pass of this run takes {steps_per_epoch}; the run "
                          "directory is damaged or mixed up: start a new run.")
    if done > total:
        raise Lenet5Error(f"{directory} already has {_epochs(trained)} finished, more than "
                          f"--epochs {config.epochs:g}; pass a larger --epochs to train it "
                          "further.")
    if done < total:
        return params, optimizer_state, trained, done, metrics[:done // steps_per_epoch]
    if not calibrated(checkpoint.load_model(directory / files.MODEL_FILE)[1]):
        return params, optimizer_state, trained, done, metrics[:epoch]  # stopped calibrating
    raise Lenet5Error(f"{directory} is already complete ({_epochs(trained)} finished); "
                      f"pass --epochs N with --resume to train it further, N more than "
                      f"{trained:g} (one step more: {_epochs_for(done + 1, steps_per_epoch)}).")


def _saved_past_its_first_epoch(directory: Path) -> bool:
    """Whether a run without its state file has more than a first epoch's save can leave:
    that save writes the model, the metrics, then the state, so a run stopped inside it has a
    model of one epoch (not yet calibrated) and a metrics row or none, and starts again."""
    if (directory / files.METRICS_FILE).exists() and len(files.read_metrics(directory)) > 1:
        return True
    if not (directory / files.MODEL_FILE).exists():
        return False
    meta = checkpoint.load_model(directory / files.MODEL_FILE)[1]
    return meta.get("epochs", 0) > 1 or calibrated(meta)


# --- divergence -----------------------------------------------------------------------------

# An epoch's mean training loss this many times the untrained network's means the steps are
# too large; healthy runs only ever fall below it.
DIVERGED_LOSS_FACTOR = 10
# Training accuracy no better than this many times the commonest class's share, with a loss
# that fell by less than STALLED_LOSS_FALL since the epoch before, means the network answers
# (nearly) one class for everything and has stopped moving: saturated or collapsed, with a
# loss that can stay bounded. Checked from the second epoch on, after CHANCE_MIN_STEPS steps,
# so that tiny smoke-test runs are exempt and a run learning slowly (its loss still falling)
# is not stopped. The runs these thresholds were checked on: benchmarks/results/divergence.md.
CHANCE_FACTOR = 1.5
STALLED_LOSS_FALL = 0.01
CHANCE_MIN_STEPS = 100
REFERENCE_IMAGES = 1000  # test images the untrained network's loss is measured on


def untrained_loss(config: TrainConfig, arch: Architecture, initial: dict,
                   data: TrainingData) -> float:
    """The mean loss of the run's initial weights ``initial`` (the same for a resumed run) on
    the first REFERENCE_IMAGES test images."""
    engine = make_engine(config.engine, arch, initial, device=config.device)
    with np.errstate(over="ignore", invalid="ignore"):  # a huge --init-std: reported after
        loss_sum, _ = evaluate(engine, data.x_test[:REFERENCE_IMAGES],  # the first epoch
                               data.y_test[:REFERENCE_IMAGES])
    return loss_sum / len(data.y_test[:REFERENCE_IMAGES])


def check_progress(config: TrainConfig, run: Run, data: TrainingData, epoch: int, loss: float,
                   accuracy: float, weights_finite: bool = True) -> None:
    """Raise TrainingDiverged, saying which setting to change, if epoch ``epoch`` (from 0)
    ended with a loss that is not finite or far above the untrained network's, with weights
    that are not (the loss is measured before each step: a run's last step may be the one
    that blew them up), or stuck at chance accuracy."""
    digits = data.train_labels[:data.digits]  # the non-digits come after them
    chance = np.bincount(digits).max() / len(digits)  # always answering the commonest class
    steps = (epoch + 1) * math.ceil(len(data.train_labels) / config.batch_size)
    default = defaults_for(config.arch)["lr"]
    if not math.isfinite(loss):
        verdict, reason, advice = "diverged", f"its training loss is {loss}", _steadier(config)
    elif not weights_finite:
        verdict, reason, advice = ("diverged", "its weights are no longer finite numbers",
                                   _steadier(config))
    elif loss > DIVERGED_LOSS_FACTOR * run.untrained_loss:
        verdict, reason, advice = "diverged", (
            f"its training loss {loss:.3g} is over {DIVERGED_LOSS_FACTOR} times the untrained "
            f"network's {run.untrained_loss:.3g}"), _steadier(config)
    elif (epoch >= 1 and steps >= CHANCE_MIN_STEPS and accuracy <= CHANCE_FACTOR * chance
          and loss > (1 - STALLED_LOSS_FALL) * run.metrics[-1]["train_loss"]):
        reason = (f"training accuracy is {100 * accuracy:.1f}%, no better than chance "
                  f"({100 * chance:.1f}% for always answering the commonest class), and the "
                  f"loss ({loss:.3g}) stopped falling")
        verdict, advice = ("diverged", _steadier(config)) if config.lr > default else (
            "stalled", f"try {config.arch}'s default settings (--lr {default:g} with "
            f"--optimizer {defaults_for(config.arch)['optimizer']}; now --lr {config.lr:g} with "
            f"--optimizer {config.optimizer})")
    else:
        return
    again = (f"train again into another --out ({run.directory} keeps epoch "
             f"{run.metrics[-1]['epoch']}'s model)" if run.metrics
             else "train again (no epoch was saved)")
    raise TrainingDiverged(f"training {verdict} in epoch {epoch + 1}: {reason}; {advice}, then "
                           f"{again}.")


def _steadier(config: TrainConfig) -> str:
    """What to change after a run diverged: each setting that makes the weights or the steps
    too large (initial weights wider than any of the architecture's own, a weight decay that
    takes more than all of a weight in one step, a step schedule that raises the rate), and
    the learning rate where it is above the default or nothing else is."""
    default = defaults_for(config.arch)
    widest = max(float(np.std(values)) for name, values in
                 init_params(config.architecture(), 0).items() if name.endswith(".weight"))
    changes = []
    if config.init_std is not None and config.init_std > widest:
        changes.append(f"lower --init-std (now {config.init_std:g}) to {widest:.2g} or less, as "
                       f"wide as {config.arch}'s own initial weights")
    if config.optimizer in ("sgd", "adamw") and config.lr * config.weight_decay >= 1:  # Adam
        # adds the decay to a gradient it then scales: no step takes a whole weight
        changes.append(f"lower --weight-decay (now {config.weight_decay:g}): with --lr "
                       f"{config.lr:g} a step takes more than all of each weight")
    if config.schedule == "step" and config.gamma > 1:
        changes.append(f"lower --gamma (now {config.gamma:g}) below 1, so that each step "
                       "lowers the rate")
    if config.lr > default["lr"]:
        changes.append(f"lower --lr (now {config.lr:g}) towards {config.arch}'s default "
                       f"{default['lr']:g}")
    elif not changes:
        changes.append(f"lower --lr (now {config.lr:g}), e.g. to {config.lr / 3:.2g}")
    return ", and ".join(changes)


# --- one epoch ------------------------------------------------------------------------------

def train_epoch(config: TrainConfig, run: Run, data: TrainingData, inputs: EpochInputs,
                epoch: int, progress: bool) -> dict:
    """One pass over the epoch's training inputs, then the measurements: its metrics row."""
    engine, steps_per_epoch = run.engine, run.steps_per_epoch
    started = time.perf_counter()
    order = np.random.default_rng([config.seed, epoch]).permutation(len(data.train_labels))
    inputs.bind(epoch)
    total_steps = _steps_in(config.epochs, steps_per_epoch)
    steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)  # fewer in a part pass
    first = max(0, run.steps_done - epoch * steps_per_epoch)  # resumed within this pass
    if config.optimizer == "sdlm" and first == 0:  # the paper re-estimates the curvature
        engine.estimate_curvature(order[:SDLM_SAMPLES])  # before each pass (the state has it)
    schedule = config.schedule_spec()
    batches = range(first, steps)  # first > 0: the rest of a part pass an earlier run took
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"epoch {_progress(epoch, config.epochs)}", leave=False,
                       unit="batch", file=sys.stderr)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
        for b in batches:
            lr = schedule.at(epoch * steps_per_epoch + b, steps_per_epoch, total_steps)
            engine.train_step(order[b * config.batch_size:(b + 1) * config.batch_size], lr)
    loss_sum, correct, seen = engine.take_train_metrics()
    seconds = time.perf_counter() - started
    digits = np.count_nonzero(  # the digits this pass saw: non-digits
        order[first * config.batch_size:steps * config.batch_size] < data.digits)
    accuracy = correct / digits  # come after the digits, and are never "correct"
    check_progress(config, run, data, epoch, loss_sum / seen, accuracy, weights_finite=all(
        np.isfinite(values).all() for values in engine.parameters().values()))
    row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": accuracy}
    if data.x_val is not None:
        _, val_pred = evaluate(engine, data.x_val, data.y_val)
        row["val_acc"] = float(np.mean(val_pred == data.y_val))
    if config.test_each_epoch or epoch * steps_per_epoch + steps == total_steps:  # the last
        test_loss, test_pred = evaluate(engine, data.x_test, data.y_test)
        row.update(test_loss=test_loss / len(data.y_test),
                   test_acc=float(np.mean(test_pred == data.y_test)))
    row.update(seconds=round(seconds, 3), lr=lr)
    return row


def model_metadata(config: TrainConfig, run: Run) -> dict:
    """What the model file says besides its weights (the refusal, once calibrated)."""
    last = run.metrics[-1]
    meta = {"arch": config.arch, **config.architecture().variant, "dataset": config.dataset,
            "classes": run.run_config["classes"],
            "input_normalization": run.run_config["input_normalization"],
            "engine": run.engine.name, "epochs": _epochs_trained(config, run),
            "test_accuracy": last.get("test_acc"), "lenet5_version": __version__}
    return meta if run.refusal is None else {**meta, METADATA_KEY: run.refusal}


def save_epoch(config: TrainConfig, run: Run) -> None:
    """Model, metrics and resume state for the epoch just finished, each written atomically;
    the state goes last, so it never points past what the other files hold."""
    params = _save_model(config, run)
    files.write_metrics(run.directory, run.metrics)
    checkpoint.save_state(run.directory / files.STATE_FILE, params, run.engine.optimizer_state(),
                          {"epoch": run.metrics[-1]["epoch"],
                           "epochs": _epochs_trained(config, run), "arch": config.arch})


def _epochs_trained(config: TrainConfig, run: Run) -> float:
    """Epochs the run has trained so far: its whole passes, or all of --epochs (2.25) once its
    last pass, maybe a part, is done."""
    passes_done = run.metrics[-1]["epoch"]
    finished = passes_done * run.steps_per_epoch >= _steps_in(config.epochs, run.steps_per_epoch)
    return config.epochs if finished else passes_done


def _save_model(config: TrainConfig, run: Run) -> dict:
    """The run's model file, from the engine's parameters now (which it returns)."""
    params = run.engine.parameters()
    checkpoint.save_model(run.directory / files.MODEL_FILE, params, model_metadata(config, run))
    return params


# --- the whole run --------------------------------------------------------------------------

def train(config: TrainConfig, *, resume: str | Path | None = None, log: Log = print,
          progress: bool | None = None, resumed_by: str | None = None) -> Path:
    """Train (or continue) a run; returns its directory. Files are rewritten atomically after
    every epoch, so a killed run loses at most the epoch in progress. One process at a time
    trains a run directory (``files.run_lock``); what a killed one left half-written is
    removed first. ``resumed_by``: the command that continues the run, where it is not
    `lenet5 train --resume` (a sweep's own), for a full disk's advice."""
    config.validate(new_run=resume is None)
    config = config.resolved()
    arch = config.architecture()
    directory = run_directory(config, resume)
    config = dataclasses.replace(config, out=str(directory))  # one name, chosen once
    with files.run_lock(directory):
        files.remove_stale_temporaries(directory)
        data = load_training_data(config, arch, log)
        try:
            run = _train_epochs(config, arch, data, resume, log, progress)
        except files.WriteError as exc:
            raise _with_resume_advice(exc, directory, resumed_by) from None
        except KeyboardInterrupt as exc:  # the command line names the run to resume
            exc.run_directory = directory
            raise
        except TrainingDiverged:
            if not (directory / files.STATE_FILE).exists():  # no epoch saved: nothing to
                (directory / files.CONFIG_FILE).unlink(missing_ok=True)  # resume, or keep
            raise
    log(f"test accuracy {100 * run.metrics[-1]['test_acc']:.2f}% ({_epochs(config.epochs)}); "
        f"model saved in {run.directory}")
    log(_describe_refusal(run.refusal))
    return run.directory


def _describe_refusal(refusal: dict) -> str:
    """The line a run ends with about its calibrated "not a digit". Counts, not shares, of
    the refused digits: all but one of 10,000 is not "100.0%"."""
    digits = refusal["digits"]
    return (f"'not a digit' below a probability of {refusal['threshold']:.3g}, calibrated on "
            f"{refusal['calibrated_on']}, each redrawn as if cut out of a written number "
            f"(harder than a photo of one digit): {round(refusal['refused'] * digits):,} of "
            f"{digits:,} refused, {100 * refusal['error_accepted']:.2f}% of the rest read wrong"
            + (f", more than --refusal-error {100 * refusal['target_error']:g}% at any "
               "threshold: the network has not learned enough to say which are digits"
               if refusal["error_accepted"] > refusal["target_error"] else ""))


def _train_epochs(config: TrainConfig, arch: Architecture, data: TrainingData,
                  resume: str | Path | None, log: Log, progress: bool | None) -> Run:
    run = start_run(config, arch, data, resume, log)
    if run.steps_done == 0:
        made_up = len(data.train_labels) - data.digits
        log(f"training {arch.name} with the {run.engine.name} engine ({run.engine.device}) on "
            f"{data.digits:,} {config.dataset} images"
            + (f" and {made_up:,} made-up non-digits" if made_up else "")
            + f" for {_epochs(config.epochs)} -> {run.directory}")
    inputs = EpochInputs(config, data, run.engine)
    show_bar = sys.stderr.isatty() if progress is None else progress
    left = _passes_left(config, run, data)
    if not left:
        log("every epoch of it had finished; calibrating its 'not a digit' threshold")
    for epoch in left:
        row = train_epoch(config, run, data, inputs, epoch, show_bar)
        run.metrics.append(row)
        save_epoch(config, run)
        log(f"epoch {_progress(epoch, config.epochs)}  loss {row['train_loss']:.4f}  "
            f"train {100 * row['train_acc']:.2f}%  "
            + (f"val {100 * row['val_acc']:.2f}%  " if "val_acc" in row else "")
            + (f"test {100 * row['test_acc']:.2f}%  " if "test_acc" in row else "")
            + f"{row['seconds']:.1f} s")
    calibrate_refusal(config, run, data)
    return run


def _passes_left(config: TrainConfig, run: Run, data: TrainingData) -> range:
    """The passes still to train, from the one a resumed run stands in; none where every step
    is taken (a run stopped while its refusal was calibrated: that is all it has left)."""
    if run.steps_done == _steps_in(config.epochs, run.steps_per_epoch):
        return range(0)
    return range(run.steps_done // run.steps_per_epoch, passes(config, data))


def calibrate_refusal(config: TrainConfig, run: Run, data: TrainingData) -> None:
    """The trained network's "not a digit" threshold (``refusal``), into its model file."""
    run.refusal = _calibration(Model(run.engine, model_metadata(config, run)), config,
                               data.calibration)
    _save_model(config, run)  # the last epoch's metrics and state are written already


def calibration_again(model: Model, config: TrainConfig) -> dict:
    """The ``refusal`` metadata that `train` with this config (its digits, seed and settings)
    would now store for this trained model: for a model file calibrated before the way a
    digit's confidence is measured changed (``scripts/build_pretrained.py --recalibrate``)."""
    config = config.resolved()
    _, trained_on, validation = _training_digits(config, log=lambda _: None)
    return _calibration(model, config, _calibration_digits(*trained_on, *validation))


def _calibration(model: Model, config: TrainConfig,
                 calibration: tuple[np.ndarray, np.ndarray, str]) -> dict:
    digits, labels, source = calibration
    return calibrate_model(model, digits, labels, source,
                           np.random.default_rng([config.seed, CALIBRATION_STREAM]),
                           config.refusal_error, config.calibration_digits)


def _with_resume_advice(exc: files.WriteError, directory: Path,
                        resumed_by: str | None = None) -> files.WriteError:
    """A full disk while writing a run: after freeing space, the advised command must work."""
    if not exc.disk_full:
        return exc
    if not (directory / files.CONFIG_FILE).is_file():
        advice = "then run the same command again"
    else:
        try:
            epoch = checkpoint.load_state(directory / files.STATE_FILE)[2]["epochs"]
        except Lenet5Error:
            epoch = 0
        command = resumed_by or f"`lenet5 train --resume {directory}`"
        advice = (f"then {command} continues the run after {_epochs(epoch)}" if epoch else
                  f"then {command} starts it again (no epoch had been saved)")
    return files.WriteError(f"{str(exc).rstrip('.')}; {advice}.", exc.errno)


def passes(config: TrainConfig, data: TrainingData) -> int:
    """How many passes over the training data the run takes: the last one may be a part (its
    --epochs' steps, rounded, decide: 1.01 epochs of 19-step passes is one)."""
    steps_per_epoch = _steps_per_epoch(config, data)
    return math.ceil(_steps_in(config.epochs, steps_per_epoch) / steps_per_epoch)


def _steps_per_epoch(config: TrainConfig, data: TrainingData) -> int:
    return math.ceil(len(data.train_labels) / config.batch_size)


def _steps_in(epochs: float, steps_per_epoch: int) -> int:
    """Training steps in the first ``epochs`` epochs: a part pass rounded, at least one step
    unless ``epochs`` is 0 (--epochs 0.001 takes one)."""
    return max(1, round(steps_per_epoch * epochs)) if epochs else 0


def _epochs_for(steps: int, steps_per_epoch: int) -> str:
    """The shortest --epochs, as written, that takes ``steps`` training steps: 15 passes and
    one step is 15.002, not 15.0018 (nor "15", as four digits would have it)."""
    written = (f"{steps / steps_per_epoch:.{digits}g}" for digits in range(1, 18))
    return next(text for text in written if _steps_in(float(text), steps_per_epoch) == steps)


def _progress(epoch: int, epochs: float) -> str:
    """" 2/15" after pass ``epoch`` (from 0), "2.5/2.5" after a last part pass."""
    return f"{min(epoch + 1, epochs):>2g}/{epochs:g}"


def _epochs(n: float) -> str:
    return f"{n:g} epoch" if n == 1 else f"{n:g} epochs"


def resume_config(run_dir: str | Path, epochs: float | None = None) -> TrainConfig:
    """The configuration a run was started with, each setting of the type TrainConfig
    declares (other keys, facts about the run, are ignored); ``epochs`` may extend it."""
    saved = files.read_config(run_dir, "--resume")
    fields = {f.name: saved[f.name] for f in dataclasses.fields(TrainConfig) if f.name in saved}
    where = Path(run_dir) / files.CONFIG_FILE
    check_types(fields, f"{where}", "--resume needs the config.json that `lenet5 train` wrote: "
                "restore it")
    config = TrainConfig(**fields)
    try:
        config.validate(new_run=False)
    except Lenet5Error as exc:  # its words are a flag's: say whose they are
        raise Lenet5Error(f"{where} holds a setting lenet5 cannot train with "
                          f"({str(exc).rstrip('.')}); restore the config.json that `lenet5 "
                          "train` wrote.") from None
    if epochs is not None:
        config.epochs = epochs
    return config


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def check_types(options: dict, where: str, advice: str) -> None:
    """Each of ``options`` (TrainConfig fields read from a file) of the type TrainConfig
    declares, else one sentence naming the field, ``where`` it is and the ``advice``."""
    types = typing.get_type_hints(TrainConfig)
    for name, value in options.items():
        allowed = typing.get_args(types[name]) or (types[name],)
        if not any(_is_a(value, t) for t in allowed):
            wanted = next(_TYPE_NAMES[t] for t in allowed if t in _TYPE_NAMES)
            raise Lenet5Error(f"{name!r} in {where} is {value!r}, not {wanted}; {advice}.")


def _is_a(value: object, expected: type) -> bool:
    """JSON ``value`` fits ``expected``: an int is a float too, a bool is not a number."""
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)
