"""One training loop for every engine and architecture.

It knows data, epochs, schedules, metrics and files; the network itself sits behind
``lenet5.engine.Engine``. Randomness is derived from (seed, epoch), so a run resumed from its
last finished epoch replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, checkpoint
from .arch import get_arch, init_params
from .data import datasets
from .data.nondigits import with_nondigits
from .data.transforms import input_normalization, prepare_inputs, split_validation
from .engine import make_engine
from .errors import Lenet5Error, TrainingDiverged
from .hparams import OptimizerSpec, Schedule
from .model import Model
from .refusal import METADATA_KEY, calibrate_model

AUGMENTATIONS = ("none", "shift", "affine", "elastic")
NONDIGIT_STREAM = 2
"""Random stream of the made-up non-digits: np.random.default_rng([seed, NONDIGIT_STREAM])."""
# Settings whose best value depends on the architecture: None means "the arch's default".
GENERAL_DEFAULTS = {"epochs": 15, "batch_size": 128, "optimizer": "adam", "lr": 3e-3,
                    "schedule": "onecycle", "augment": "shift", "nondigits": 0.2}


def arch_defaults(arch_name: str) -> dict:
    """Training defaults for an architecture: the general ones, overridden by the arch's."""
    return {**GENERAL_DEFAULTS, **get_arch(arch_name).defaults}


@dataclass
class TrainConfig:
    arch: str = "lenet5"
    engine: str = "numpy"
    device: str = "auto"
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    seed: int = 0
    augment: str | None = None
    val_size: int = 0
    limit: int | None = None
    nondigits: float | None = None
    out: str | None = None

    def resolved(self) -> TrainConfig:
        """A copy with every None setting replaced by the architecture's default."""
        filled = {k: v for k, v in arch_defaults(self.arch).items() if getattr(self, k) is None}
        return dataclasses.replace(self, **filled)

    def validate(self) -> None:
        limit = 1 if self.limit is None else self.limit
        for flag, value, low in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                 ("--val-size", self.val_size, 0), ("--limit", limit, 1),
                                 ("--nondigits", self.nondigits, 0)):
            if value is not None and value < low:
                raise Lenet5Error(f"{flag} must be at least {low}, got {value}.")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise Lenet5Error(f"unknown --augment {self.augment!r}; choose one of: "
                              f"{', '.join(AUGMENTATIONS)}.")
        get_arch(self.arch)
        resolved = self.resolved()
        resolved.optimizer_spec()
        resolved.schedule_spec()

    def optimizer_spec(self) -> OptimizerSpec:
        return OptimizerSpec(name=self.optimizer, momentum=self.momentum, nesterov=self.nesterov,
                             weight_decay=self.weight_decay)

    def schedule_spec(self) -> Schedule:
        return Schedule(name=self.schedule, lr=self.lr)


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.arch}-{config.engine}-{stamp}"


