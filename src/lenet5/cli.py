"""The ``lenet5`` command: parses arguments and calls the modules that do the work.

Each command has two small functions: ``add_<command>`` declares its flags (help text built
from the modules' own constants, every default stated) and ``cmd_<command>`` runs it. Building
the parser imports nothing heavy: torch, onnx, scipy, matplotlib and fastapi load only when a
command needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .errors import Lenet5Error, Terminated
from .signals import handling
from .version import __version__

Subparsers = argparse._SubParsersAction


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """States each default, unless the help text already says what it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        stated = "default" in text or action.required
        return text if stated else super()._get_help_string(action)


def _emit_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr)


def _answer(args: argparse.Namespace, document: dict, text: str) -> int:
    """A command's result: the JSON document with --json, else its sentence."""
    if args.json:
        _emit_json(document)
    else:
        print(text)
    return 0


# --- flags more than one command takes --------------------------------------------------------

def _command(sub: Subparsers, name: str, help: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter, **kw)


def _folder(text: str) -> str:
    """A folder option's value: an empty one would name the current folder unsaid."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name a folder (. for this one)")
    return text


def _engine_flags(parser: argparse.ArgumentParser, inference: bool = False,
                  unset: bool = False) -> None:
    """``unset``: the defaults are None (the help still states them), so that the command can
    tell a flag given from one left out. ``inference``: the onnx engine too, and by default
    the engine ``model.load`` picks for the file (None)."""
    from .engine import ENGINES, INFERENCE_ENGINES
    from .hparams import DEVICES
    from .training import TrainConfig

    engine, device = TrainConfig.engine, TrainConfig.device
    if inference:
        parser.add_argument("--engine", choices=INFERENCE_ENGINES, default=None,
                            help="engine that computes; onnx runs the model (or an exported "
                            f".onnx file) in onnxruntime (default: {engine}; onnx for an "
                            ".onnx file)")
    else:
        parser.add_argument("--engine", choices=ENGINES, default=None if unset else engine,
                            help="engine that computes"
                            + (f" (default: {engine})" if unset else ""))
    parser.add_argument("--device", choices=DEVICES, default=None if unset else device,
                        help="torch engine device; auto picks CUDA, else Apple silicon's MPS, "
                        "else the CPU"
                        + (f" (default: {device})" if unset else ""))


def _dataset_flags(parser: argparse.ArgumentParser, default: str | None,
                   default_help: str = "") -> None:
    from .data import DATASETS

    parser.add_argument("--dataset", choices=tuple(DATASETS), default=default,
                        help="dataset" + default_help)
    parser.add_argument("--data-dir", default=None, type=_folder,
                        help="folder holding the dataset's IDX files, raw or .gz: read for "
                        "any file the verified cache ($LENET5_DATA or ~/.cache/lenet5) "
                        "lacks, before any download "
                        "(default: none)")


def _model_argument(parser: argparse.ArgumentParser) -> None:
    from .files import MODEL_FILE

    parser.add_argument("model", help=f"{MODEL_FILE}, a run directory, pretrained (the model "
                        "shipped with lenet5), or an .onnx file (run in onnxruntime)")


def _reject_flag(parser: argparse.ArgumentParser) -> None:
    from .refusal import DEFAULT_THRESHOLD

    parser.add_argument("--reject-threshold", type=float, default=None, metavar="P",
                        help="refuse a digit (answer 'not a digit') when its most probable "
                        "class has a probability below P, 0 to 1 (default: the threshold "
                        "calibrated when the model was trained, or "
                        f"{DEFAULT_THRESHOLD} for a model file without one; in a number "
                        "with two digits or more read surely (0.9 or more), not all 1s, the "
                        "other digits are held to half of it, and unless P is 0 a reading of "
                        "two digits or more none of which is read surely is refused whole)")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


# --- data ---------------------------------------------------------------------------------

def add_data(sub: Subparsers) -> None:
    data = _command(sub, "data", "Fetch and verify datasets.")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download (or copy) and verify a dataset",
                               description="Download (or copy) a dataset into the cache and "
                               "verify every file's SHA-256.", formatter_class=_Formatter)
    _dataset_flags(fetch, "mnist")
    fetch.set_defaults(func=cmd_data_fetch)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import fetch

    print(fetch(args.dataset, args.data_dir, log=_stderr_log))
    return 0


# --- train --------------------------------------------------------------------------------

def _arch_default(key: str) -> str:
    """'default: 15 for lenet5, 20 for lenet5-1998' (one value when all agree)."""
    from .arch import ARCHITECTURES
    from .hparams import defaults_for

    values = {name: defaults_for(name)[key] for name in ARCHITECTURES}
    if len(set(values.values())) == 1:
        return f"default: {next(iter(values.values()))}"
    return "default: " + ", ".join(f"{v} for {k}" for k, v in values.items())


def _training_flags(parser: argparse.ArgumentParser, resumable: bool = False) -> None:
    """The flags that set a run's TrainConfig (all but --seed and --out). Each defaults to
    None, so that a recipe's value shows through unless the flag is given. `resumable`: the
    command takes --resume (train does; a sweep resumes its runs by itself)."""
    _network_flags(parser)
    _engine_flags(parser, unset=True)
    _optimizer_flags(parser, resumable)
    _data_flags(parser)
    parser.add_argument("--recipe", default=None, metavar="NAME_OR_FILE",
                        help="start from a recipe (`lenet5 recipes` lists them; or a .toml "
                        "file); options given here override it (default: none)")


def _network_flags(parser: argparse.ArgumentParser) -> None:
    from .arch import ARCHITECTURES, LENET5, LENET5_1998, MODERN_ACTIVATIONS, POOLS
    from .data.transforms import NORMALIZATIONS

    parser.add_argument("--arch", choices=tuple(ARCHITECTURES), default=None,
                        help=f"architecture (default: {LENET5.name})")
    parser.add_argument("--pool", choices=POOLS, default=None,
                        help=f"{LENET5.name}'s pooling: max, or the tutorials' average (default: "
                        f"{LENET5.pool})")
    parser.add_argument("--activation", choices=MODERN_ACTIVATIONS, default=None,
                        help=f"{LENET5.name}'s hidden activations; the output stays softmax "
                        f"(default: {LENET5.activation})")
    parser.add_argument("--init-std", type=float, default=None,
                        help="draw the weights from N(0, STD^2), biases 0 (default: the "
                        f"architecture's own: {LENET5.init} for {LENET5.name}, +-2.4/fan-in for "
                        f"{LENET5_1998.name})")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                        help="how pixels become inputs: mean_std (minus the training pixels' "
                        "mean, over their std), mean_image (minus the mean training image, "
                        "0-255 scale), lecun_1998 (the paper's background and ink levels) "
                        f"(default: {LENET5.input_normalization} for {LENET5.name}, "
                        f"{LENET5_1998.input_normalization} for {LENET5_1998.name})")


def _whole_or_fraction(text: str) -> int | float:
    """A number of epochs as written: 3 stays an int (config.json, logs), 2.5 a float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 3 or 2.5)") from None
    return int(value) if value.is_integer() else value


