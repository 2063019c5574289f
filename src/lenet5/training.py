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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, files
from .arch import Architecture, get_arch, init_params
from .data import datasets
from .data.transforms import (
    NORMALIZATIONS,
    input_normalization,
    prepare_inputs,
    split_validation,
)
from .engine import Engine, evaluate, make_engine
from .errors import Lenet5Error, TrainingDiverged
from .hparams import AUGMENTATIONS, SDLM_SAMPLES, OptimizerSpec, Schedule, defaults_for
from .threads import compute_workers
from .version import __version__

Log = Callable[[str], None]
INPUT_CHUNK = 2048  # images prepared at a time: the float32 inputs of a chunk take 8 MiB


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
    epochs: int | None = None
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
    normalization: str | None = None  # data.transforms.NORMALIZATIONS; None: the arch's
    seed: int = 0
    augment: str | None = None
    val_size: int = 0
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

    def validate(self) -> None:
        limit = 1 if self.limit is None else self.limit
        for flag, value, low in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                 ("--val-size", self.val_size, 0), ("--limit", limit, 1)):
            if value is not None and value < low:
                raise Lenet5Error(f"{flag} must be at least {low}, got {value}.")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise Lenet5Error(f"unknown --augment {self.augment!r}; choose one of: "
                              f"{', '.join(AUGMENTATIONS)}.")
        if self.normalization is not None and self.normalization not in NORMALIZATIONS:
            raise Lenet5Error(f"unknown --normalization {self.normalization!r}; choose one of: "
                              f"{', '.join(NORMALIZATIONS)}.")
        if self.init_std is not None and not self.init_std > 0:
            raise Lenet5Error(f"--init-std must be positive, got {self.init_std}.")
        resolved = self.resolved()
        resolved.optimizer_spec()
        resolved.schedule_spec()

    def optimizer_spec(self) -> OptimizerSpec:
        return OptimizerSpec(name=self.optimizer, momentum=self.momentum, nesterov=self.nesterov,
                             weight_decay=self.weight_decay, beta1=self.beta1, beta2=self.beta2)

    def schedule_spec(self) -> Schedule:
        return Schedule(name=self.schedule, lr=self.lr, step_epochs=self.step_epochs,
                        gamma=self.gamma)


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return files.RUNS_DIR / f"{config.arch}-{config.engine}-{stamp}"


# --- data ---------------------------------------------------------------------------------

@dataclass
class TrainingData:
    """What a run learns from and is measured on. The training images stay uint8 (N, 28, 28)
    until an epoch needs them, distorted or not; validation and test inputs are prepared."""

    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64
    normalization: dict  # how 28x28 images become network inputs (stored in model files)
    classes: list[str]
    x_val: np.ndarray | None  # (V, 1, 32, 32) float32, or None without --val-size
    y_val: np.ndarray  # (V,) int64
    x_test: np.ndarray  # (T, 1, 32, 32) float32
    y_test: np.ndarray  # (T,) int64


def load_training_data(config: TrainConfig, arch: Architecture, log: Log) -> TrainingData:
    data = datasets.load(config.dataset, config.data_dir, log=log)
    images, labels = data.train_images, data.train_labels
    if config.limit:
        images, labels = images[:config.limit], labels[:config.limit]
    images, labels, val_images, val_labels = split_validation(images, labels, config.val_size,
                                                              config.seed)
    norm = input_normalization(arch, images, config.normalization)
    return TrainingData(
        train_images=images, train_labels=labels.astype(np.int64), normalization=norm,
        classes=list(data.classes),
        x_val=prepare_inputs(val_images, norm) if len(val_images) else None,
        y_val=val_labels.astype(np.int64),
        x_test=prepare_inputs(data.test_images, norm), y_test=data.test_labels.astype(np.int64))


