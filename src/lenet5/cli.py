"""The ``lenet5`` command: parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import Lenet5Error

DATASET_NAMES = ("mnist", "fashion-mnist")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _emit_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def _quiet_log(_: str) -> None:
    pass


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr)


# --- data ---------------------------------------------------------------------------------

def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import fetch

    path = fetch(args.dataset, args.data_dir, log=_stderr_log)
    print(path)
    return 0


# --- train --------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, read_metrics, resume_config, train

    if args.resume:
        config = resume_config(args.resume, args.epochs)
    else:
        fields = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__
                  if getattr(args, k, None) is not None}
        config = TrainConfig(**fields)
    log = _stderr_log if args.json else print
    started = time.perf_counter()
    run_dir = train(config, resume=args.resume, log=log)
    if args.json:
        metrics = read_metrics(run_dir)
        _emit_json({"run_dir": str(run_dir), "model": str(run_dir / "model.safetensors"),
                    "epochs": len(metrics), "test_acc": metrics[-1]["test_acc"],
                    "seconds": round(time.perf_counter() - started, 3), "metrics": metrics})
    return 0


# --- evaluate -----------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load as load_dataset
    from .model import load

    model = load(args.model, engine=args.engine, device=args.device)
    dataset_name = args.dataset or model.metadata.get("dataset", "mnist")
    data = load_dataset(dataset_name, args.data_dir, log=_stderr_log)
    started = time.perf_counter()
    loss_sum, preds = model.engine.evaluate(model.inputs(data.test_images),
                                            data.test_labels.astype(np.int64))
    seconds = time.perf_counter() - started
    n = len(preds)
    errors = int(np.count_nonzero(preds != data.test_labels))
    result = {"accuracy": (n - errors) / n, "loss": loss_sum / n, "n": n, "errors": errors,
              "seconds": round(seconds, 4), "arch": model.arch.name, "engine": model.engine.name,
              "dataset": dataset_name}
    if args.json:
        _emit_json(result)
    else:
        print(f"{model.arch.name} on {dataset_name} test ({n:,} images, {model.engine.name} "
              f"engine): accuracy {100 * result['accuracy']:.2f}% ({errors} errors), "
              f"loss {result['loss']:.4f}, {seconds:.2f} s")
    return 0


# --- predict ------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _expand_inputs(paths: Sequence[str]) -> list[str]:
    """Files as given; directories recursively, sorted, keeping image files only."""
    found: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found.extend(str(f) for f in sorted(path.rglob("*"))
                         if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .images import open_image, preprocess_image, side_by_side
    from .model import load

    if args.top_k < 1:
        raise Lenet5Error(f"--top-k must be at least 1, got {args.top_k}.")
    model = load(args.model, engine=args.engine, device=args.device)
    files = _expand_inputs(args.images)
    if not files:
        raise Lenet5Error("no images found in " + ", ".join(args.images) + "; pass image files "
                          "(PNG, JPEG, BMP, GIF, TIFF, WebP) or folders holding them.")
    if args.save_input:
        Path(args.save_input).mkdir(parents=True, exist_ok=True)
    results = []
    for file in files:
        try:
            original = open_image(file)
            digit = preprocess_image(original)  # (28, 28) uint8
        except Lenet5Error as exc:
            results.append({"file": file, "error": str(exc)})
            continue
        probs = model.predict_proba(digit)[0]
        order = np.argsort(-probs)[:min(args.top_k, len(probs))]
        results.append({"file": file, "label": int(order[0]), "confidence": float(probs[order[0]]),
                        "top": [[int(k), float(probs[k])] for k in order]})
        if args.save_input:
            side_by_side(original, digit).save(Path(args.save_input) / (Path(file).stem + ".png"))
    if args.json:
        _emit_json(results)
    else:
        for r in results:
            if "error" in r:
                print(f"{r['file']}: error: {r['error']}", file=sys.stderr)
            else:
                alternatives = ", ".join(f"{model.classes[k]} {100 * p:.1f}%" for k, p in r["top"])
                print(f"{r['file']}: {model.classes[r['label']]} ({alternatives})")
    return 1 if any("error" in r for r in results) else 0


# --- summary ------------------------------------------------------------------------------

def cmd_summary(args: argparse.Namespace) -> int:
    from .arch import get_arch

    arch = get_arch(args.arch)
    rows = arch.layer_counts()
    document = {"arch": arch.name, "layers": rows,
                "total_params": sum(r["params"] for r in rows),
                "total_connections": sum(r["connections"] for r in rows)}
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
    return 0


# --- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .arch import ARCHITECTURES
    from .engine import ENGINES
    from .hparams import OPTIMIZERS, SCHEDULES
    from .training import TrainConfig

    d = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="lenet5", formatter_class=_Formatter,
        description="Train, evaluate and use LeNet-5 on MNIST-style digits.",
        epilog="Run `lenet5 COMMAND --help` for each command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter, **kw)

    def engine_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--engine", choices=ENGINES, default="numpy", help="engine that computes")
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="torch engine device; auto picks CUDA when available")

    data = command("data", "Fetch and verify datasets.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download (or copy) and verify a dataset",
                                description="Download (or copy) a dataset into the cache and "
                                "verify every file's SHA-256.", formatter_class=_Formatter)
    fetch.add_argument("--dataset", choices=DATASET_NAMES, default="mnist", help="dataset")
    fetch.add_argument("--data-dir", default=None,
                       help="folder holding the four IDX files (raw or .gz) to use first")
    fetch.set_defaults(func=cmd_data_fetch)

    train = command("train", "Train a model; writes a run directory.")
    train.add_argument("--arch", choices=tuple(ARCHITECTURES), default=d.arch, help="architecture")
    engine_flags(train)
    train.add_argument("--epochs", type=int, default=None,
                       help=f"passes over the training set (default: {d.epochs}; with --resume, "
                       "the run's own)")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help="mini-batch size")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="optimizer")
    train.add_argument("--lr", type=float, default=d.lr, help="(peak) learning rate")
    train.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                       help="learning-rate schedule")
    train.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    train.add_argument("--weight-decay", type=float, default=d.weight_decay,
                       help="L2 weight decay (decoupled for adamw)")
    train.add_argument("--seed", type=int, default=d.seed, help="random seed (init, shuffling)")
    train.add_argument("--val-size", type=int, default=d.val_size,
                       help="training images held out for validation")
    train.add_argument("--limit", type=int, default=None,
                       help="train on the first N training images only (default: all)")
    train.add_argument("--dataset", choices=DATASET_NAMES, default=d.dataset, help="dataset")
    train.add_argument("--data-dir", default=None, help="folder holding the dataset's IDX files")
    train.add_argument("--out", default=None,
                       help="run directory (default: runs/<arch>-<engine>-<date>-<time>)")
    train.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue an interrupted run from its last finished epoch")
    train.add_argument("--json", action="store_true",
                       help="print one JSON summary on stdout (progress goes to stderr)")
    train.set_defaults(func=cmd_train)

    evaluate = command("evaluate", "Measure a model on the test set.")
    evaluate.add_argument("model", help="model.safetensors or a run directory")
    engine_flags(evaluate)
    evaluate.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                          help="dataset (default: the one the model was trained on)")
    evaluate.add_argument("--data-dir", default=None, help="folder holding the IDX files")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = command("predict", "Classify your own images (photos, scans, drawings).")
    predict.add_argument("model", help="model.safetensors or a run directory")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                         help="image files or folders (searched recursively)")
    engine_flags(predict)
    predict.add_argument("--top-k", type=int, default=3, help="alternatives to show")
    predict.add_argument("--save-input", default=None, metavar="DIR",
                         help="write each image beside the 28x28 the network saw")
    predict.add_argument("--json", action="store_true", help="print one JSON document")
    predict.set_defaults(func=cmd_predict)

    summary = command("summary", "Show an architecture's layers, parameters and connections.")
    summary.add_argument("--arch", choices=tuple(ARCHITECTURES), default="lenet5",
                         help="architecture")
    summary.add_argument("--json", action="store_true", help="print one JSON document")
    summary.set_defaults(func=cmd_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Lenet5Error as exc:
        print(f"lenet5: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lenet5: interrupted; a training run continues from its last finished epoch with "
              "`lenet5 train --resume RUN_DIR`.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