def _dump_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def train(config: TrainConfig, *, resume: str | Path | None = None,
          log: Callable[[str], None] = print, progress: bool | None = None) -> Path:
    """Train (or continue) a run; returns its directory. Files are rewritten atomically after
    every epoch, so a killed run loses at most the epoch in progress."""
    metrics: list[dict] = []
    start_epoch = 0
    config.validate()
    config = config.resolved()
    arch = get_arch(config.arch)
    run_dir = Path(resume or config.out or default_run_dir(config))

    data = datasets.load(config.dataset, config.data_dir, log=log)
    train_images, train_labels = data.train_images, data.train_labels
    if config.limit:
        train_images, train_labels = train_images[:config.limit], train_labels[:config.limit]
    train_images, train_labels, val_images, val_labels = split_validation(
        train_images, train_labels, config.val_size, config.seed)
    norm = input_normalization(arch, train_images)
    n_digits = len(train_images)  # the non-digits added below have no accuracy
    train_digits = train_images
    train_images, y_train = with_nondigits(  # the non-digits teach the network to refuse
        train_images, train_labels, config.nondigits or 0.0,
        np.random.default_rng([config.seed, NONDIGIT_STREAM]))
    x_test, y_test = prepare_inputs(data.test_images, norm), data.test_labels.astype(np.int64)
    x_val = prepare_inputs(val_images, norm) if len(val_images) else None

    params = init_params(arch, config.seed)
    optimizer_state = None
    if resume is not None:
        state_path = run_dir / checkpoint.STATE_FILE
        if not state_path.is_file():
            raise Lenet5Error(f"{run_dir} has no {checkpoint.STATE_FILE}; it is not a run "
                              "directory that can be resumed.")
        params, optimizer_state, state_meta = checkpoint.load_state(state_path)
        start_epoch = int(state_meta["epoch"])
        metrics = read_metrics(run_dir)[:start_epoch]
        log(f"resuming {run_dir} after epoch {start_epoch}")
    elif (run_dir / checkpoint.STATE_FILE).exists():
        raise Lenet5Error(f"{run_dir} already holds a training run; pass --resume {run_dir} to "
                          "continue it or choose another --out.")

    engine = make_engine(config.engine, arch, params, config.optimizer_spec(), config.device)
    if optimizer_state is not None:
        engine.load_optimizer_state(optimizer_state)
    run_config = {**dataclasses.asdict(config), "input_normalization": norm,
                  "classes": data.classes, "train_images": n_digits,
                  "device": engine.device, "lenet5_version": __version__,
                  "python": platform.python_version(), "machine": platform.machine()}
    checkpoint.write_atomic(run_dir / "config.json", json.dumps(run_config, indent=2).encode())
    if start_epoch == 0:
        log(f"training {arch.name} with the {engine.name} engine ({engine.device}) on "
            f"{n_digits:,} {config.dataset} images for {_epochs(config.epochs)} "
            f"-> {run_dir}")

    schedule = config.schedule_spec()
    n = len(train_images)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    show_bar = sys.stderr.isatty() if progress is None else progress
    x_epoch = None  # (N, 1, 32, 32) float32: the distorted inputs, refilled every epoch
    if config.augment == "none":  # every epoch reads the same inputs
        engine.bind_training_data(prepare_inputs(train_images, norm), y_train)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        if config.augment != "none":
            x_epoch = _distorted_inputs(config, epoch, train_images, norm, x_epoch)
            engine.bind_training_data(x_epoch, y_train)
        engine.start_epoch(order)
        batches = range(steps_per_epoch)
        if show_bar:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                           unit="batch", file=sys.stderr)
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
            for b in batches:
                lr = schedule.at(epoch * steps_per_epoch + b, steps_per_epoch, total_steps)
                engine.train_step(order[b * config.batch_size:(b + 1) * config.batch_size], lr)
        loss_sum, correct, seen = engine.take_train_metrics()
        seconds = time.perf_counter() - started
        if not math.isfinite(loss_sum):
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + 1} (loss is {loss_sum / seen}); lower --lr "
                f"(now {config.lr:g}) or --batch-size; {run_dir} keeps the last good epoch.")
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / n_digits}
        if x_val is not None:
            _, val_pred = engine.evaluate(x_val, val_labels.astype(np.int64))
            row["val_acc"] = float(np.mean(val_pred == val_labels))
        test_loss, test_pred = engine.evaluate(x_test, y_test)
        row.update(test_loss=test_loss / len(y_test), test_acc=float(np.mean(test_pred == y_test)),
                   seconds=round(seconds, 3), lr=lr)
        metrics.append(row)
        _save_epoch(run_dir, engine, config, run_config, metrics)
        log(f"epoch {epoch + 1:>2}/{config.epochs}  loss {row['train_loss']:.4f}  "
            f"train {100 * row['train_acc']:.2f}%  "
            + (f"val {100 * row['val_acc']:.2f}%  " if "val_acc" in row else "")
            + f"test {100 * row['test_acc']:.2f}%  {seconds:.1f} s")
    if len(val_images):  # calibrate the refusal on digits it did not train on, never the test
        digits, labels, source = val_images, val_labels, "the validation split, redrawn"
    else:  # redrawn, its own digits are refused as often as unseen ones (see refusal.py)
        digits, labels = train_digits, train_labels
        source = "training digits, redrawn (no validation split)"
    refusal = calibrate_model(Model(engine, _model_metadata(config, run_config, engine,
                                                            metrics[-1])),
                              digits, labels, source, np.random.default_rng([config.seed, 3]))
    _save_epoch(run_dir, engine, config, run_config, metrics, refusal)
    final = metrics[-1]
    log(f"test accuracy {100 * final['test_acc']:.2f}% ({_epochs(config.epochs)}); refusal "
        f"threshold {refusal['threshold']:.3f} (on {source}: {100 * refusal['refused']:.1f}% "
        f"refused, {100 * refusal['error_accepted']:.2f}% of the rest wrong); "
        f"model saved in {run_dir}")
    return run_dir


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-epoch rows of a run's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        raise Lenet5Error(f"cannot read {path}; pass a run directory made by `lenet5 train`.")\
            from None


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _distorted_inputs(config: TrainConfig, epoch: int, images: np.ndarray, norm: dict,
                      previous: np.ndarray | None) -> np.ndarray:
    """This epoch's network inputs, fresh random distortions of ``images``, written over the
    previous epoch's where there are some (the engine is told by binding them again)."""
    from .data.distortions import distort, shift

    rng = np.random.default_rng([config.seed, epoch, 1])
    if config.augment == "shift":
        return prepare_inputs(shift(images, rng), norm, out=previous)
    distorted = distort(images, rng, elastic=config.augment == "elastic")
    return prepare_inputs(distorted, norm, out=previous)


def _model_metadata(config: TrainConfig, run_config: dict, engine, last: dict) -> dict:
    return {"arch": config.arch, "dataset": config.dataset, "classes": run_config["classes"],
            "input_normalization": run_config["input_normalization"], "engine": engine.name,
            "epochs": last["epoch"], "test_accuracy": last["test_acc"],
            "lenet5_version": __version__}


def _save_epoch(run_dir: Path, engine, config: TrainConfig, run_config: dict,
                metrics: list[dict], refusal: dict | None = None) -> None:
    """Model (with its calibrated `refusal`, once there is one), metrics and resume state for
    the epoch just finished, each written atomically; the state goes last, so it never points
    past what the other files hold."""
    last = metrics[-1]
    params = engine.parameters()
    meta = _model_metadata(config, run_config, engine, last)
    if refusal is not None:
        meta[METADATA_KEY] = refusal
    checkpoint.save_model(run_dir / checkpoint.MODEL_FILE, params, meta)
    checkpoint.write_atomic(run_dir / "metrics.jsonl", _dump_jsonl(metrics))
    checkpoint.save_state(run_dir / checkpoint.STATE_FILE, params, engine.optimizer_state(),
                          {"epoch": last["epoch"], "arch": config.arch})


def resume_config(run_dir: str | Path, epochs: int | None = None) -> TrainConfig:
    """The configuration a run was started with; ``epochs`` may extend it."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        raise Lenet5Error(f"cannot read {path}; --resume needs a run directory made by "
                          "`lenet5 train`.") from None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in fields})
    if epochs is not None:
        config.epochs = epochs
    return config