class EpochInputs:
    """Binds each epoch's training inputs to the engine: the clean inputs once, or fresh random
    distortions every epoch, written over the previous epoch's array. Inputs are made in
    chunks that stay in the CPU's caches, on one thread per core (``threads.compute_workers``)."""

    def __init__(self, config: TrainConfig, data: TrainingData, engine: Engine):
        self.config, self.data, self.engine = config, data, engine
        n = len(data.train_images)
        self.inputs = np.empty((n, 1, *[28 + 2 * data.normalization["pad"]] * 2), np.float32)
        if config.augment == "none":  # every epoch reads the same inputs
            self._prepare(lambda part: data.train_images[part])
            engine.bind_training_data(self.inputs, data.train_labels)

    def _prepare(self, images_of: Callable[[slice], np.ndarray]) -> None:
        """self.inputs[part] = the prepared ``images_of(part)``, for chunks of every image."""
        n = len(self.inputs)
        chunks = [slice(i, min(i + INPUT_CHUNK, n)) for i in range(0, n, INPUT_CHUNK)]
        with ThreadPoolExecutor(compute_workers()) as pool:
            list(pool.map(lambda part: prepare_inputs(images_of(part), self.data.normalization,
                                                      out=self.inputs[part]), chunks))

    def bind(self, epoch: int) -> None:
        if self.config.augment == "none":
            return
        from .data.distortions import distort, shift_by, shift_offsets

        rng = np.random.default_rng([self.config.seed, epoch, 1])
        images = self.data.train_images
        if self.config.augment == "shift":  # shifted chunk by chunk, as they are prepared
            offsets = shift_offsets(len(images), rng)
            self._prepare(lambda part: shift_by(images[part], offsets[:, part]))
        else:
            distorted = distort(images, rng, elastic=self.config.augment == "elastic")
            self._prepare(lambda part: distorted[part])
        self.engine.bind_training_data(self.inputs, self.data.train_labels)


# --- the run: new or resumed ----------------------------------------------------------------

@dataclass
class Run:
    directory: Path
    engine: Engine
    run_config: dict  # what config.json holds: the settings plus facts about the run
    metrics: list[dict]  # one row per finished epoch
    start_epoch: int


def start_run(config: TrainConfig, arch: Architecture, data: TrainingData,
              resume: str | Path | None, log: Log) -> Run:
    """The run directory and its engine: fresh weights, or the state of the last finished
    epoch when resuming. Writes config.json."""
    directory = Path(resume or config.out or default_run_dir(config))
    state_path = directory / files.STATE_FILE
    params = init_params(arch, config.seed, config.init_std)
    optimizer_state, start_epoch, metrics = None, 0, []
    if resume is not None:
        if not state_path.is_file():
            raise Lenet5Error(f"{directory} has no {files.STATE_FILE}; it is not a run "
                              "directory that can be resumed.")
        params, optimizer_state, state_meta = checkpoint.load_state(state_path)
        start_epoch = int(state_meta["epoch"])
        metrics = files.read_metrics(directory)[:start_epoch]
        log(f"resuming {directory} after epoch {start_epoch}")
    elif state_path.exists():
        raise Lenet5Error(f"{directory} already holds a training run; pass --resume {directory} "
                          "to continue it or choose another --out.")
    engine = make_engine(config.engine, arch, params, config.optimizer_spec(), config.device)
    if optimizer_state is not None:
        engine.load_optimizer_state(optimizer_state)
    run_config = {**dataclasses.asdict(config), "input_normalization": data.normalization,
                  "classes": data.classes, "train_images": len(data.train_images),
                  "device": engine.device, "lenet5_version": __version__,
                  "python": platform.python_version(), "machine": platform.machine()}
    files.write_atomic(directory / files.CONFIG_FILE,
                       json.dumps(run_config, indent=2).encode())
    return Run(directory, engine, run_config, metrics, start_epoch)


# --- one epoch ------------------------------------------------------------------------------