def _optimizer_flags(parser: argparse.ArgumentParser, resumable: bool) -> None:
    from .hparams import OPTIMIZERS, SCHEDULES, SDLM_WARMUP_FACTORS

    default = _arch_default
    resumed = "; with --resume, the run's own" if resumable else ""
    parser.add_argument("--epochs", type=_whole_or_fraction, default=None,
                        help=f"passes over the training set ({default('epochs')}{resumed}); a "
                        "fraction such as 2.5 ends with a pass over that part of the shuffled "
                        "data")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"mini-batch size ({default('batch_size')})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                        help=f"optimizer ({default('optimizer')})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate, which the schedule scales ({default('lr')})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="learning-rate schedule: onecycle peaks at --lr; step multiplies it "
                        "by --gamma every --step-epochs; sdlm is the 1998 paper's per-pass steps "
                        "(--lr 5e-4 is the paper's), sdlm-warmup the same with the first passes "
                        "at " + ", ".join(f"1/{1 / f:g}" for f in SDLM_WARMUP_FACTORS)
                        + f" of it ({default('schedule')})")
    parser.add_argument("--step-epochs", type=int, default=None,
                        help=f"epochs between steps of --schedule step ({default('step_epochs')})")
    parser.add_argument("--gamma", type=float, default=None,
                        help=f"factor of each step of --schedule step ({default('gamma')})")
    parser.add_argument("--momentum", type=float, default=None,
                        help="momentum, at least 0 and below 1, for --optimizer sgd only (the "
                        f"others refuse it) ({default('momentum')})")
    parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                        help=f"Nesterov momentum (SGD) ({default('nesterov')})")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"L2 weight decay, decoupled for adamw ({default('weight_decay')})")
    parser.add_argument("--beta1", type=float, default=None,
                        help=f"Adam's first-moment decay ({default('beta1')})")
    parser.add_argument("--beta2", type=float, default=None,
                        help=f"Adam's second-moment decay ({default('beta2')})")


def _data_flags(parser: argparse.ArgumentParser) -> None:
    from .data import distortions as dist
    from .hparams import AUGMENTATIONS
    from .training import TrainConfig

    parser.add_argument("--augment", nargs="?", const="affine", choices=AUGMENTATIONS,
                        default=None, help="random distortions of the training digits each "
                        f"epoch: shift (translations up to {dist.MAX_PIXEL_SHIFT} px), affine "
                        f"(the 1998 paper's kinds: translation up to {dist.MAX_SHIFT:g} px, "
                        f"scaling up to {dist.MAX_SCALE * 100:g}%%, squeezing up to "
                        f"{dist.MAX_SQUEEZE * 100:g}%%, shearing up to {dist.MAX_SHEAR:g}, and "
                        f"rotation up to {math.degrees(dist.MAX_ROTATION):g} degrees; plain "
                        "--augment), elastic (affine + elastic) or none "
                        f"({_arch_default('augment')})")
    parser.add_argument("--nondigits", type=float, default=None, metavar="FRACTION",
                        help="made-up non-digits added to the training set, as a fraction of "
                        "it (letters and signs, handwritten and printed; strokes, scribbles, "
                        "hatching, shapes, blots; and junk cut from pairs of digits), which "
                        "teach the network to refuse what is not a "
                        f"digit; 0 to 1, 0 turns it off ({_arch_default('nondigits')})")
    parser.add_argument("--refusal-error", type=float, default=None, metavar="RATE",
                        help="the 'not a digit' threshold is calibrated after training so that "
                        "at most this share of the calibration digits it accepts are read "
                        f"wrong (default: {TrainConfig.refusal_error})")
    parser.add_argument("--calibration-digits", type=int, default=None, metavar="N",
                        help="at most this many training digits (or validation digits, with "
                        "--val-size) the threshold is calibrated on, each redrawn as if cut "
                        "out of a number, and half as many made-up non-digits to measure how "
                        "many it refuses; fewer take less time (10,000: about 3 s on two "
                        "cores) and leave the threshold less sure (default: "
                        f"{TrainConfig.calibration_digits:,})")
    parser.add_argument("--val-size", type=int, default=None,
                        help="training images held out for validation (default: "
                        f"{TrainConfig.val_size})")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N training images only, a --val-size "
                        "split included (default: all)")
    parser.add_argument("--test-each-epoch", action=argparse.BooleanOptionalAction,
                        default=None, help="measure the test set after every epoch; "
                        "--no-test-each-epoch measures it after the last one only, which saves "
                        f"a pass over it per epoch ({_arch_default('test_each_epoch')})")
    _dataset_flags(parser, None, f" (default: {TrainConfig.dataset})")