def train_epoch(config: TrainConfig, run: Run, data: TrainingData, inputs: EpochInputs,
                epoch: int, progress: bool) -> dict:
    """One pass over the epoch's training inputs, then the measurements: its metrics row."""
    engine, n = run.engine, len(data.train_labels)
    started = time.perf_counter()
    order = np.random.default_rng([config.seed, epoch]).permutation(n)
    inputs.bind(epoch)
    if config.optimizer == "sdlm":  # the paper re-estimates the curvature before each pass
        engine.estimate_curvature(order[:SDLM_SAMPLES])
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = config.schedule_spec()
    batches = range(steps_per_epoch)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       unit="batch", file=sys.stderr)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
        for b in batches:
            lr = schedule.at(epoch * steps_per_epoch + b, steps_per_epoch,
                             steps_per_epoch * config.epochs)
            engine.train_step(order[b * config.batch_size:(b + 1) * config.batch_size], lr)
    loss_sum, correct, seen = engine.take_train_metrics()
    seconds = time.perf_counter() - started
    if not math.isfinite(loss_sum):
        raise TrainingDiverged(
            f"training diverged in epoch {epoch + 1} (loss is {loss_sum / seen}); lower --lr "
            f"(now {config.lr:g}) or --batch-size; {run.directory} keeps the last good epoch.")
    row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen}
    if data.x_val is not None:
        _, val_pred = evaluate(engine, data.x_val, data.y_val)
        row["val_acc"] = float(np.mean(val_pred == data.y_val))
    if config.test_each_epoch or epoch + 1 == config.epochs:
        test_loss, test_pred = evaluate(engine, data.x_test, data.y_test)
        row.update(test_loss=test_loss / len(data.y_test),
                   test_acc=float(np.mean(test_pred == data.y_test)))
    row.update(seconds=round(seconds, 3), lr=lr)
    return row


def save_epoch(config: TrainConfig, run: Run) -> None:
    """Model, metrics and resume state for the epoch just finished, each written atomically;
    the state goes last, so it never points past what the other files hold."""
    last = run.metrics[-1]
    params = run.engine.parameters()
    meta = {"arch": config.arch, **config.architecture().variant, "dataset": config.dataset,
            "classes": run.run_config["classes"],
            "input_normalization": run.run_config["input_normalization"],
            "engine": run.engine.name, "epochs": last["epoch"],
            "test_accuracy": last.get("test_acc"), "lenet5_version": __version__}
    checkpoint.save_model(run.directory / files.MODEL_FILE, params, meta)
    files.write_metrics(run.directory, run.metrics)
    checkpoint.save_state(run.directory / files.STATE_FILE, params, run.engine.optimizer_state(),
                          {"epoch": last["epoch"], "arch": config.arch})


# --- the whole run --------------------------------------------------------------------------

def train(config: TrainConfig, *, resume: str | Path | None = None, log: Log = print,
          progress: bool | None = None) -> Path:
    """Train (or continue) a run; returns its directory. Files are rewritten atomically after
    every epoch, so a killed run loses at most the epoch in progress."""
    config.validate()
    config = config.resolved()
    arch = config.architecture()
    data = load_training_data(config, arch, log)
    run = start_run(config, arch, data, resume, log)
    if run.start_epoch == 0:
        log(f"training {arch.name} with the {run.engine.name} engine ({run.engine.device}) on "
            f"{len(data.train_images):,} {config.dataset} images for {_epochs(config.epochs)} "
            f"-> {run.directory}")
    inputs = EpochInputs(config, data, run.engine)
    show_bar = sys.stderr.isatty() if progress is None else progress
    for epoch in range(run.start_epoch, config.epochs):
        row = train_epoch(config, run, data, inputs, epoch, show_bar)
        run.metrics.append(row)
        save_epoch(config, run)
        log(f"epoch {epoch + 1:>2}/{config.epochs}  loss {row['train_loss']:.4f}  "
            f"train {100 * row['train_acc']:.2f}%  "
            + (f"val {100 * row['val_acc']:.2f}%  " if "val_acc" in row else "")
            + (f"test {100 * row['test_acc']:.2f}%  " if "test_acc" in row else "")
            + f"{row['seconds']:.1f} s")
    log(f"test accuracy {100 * run.metrics[-1]['test_acc']:.2f}% ({_epochs(config.epochs)}); "
        f"model saved in {run.directory}")
    return run.directory


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def resume_config(run_dir: str | Path, epochs: int | None = None) -> TrainConfig:
    """The configuration a run was started with; ``epochs`` may extend it."""
    saved = files.read_config(run_dir, "--resume")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    if epochs is not None:
        config.epochs = epochs
    return config