def _train_options(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line."""
    from .training import TrainConfig

    return {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__
            if getattr(args, k, None) is not None}


def _config_from(args: argparse.Namespace, **fixed):
    """A TrainConfig from a recipe (if any) and the options given, ``fixed`` on top."""
    from .recipes import load_recipe
    from .training import TrainConfig

    options = {**_train_options(args), **fixed}
    if args.recipe is None:  # "" is a recipe named, and not one there is
        return TrainConfig(**options)
    return load_recipe(args.recipe).config(options)


def add_train(sub: Subparsers) -> None:
    from .files import RUNS_DIR
    from .training import TrainConfig

    train = _command(sub, "train", "Train a model; writes a run directory.")
    _training_flags(train, resumable=True)
    train.add_argument("--seed", type=int, default=None,
                       help="random seed (init, shuffling), 0 or more (default: "
                       f"{TrainConfig.seed})")
    train.add_argument("--out", default=None, type=_folder,
                       help=f"run directory (default: {RUNS_DIR}/<arch>-<engine>-<date>-<time>)")
    train.add_argument("--resume", default=None, metavar="RUN_DIR", type=_folder,
                       help="continue an interrupted run from its last finished epoch, with "
                       "the settings in its config.json; of the training settings only "
                       "--epochs (to extend it), --device and --data-dir may be given with it "
                       "(--json and --no-report too, as with any run) (default: a new run)")
    train.add_argument("--json", action="store_true",
                       help="print one JSON summary on stdout (progress goes to stderr)")
    train.add_argument("--no-report", dest="report", action="store_false",
                       help="skip writing the figures and report.html at the end (default: "
                       "write them; `lenet5 report RUN_DIR` writes them later)")
    train.set_defaults(func=cmd_train)


RESUME_FLAGS = ("epochs", "device", "data_dir")  # what --resume takes; other settings are the run's


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .files import MODEL_FILE, read_metrics
    from .training import resume_config, train

    given = _train_options(args)
    if args.resume:
        refused = [f"--{k.replace('_', '-')}" for k in given if k not in RESUME_FLAGS]
        refused += ["--recipe"] if args.recipe is not None else []
        if refused:
            raise Lenet5Error(f"{', '.join(refused)} cannot be changed when resuming; --resume "
                              f"continues {args.resume} with the settings in its config.json "
                              "(only --epochs, --device and --data-dir may be given): drop "
                              f"{'them' if len(refused) > 1 else 'it'}, or start a new run with "
                              "--out.")
        config = resume_config(args.resume, args.epochs)
        config.device = given.get("device", config.device)
        config.data_dir = given.get("data_dir", config.data_dir)
    else:
        config = _config_from(args)
    log = _stderr_log if args.json else print
    started = time.perf_counter()
    run_dir = train(config, resume=args.resume, log=log)
    seconds = time.perf_counter() - started
    try:
        page = (_write_run_report(run_dir, config.engine, config.device, log) if args.report
                else None)
    except KeyboardInterrupt as exc:  # the run is complete: only its figures are missing
        exc.finished_run = run_dir
        raise
    if args.json:
        metrics = read_metrics(run_dir)
        _emit_json({"run_dir": str(run_dir), "model": str(run_dir / MODEL_FILE),
                    "epochs": load_model(run_dir)[1]["epochs"],  # as the model file says
                    "test_acc": metrics[-1]["test_acc"],
                    "seconds": round(seconds, 3), "report": page and str(page),
                    "metrics": metrics})
    return 0


# --- recipes ------------------------------------------------------------------------------

def add_recipes(sub: Subparsers) -> None:
    recipes = _command(sub, "recipes", "List the training recipes: well-known LeNet-5 setups, "
                       "where each comes from, its published figure and what it measured here.")
    _json_flag(recipes)
    recipes.set_defaults(func=cmd_recipes)


def cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import all_recipes

    recipes = all_recipes()
    if args.json:
        _emit_json([r.as_json() for r in recipes])
        return 0
    for r in recipes:
        figure = r.reference["figure"]
        published = f"published {figure:.2f}%" if figure is not None else "no published figure"
        m = r.measured
        measured = (f"; here {m['mean']:.2f} +- {m['std']:.2f}% (n = {m['n']})" if m.get("n")
                    else f"; here all {m['failed']} runs failed" if m.get("failed") else "")
        print(f"{r.name}: {r.description}")
        print(f"    {published}{measured}")
        print(f"    lenet5 train --recipe {r.name}   (= {r.flags() or 'the defaults'})")
    return 0


# --- sweep --------------------------------------------------------------------------------

def add_sweep(sub: Subparsers) -> None:
    sweep = _command(sub, "sweep", "Train every setting of a grid with several seeds, as "
                     "ordinary run directories, and compare them with statistics.")
    _training_flags(sweep)
    sweep.add_argument("--seeds", type=int, required=True,
                       help="seeds per setting: 0, 1, ... N-1 (required)")
    sweep.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                       help="settings to compare: a train option and its values, e.g. "
                       "pool=max,avg lr=1e-3,3e-3 (every combination; default: one setting)")
    sweep.add_argument("--out", required=True, metavar="DIR", type=_folder,
                       help="folder for the runs, summary.json, summary.md and sweep.png "
                       "(required; an existing sweep there is resumed)")
    sweep.add_argument("--workers", type=int, default=None,
                       help="runs at once on this machine, each on one BLAS thread (default: "
                       "one per CPU core)")
    sweep.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                       help="run each run as a task on a Ray cluster (needs the cluster extra; "
                       "default: local processes)")
    _json_flag(sweep)
    sweep.set_defaults(func=cmd_sweep, parser=sweep)


def _parse_grid(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, list]:
    """``KEY=V1,V2`` items -> {TrainConfig field: [values]}, each value parsed and checked as
    its flag would be."""
    from .training import TrainConfig

    actions = {a.dest: a for a in parser._actions}
    grid: dict[str, list] = {}
    for item in items:
        key, _, values = item.partition("=")
        field = key.strip().lstrip("-").replace("-", "_")
        if field == "seed":
            raise Lenet5Error(f"--grid {item}: seeds are not a grid axis; give their count, "
                              "--seeds N (seeds 0 to N-1).")
        if field in ("out", "recipe") or field not in TrainConfig.__dataclass_fields__:
            raise Lenet5Error(f"--grid {item}: {key!r} is not a train option; use e.g. "
                              "pool=max,avg or lr=1e-3,3e-3.")
        if not values:
            raise Lenet5Error(f"--grid {item}: give values after '=', e.g. {field}=V1,V2.")
        if field in grid:
            raise Lenet5Error(f"--grid {item}: {field} is a grid axis already; give all its "
                              f"values in one item, e.g. {field}=V1,V2.")
        parsed: list = []
        for value in values.split(","):
            parsed.append(_grid_value(actions[field], item, field, value))
            if parsed[-1] in parsed[:-1]:  # two runs would share one directory
                raise Lenet5Error(f"--grid {item}: {value!r} gives {field} "
                                  f"{parsed[-1]!r} twice; give each value once.")
        grid[field] = parsed
    return grid


def _grid_value(action: argparse.Action, item: str, field: str, value: str) -> object:
    """One value of a --grid item, parsed and checked as its flag would be."""
    if action.nargs == 0:  # a switch: true or false
        if value.lower() not in ("true", "false"):
            raise Lenet5Error(f"--grid {item}: {field} takes true or false.")
        return value.lower() == "true"
    try:
        parsed = action.type(value) if action.type else value
    except (ValueError, argparse.ArgumentTypeError):
        raise Lenet5Error(f"--grid {item}: {value!r} is not a valid {field}; give values "
                          f"that --{field.replace('_', '-')} takes (`lenet5 train --help` "
                          "says which).") from None
    if action.choices and parsed not in action.choices:
        raise Lenet5Error(f"--grid {item}: {value!r} is not a valid {field}; choose "
                          f"from {', '.join(map(str, action.choices))}.")
    return parsed


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import run_sweep

    grid = _parse_grid(args.parser, args.grid)
    summary = run_sweep(_config_from(args), grid, args.seeds, Path(args.out),
                        workers=args.workers, ray_address=args.ray, log=_stderr_log)
    if args.json:
        _emit_json(summary)
    return 1 if any(s["failed"] for s in summary["settings"]) else 0


# --- report -------------------------------------------------------------------------------

def add_report(sub: Subparsers) -> None:
    report = _command(sub, "report", "Write a run's figures (curves, confusion matrix, "
                      "mistakes, feature maps, C1 filters) and report.html into its directory "
                      "or another.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="run directory made by `lenet5 train`")
    report.add_argument("--out", metavar="DIR", default=None, type=_folder,
                        help="folder to write them into, made if need be (default: RUN_DIR)")
    _engine_flags(report)
    report.set_defaults(func=cmd_report)


def _write_run_report(run_dir: Path, engine: str, device: str, log: Callable[[str], None],
                      out: str | None = None) -> Path:
    """The figures and report.html of a run, into `out` or the run; returns the page's path."""
    from .report import write_report

    page = write_report(run_dir, out=out, engine=engine, device=device, log=log)[-1]
    log(f"report: {page}")
    return page


def cmd_report(args: argparse.Namespace) -> int:
    from .files import WriteError

    try:
        _write_run_report(Path(args.run_dir), args.engine, args.device, print, args.out)
    except WriteError as exc:  # "write somewhere else": say how
        if args.out is not None or exc.errno is None:
            raise
        raise WriteError(f"{str(exc).rstrip('.')} (`lenet5 report {args.run_dir} --out DIR` "
                         "writes the report into another folder).", exc.errno) from None
    return 0


# --- evaluate -----------------------------------------------------------------------------

def add_evaluate(sub: Subparsers) -> None:
    evaluate = _command(sub, "evaluate", "Measure a model on the test set.")
    _model_argument(evaluate)
    _engine_flags(evaluate, inference=True)
    _dataset_flags(evaluate, None, " (default: the one the model was trained on)")
    _json_flag(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load as load_dataset
    from .engine import evaluate
    from .model import load

    model = load(args.model, engine=args.engine, device=args.device)
    dataset_name = args.dataset or model.metadata.get("dataset", "mnist")
    data = load_dataset(dataset_name, args.data_dir, log=_stderr_log)
    started = time.perf_counter()
    loss_sum, preds = evaluate(model.engine, model.inputs(data.test_images),
                               data.test_labels.astype(np.int64))
    seconds = time.perf_counter() - started
    n = len(preds)
    errors = int(np.count_nonzero(preds != data.test_labels))
    result = {"accuracy": (n - errors) / n, "loss": loss_sum / n, "n": n, "errors": errors,
              "seconds": round(seconds, 4), "arch": model.arch.name, "engine": model.engine.name,
              "dataset": dataset_name}
    return _answer(args, result, f"{model.arch.name} on {dataset_name} test ({n:,} images, "
                   f"{model.engine.name} engine): accuracy {100 * result['accuracy']:.2f}% "
                   f"({errors} errors), loss {result['loss']:.4f}, {seconds:.2f} s")


# --- predict ------------------------------------------------------------------------------

def add_predict(sub: Subparsers) -> None:
    from .files import MODEL_FILE
    from .pretrained import NAME as PRETRAINED

    predict = _command(sub, "predict", "Classify your own images (photos, scans, drawings).")
    predict.add_argument("inputs", nargs="+", metavar="[MODEL] IMAGE_OR_DIR",
                         help=f"image files or folders (searched recursively), after an optional "
                         f"MODEL: the first argument is the model when it is `{PRETRAINED}`, a "
                         f".safetensors or .onnx file, or a folder holding {MODEL_FILE} (a run "
                         f"directory; one without it is an error that says so); otherwise "
                         f"it is an image too and the model shipped with lenet5 ({PRETRAINED}) "
                         "answers")
    _engine_flags(predict, inference=True)
    predict.add_argument("--top-k", type=int, default=3, help="alternatives to show")
    predict.add_argument("--save-input", default=None, metavar="DIR", type=_folder,
                         help="write each image, its digits boxed, beside the 28x28 images "
                         "the network saw, into DIR, under names that are none of the images' "
                         "(default: nothing written)")
    _reject_flag(predict)
    _json_flag(predict)
    predict.set_defaults(func=cmd_predict, intermixed=True)  # IMAGE after an option too
    # argparse repeats the whole metavar, as if a model could come after every image
    predict.usage = re.sub(r"\[\[MODEL\]\s+IMAGE_OR_DIR\s+\.\.\.\]", "[IMAGE_OR_DIR ...]",
                           predict.format_usage().removeprefix("usage: ").rstrip())


def _model_and_images(inputs: list[str]) -> tuple[str, list[str]]:
    """(MODEL, images) of predict's arguments: the first is the model when it names one, or
    when it names nothing that exists and is not named like an image (a mistyped run
    directory must be an error, not a missing image beside answers from another model)."""
    from .files import holds_run
    from .predict import IMAGE_SUFFIXES
    from .pretrained import NAME as PRETRAINED

    first = Path(inputs[0])
    # os.path's tests, not Path's, which raise on Python 3.11 for a path this user may not
    # look at (in a folder without search permission): such a path is missing to them, so
    # that loading it as the model says why, or, named like an image, reading it does
    missing = (len(inputs) > 1 and not os.path.exists(first)
               and first.suffix.lower() not in IMAGE_SUFFIXES)
    # a run with no model (yet, or any more) too: loading it says so, where the pretrained
    # model would have answered for it as a folder of pictures
    is_model = (inputs[0] == PRETRAINED or _names_a_model(first) or missing
                or (os.path.isdir(first) and holds_run(first)))
    model, images = (inputs[0], inputs[1:]) if is_model else (PRETRAINED, inputs)
    misplaced = next((image for image in images if _names_a_model(Path(image))), None)
    if misplaced:  # else its run directory's figures would be read as pictures of digits
        raise Lenet5Error(f"{misplaced} is a model, not a picture; name the model first: "
                          f"`lenet5 predict {misplaced} IMAGE_OR_DIR ...`.")
    return model, images


def _names_a_model(path: Path) -> bool:
    """Whether a path is a model file or a run directory holding one."""
    from .files import MODEL_FILE

    return (os.path.isdir(path) and os.path.isfile(path / MODEL_FILE)) or \
        path.suffix.lower() in (".safetensors", ".onnx")


def cmd_predict(args: argparse.Namespace) -> int:
    from .model import load
    from .predict import NO_PICTURES, Unreadable, find_images, predict_each

    model_path, images = _model_and_images(args.inputs)
    if not images:
        raise Lenet5Error(f"no images given after the model {model_path}; pass image files or "
                          "folders after it.")
    files = find_images(images)
    if all(isinstance(file, Unreadable) for file in files):  # nothing to read at all:
        unlisted = [file.error for file in files if not file.empty]  # why, where not empty
        raise Lenet5Error(unlisted[0] if unlisted else
                          f"no images found in {', '.join(images)}{NO_PICTURES}")
    model = load(model_path, engine=args.engine, device=args.device)
    results: list[dict] = []
    try:
        for r in predict_each(model, files, top_k=args.top_k, save_input=args.save_input,
                              threshold=args.reject_threshold):
            results.append(r)
            if not args.json:
                _print_reading(r, model.classes)
    except KeyboardInterrupt:  # what was read is not lost: JSON of the files read so far
        if args.json:
            _emit_json(results)
        raise
    if args.json:
        _emit_json(results)
    failed = sum("error" in r for r in results)
    if failed:
        folders = sum(isinstance(file, Unreadable) for file in files[:len(results)])
        print(f"lenet5: {_failures(failed - folders, len(results) - folders, folders)}.",
              file=sys.stderr)
    saved = sum(bool(r.get("saved_input")) for r in results)
    if saved and not args.json:  # --json names each file's
        print(f"lenet5: --save-input: what the network saw of {saved} picture"
              f"{'s' if saved != 1 else ''} is in {args.save_input}.", file=sys.stderr)
    unsaved = [r["save_error"] for r in results if "save_error" in r]
    if unsaved:
        print(f"lenet5: --save-input: {len(unsaved)} of {len(results)} pictures could not be "
              f"written, the first: {unsaved[0]}", file=sys.stderr)
    return 1 if failed or unsaved else 0


def _failures(failed: int, images: int, folders: int) -> str:
    """What could not be read, images and folders that gave none counted apart: "2 of 5
    images could not be classified; 1 folder gave no image"."""
    said = [f"{failed} of {images} image{'s' if images != 1 else ''} could not be "
            "classified"] if failed else []
    if folders:
        said.append(f"{folders} folder{'s' if folders != 1 else ''} gave no image")
    return "; ".join(said)


def _print_reading(r: dict, classes: Sequence[str]) -> None:
    if "error" in r:
        print(f"{r['file']}: error: {r['error']}", file=sys.stderr)
    elif r["rejected"]:
        print(f"{r['file']}: not read: {r['rejected']}")
    elif len(r["digits"]) > 1:
        print(f"{r['file']}: {r['text']} (" + ", ".join(
            f"{classes[d['label']]} {100 * d['confidence']:.1f}%" for d in r["digits"]) + ")")
    else:
        alternatives = ", ".join(f"{classes[k]} {100 * p:.1f}%" for k, p in r["top"])
        print(f"{r['file']}: {classes[r['label']]} ({alternatives})")


# --- export -------------------------------------------------------------------------------

def add_export(sub: Subparsers) -> None:
    from .files import MODEL_FILE
    from .onnx_graph import MIN_OPSET, OPSET, TORCH_MAX_OPSET, VIAS
    from .pretrained import NAME as PRETRAINED

    export = _command(sub, "export", "Write a model as a self-contained ONNX file: raw 0-255 "
                      "pixels (N, 1, 28, 28) in, logits (N, 10) out, checked against "
                      "onnxruntime; or (--format web) as a static site: the draw-a-digit page "
                      "computing in the browser, for any static host.")
    export.add_argument("model", nargs="?", default=PRETRAINED,
                        help=f"{MODEL_FILE}, a run directory, or {PRETRAINED} (the model shipped "
                        f"with lenet5) (default: {PRETRAINED})")
    export.add_argument("--format", choices=("onnx", "web"), default="onnx",
                        help="onnx: one .onnx file; web: a folder holding the static site")
    export.add_argument("-o", "--output", required=True, metavar="PATH",
                        help="file to write, e.g. model.onnx, or with --format web a new or "
                        "empty folder (required, no default)")
    export.add_argument("--via", choices=VIAS, default=None,
                        help="numpy builds the graph with the onnx package alone; torch uses "
                        "torch.onnx.export on the torch engine's network (--format onnx only; "
                        "default: numpy)")
    export.add_argument("--opset", type=int, default=None,
                        help=f"ONNX opset, {MIN_OPSET} or newer, at most {TORCH_MAX_OPSET} with "
                        f"--via torch (--format onnx only; default: {OPSET})")
    _json_flag(export)
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "web":
        if args.via is not None or args.opset is not None:
            raise Lenet5Error("--via and --opset choose how an ONNX file is written; drop them "
                              "with --format web.")
        return _export_web(args)
    from .export import export
    from .onnx_graph import OPSET

    facts = export(args.model, args.output, via=args.via or "numpy",
                   opset=OPSET if args.opset is None else args.opset)
    return _answer(args, facts, f"wrote {facts['path']} ({facts['bytes'] / 1024:.0f} KiB, "
                   f"{facts['arch']}, opset {facts['opset']}, via {facts['via']}); onnxruntime "
                   f"matches the numpy engine to {facts['max_abs_logit_diff']:.1e}")


def _export_web(args: argparse.Namespace) -> int:
    from .site import write_site

    facts = write_site(args.model, args.output)
    return _answer(args, facts, f"wrote the {facts['arch']} page to {facts['path']} "
                   f"({len(facts['files'])} files, {facts['bytes'] / 1024:.0f} KiB); try it with "
                   f"`python -m http.server -d {facts['path']}` and http://127.0.0.1:8000/, or "
                   "copy it to any static host")


# --- summary ------------------------------------------------------------------------------

def add_summary(sub: Subparsers) -> None:
    from .arch import ARCHITECTURES, LENET5, MODERN_ACTIVATIONS, POOLS

    summary = _command(sub, "summary", "Show an architecture's layers, parameters and "
                       "connections.")
    summary.add_argument("--arch", choices=tuple(ARCHITECTURES), default=LENET5.name,
                         help="architecture")
    summary.add_argument("--pool", choices=POOLS, default=None,
                         help="lenet5's pooling variant (default: max)")
    summary.add_argument("--activation", choices=MODERN_ACTIVATIONS, default=None,
                         help="lenet5's activation variant (default: relu)")
    _json_flag(summary)
    summary.add_argument("--bitmaps", action="store_true",
                         help="also show the fixed RBF centres (lenet5-1998; with --json, as "
                         "rbf_centres, 10 lists of 84 values +1/-1)")
    summary.set_defaults(func=cmd_summary)


def cmd_summary(args: argparse.Namespace) -> int:
    from .arch import RBF, format_bitmaps, get_arch, rbf_centres

    arch = get_arch(args.arch, args.pool, args.activation)
    rows = arch.layer_counts()
    document = {"arch": arch.name, **arch.variant, "layers": rows,
                "total_params": sum(r["params"] for r in rows),
                "total_connections": sum(r["connections"] for r in rows)}
    if args.bitmaps:
        if not any(isinstance(layer, RBF) for layer in arch.layers):
            raise Lenet5Error(f"--arch {arch.name} has no RBF centres to show; use --bitmaps "
                              "with --arch lenet5-1998.")
        centres = rbf_centres()  # (10, 84) of +1/-1
        document["rbf_centres"] = centres.astype(int).tolist()
    if args.json:
        _emit_json(document)
        return 0
    print(f"{arch.name}: {arch.description}")
    print(f"{'layer':<8}{'output':>14}{'params':>12}{'connections':>14}")
    for r in rows:
        shape = "x".join(str(d) for d in r["output"])
        print(f"{r['name']:<8}{shape:>14}{r['params']:>12,}{r['connections']:>14,}")
    print(f"{'total':<8}{'':>14}{document['total_params']:>12,}"
          f"{document['total_connections']:>14,}")
    if args.bitmaps:
        print(f"\nOUTPUT RBF centres (7x12 bitmaps, '#' = +1, '.' = -1):\n"
              f"{format_bitmaps(centres)}")
    return 0


# --- serve --------------------------------------------------------------------------------

def add_serve(sub: Subparsers) -> None:
    from .files import MODEL_FILE, RUNS_DIR

    serve = _command(sub, "serve", "Serve the draw-a-digit web page and its HTTP API (needs "
                     "the web extra).")
    serve.add_argument("model", nargs="?", default=None,
                       help=f"{MODEL_FILE}, a run directory or pretrained (default: the newest "
                       f"finished run under ./{RUNS_DIR}/, else pretrained, the model shipped "
                       "with lenet5)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; 0.0.0.0 exposes it to your network")
    serve.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    serve.add_argument("--workers", type=int, default=None,
                       help="processes answering requests, each with its own copy of the model "
                       "and a core of its own, at most one per core (default: one per core, "
                       "at most 4)")
    _engine_flags(serve)
    _reject_flag(serve)
    serve.set_defaults(func=cmd_serve)


def _trained_to_the_end(run: Path) -> bool:
    """Its refusal calibrated, the last thing a run does (not stopped part-way)."""
    from .checkpoint import load_model
    from .refusal import calibrated

    try:
        return calibrated(load_model(run)[1])
    except Lenet5Error:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise Lenet5Error(f"`lenet5 serve` needs the web extra ({exc}); install it with "
                          "`pip install -e '.[web]' -c constraints.txt`.") from None
    from . import pretrained
    from .files import is_onnx_file, newest_run
    from .model import load
    from .refusal import check_threshold
    from .server import default_workers, listen, serve, usable_cores

    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise Lenet5Error(f"--workers must be at least 1, got {workers}.")
    if workers > (cores := usable_cores()):
        raise Lenet5Error(f"--workers {workers} is more than the {cores} core"
                          f"{'s' if cores > 1 else ''} this machine lets lenet5 use; each worker "
                          f"computes on a core of its own, so choose {cores} or fewer.")
    check_threshold(args.reject_threshold)
    model = args.model or newest_run(finished=_trained_to_the_end) or pretrained.NAME
    if is_onnx_file(model):
        raise Lenet5Error(f"{model} is an ONNX file; `lenet5 serve` runs models in the numpy "
                          "or torch engine: give the model's .safetensors file or its run "
                          "directory.")
    load(model, engine=args.engine, device=args.device)  # a bad model fails here, not in workers
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"lenet5: serving {model} ({args.engine} engine, {workers} worker"
          f"{'s' if workers > 1 else ''}) on http://{shown}:{port}/ (Ctrl+C stops)",
          file=sys.stderr, flush=True)
    serve(sock, model, args.engine, args.device, workers, args.reject_threshold)
    return 0


# --- the command ----------------------------------------------------------------------------

COMMANDS = (add_data, add_train, add_recipes, add_sweep, add_evaluate, add_predict, add_export,
            add_report, add_summary, add_serve)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, as every other error (the usage is a --help away)."""

    def __init__(self, *args, argv: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.argv = argv  # what it parses, where known: a path named like an option is told of

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", functools.partial(_Parser, argv=self.argv))
        return super().add_subparsers(**kwargs)

    def error(self, message: str):
        given = self.argv[:self.argv.index("--")] if "--" in self.argv else self.argv
        dashed = next((word for word in given
                       if word.startswith("-") and os.path.lexists(word)), None)
        if dashed:  # -photo.png, taken for an option
            message += f" ({dashed} is a file or folder: write it as ./{dashed})"
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`.\n")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The `lenet5` parser; ``argv``, what it will parse, lets usage errors name a path
    that was taken for an option."""
    parser = _Parser(
        prog="lenet5", formatter_class=_Formatter, argv=argv,
        description="Train, evaluate and use LeNet-5 on MNIST-style digits.",
        epilog="Run `lenet5 COMMAND --help` for each command's options.")
    parser.add_argument("--version", action="version", version=f"lenet5 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    parser.set_defaults(commands=sub.choices)  # each command's parser, for its usage errors
    return parser


_sigterm_received = threading.Event()  # Ray re-raises a Terminated as a KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in this (the main) thread while inside, so that a run
    stopped by `kill` cleans up and says how to go on, as after Ctrl-C; Python's default
    would end the process without a word."""
    def terminated(signum: int, frame: object) -> None:
        _sigterm_received.set()
        raise Terminated

    _sigterm_received.clear()
    with handling(signal.SIGTERM, terminated):
        yield


def _to_go_on(command: str, interrupt: KeyboardInterrupt) -> str:
    """How to go on after Ctrl-C stopped a command: a run resumes (its directory is set on the
    interrupt where training had chosen it), a sweep goes on where it was; else nothing."""
    run = getattr(interrupt, "run_directory", None)
    if command == "train" and run is not None:
        from .files import STATE_FILE, holds_run

        if (run / STATE_FILE).exists():
            return (f"; the run continues from its last finished epoch with `lenet5 train "
                    f"--resume {run}`")
        if holds_run(run):  # its config.json: stopped in its first epoch
            return f"; no epoch had finished: `lenet5 train --resume {run}` starts the run again"
        return "; no epoch had finished and nothing was kept: run the command again"
    finished = getattr(interrupt, "finished_run", None)
    if command == "train" and finished is not None:
        return (f" while writing the report; the run is finished in {finished}, and `lenet5 "
                f"report {finished}` writes its figures")
    if command == "sweep":
        return ("; run the same command again to go on: finished runs are kept, the others "
                "resume")
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _print_anything()
    try:
        parser = build_parser(argv)
        args, unknown = parser.parse_known_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the commands' modules load
        print("lenet5: interrupted.", file=sys.stderr)
        return 130
    if unknown and getattr(args, "intermixed", False):  # `predict a.png --json b.png`: the
        command = args.commands[args.command]  # command's arguments again, in any order
        rest = argv[argv.index(args.command) + 1:]
        vars(args).update(vars(command.parse_intermixed_args(rest)))
        unknown = []
    if unknown:  # named by the command's parser, whose --help lists what it takes
        args.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with _terminate_as_interrupt():  # `kill`, `timeout`, a container stopping: as Ctrl-C
            return args.func(args)
    except Lenet5Error as exc:
        print(f"lenet5: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated) or _sigterm_received.is_set()
        print(f"lenet5: {'terminated' if terminated else 'interrupted'}"
              f"{_to_go_on(args.command, exc)}.", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # `lenet5 ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # met where nothing said more (a path in a folder this user may
        print(f"lenet5: error: {_os_error(exc)}", file=sys.stderr)  # not enter: Python
        return 1  # 3.11's Path tests raise there)


def _print_anything() -> None:
    """Let stdout and stderr write any text, what their encoding cannot as escapes: a file
    name that is not UTF-8 comes in as lone surrogates (os.fsdecode), which a strict UTF-8
    stream refuses after the work is done, and a plain ASCII locale refuses '±'."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _os_error(exc: OSError) -> str:
    """One sentence for an OSError no command explained: the file, what went wrong, and
    what to do."""
    from .files import DISK_FULL, ERRNO_MEANINGS

    if exc.errno in DISK_FULL | {errno.ENAMETOOLONG, errno.ENOTDIR}:  # reading or writing
        advice = ERRNO_MEANINGS[exc.errno]
    else:
        advice = ("check the path and its permissions" if exc.filename is not None
                  else "check the paths given and their permissions")
    what = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{what}{exc.strerror or exc}; {advice}."


if __name__ == "__main__":
    sys.exit(main())
