"""The ``lenet5`` command: parses arguments and calls the modules that do the work."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import Lenet5Error

DATASET_NAMES = ("mnist", "fashion-mnist")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """States each default, unless the help text already says what it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


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
    seconds = time.perf_counter() - started
    page = _write_run_report(run_dir, config.engine, config.device, log) if args.report else None
    if args.json:
        metrics = read_metrics(run_dir)
        _emit_json({"run_dir": str(run_dir), "model": str(run_dir / "model.safetensors"),
                    "epochs": len(metrics), "test_acc": metrics[-1]["test_acc"],
                    "seconds": round(seconds, 3), "report": page and str(page),
                    "metrics": metrics})
    return 0


# --- report -------------------------------------------------------------------------------

def _write_run_report(run_dir: Path, engine: str, device: str,
                      log: Callable[[str], None]) -> Path:
    """The figures and report.html of a run; returns the page's path."""
    from .report import write_report

    page = write_report(run_dir, engine=engine, device=device, log=log)[-1]
    log(f"report: {page}")
    return page


def cmd_report(args: argparse.Namespace) -> int:
    _write_run_report(Path(args.run_dir), args.engine, args.device, print)
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

def cmd_predict(args: argparse.Namespace) -> int:
    from .model import load
    from .predict import find_images, predict_files

    files = find_images(args.images)
    if not files:
        raise Lenet5Error("no images found in " + ", ".join(args.images) + "; pass image files "
                          "(PNG, JPEG, BMP, GIF, TIFF, WebP) or folders holding them.")
    model = load(args.model, engine=args.engine, device=args.device)
    results = predict_files(model, files, top_k=args.top_k, save_input=args.save_input,
                            threshold=args.reject_threshold)
    if args.json:
        _emit_json(results)
    else:
        for r in results:
            if "error" in r:
                print(f"{r['file']}: error: {r['error']}", file=sys.stderr)
            elif r["rejected"]:
                print(f"{r['file']}: not read: {r['rejected']}")
            elif len(r["digits"]) > 1:
                print(f"{r['file']}: {r['text']} (" + ", ".join(
                    f"{model.classes[d['label']]} {100 * d['confidence']:.1f}%"
                    for d in r["digits"]) + ")")
            else:
                alternatives = ", ".join(f"{model.classes[k]} {100 * p:.1f}%" for k, p in r["top"])
                print(f"{r['file']}: {model.classes[r['label']]} ({alternatives})")
    failed = sum("error" in r for r in results)
    if failed:
        print(f"lenet5: {failed} of {len(results)} images could not be classified.",
              file=sys.stderr)
    return 1 if failed else 0


# --- export -------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    facts = export(args.model, args.output, via=args.via, opset=args.opset)
    if args.json:
        _emit_json(facts)
    else:
        print(f"wrote {facts['path']} ({facts['bytes'] / 1024:.0f} KiB, {facts['arch']}, "
              f"opset {facts['opset']}, via {facts['via']}); onnxruntime matches the numpy "
              f"engine to {facts['max_abs_logit_diff']:.1e}")
    return 0


# --- summary ------------------------------------------------------------------------------

def cmd_summary(args: argparse.Namespace) -> int:
    from .arch import RBF, format_bitmaps, get_arch, rbf_centres

    arch = get_arch(args.arch)
    rows = arch.layer_counts()
    document = {"arch": arch.name, "layers": rows,
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

def _newest_run(runs: Path = Path("runs")) -> Path:
    """The run directory under ./runs/ whose model.safetensors was written last."""
    models = sorted(runs.glob("*/model.safetensors"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise Lenet5Error("no trained model found under ./runs/; run `lenet5 train` first, or "
                          "pass a model.safetensors file or run directory.")
    return models[-1].parent


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise Lenet5Error(f"`lenet5 serve` needs the web extra ({exc}); install it with "
                          "`pip install -e '.[web]'`.") from None
    from .model import load
    from .refusal import check_threshold
    from .server import default_workers, listen, serve

    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise Lenet5Error(f"--workers must be at least 1, got {workers}.")
    check_threshold(args.reject_threshold)
    model = args.model or _newest_run()
    load(model, engine=args.engine, device=args.device)  # a bad model fails here, not in workers
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"lenet5: serving {model} ({args.engine} engine, {workers} worker"
          f"{'s' if workers > 1 else ''}) on http://{shown}:{port}/ (Ctrl+C stops)",
          file=sys.stderr, flush=True)
    serve(sock, model, args.engine, args.device, workers, args.reject_threshold)
    return 0


# --- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .arch import ARCHITECTURES
    from .data import distortions as dist
    from .engine import ENGINES, INFERENCE_ENGINES
    from .export import MIN_OPSET, OPSET, TORCH_MAX_OPSET, VIAS
    from .hparams import OPTIMIZERS, SCHEDULES, SDLM_WARMUP_FACTORS
    from .refusal import DEFAULT_THRESHOLD
    from .training import AUGMENTATIONS, TrainConfig, arch_defaults

    d = TrainConfig()

    def per_arch(key: str) -> str:
        """'default: 15 for lenet5, 20 for lenet5-1998' (one value when all agree)."""
        values = {name: arch_defaults(name)[key] for name in ARCHITECTURES}
        if len(set(values.values())) == 1:
            return f"default: {next(iter(values.values()))}"
        return "default: " + ", ".join(f"{v} for {k}" for k, v in values.items())

    def reject_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reject-threshold", type=float, default=None, metavar="P",
                       help="refuse a digit (answer 'not a digit') when its most probable "
                       "class has a probability below P, 0 to 1 (default: the threshold "
                       "calibrated when the model was trained, or "
                       f"{DEFAULT_THRESHOLD} for a model file without one)")

    parser = argparse.ArgumentParser(
        prog="lenet5", formatter_class=_Formatter,
        description="Train, evaluate and use LeNet-5 on MNIST-style digits.",
        epilog="Run `lenet5 COMMAND --help` for each command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_Formatter, **kw)

    def engine_flags(p: argparse.ArgumentParser, engines: tuple[str, ...] = ENGINES) -> None:
        p.add_argument("--engine", choices=engines, default="numpy", help="engine that computes"
                       + ("; onnx runs the model (or an exported .onnx file) in onnxruntime"
                          if "onnx" in engines else ""))
        p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="torch engine device; auto picks CUDA when available")

    data = command("data", "Fetch and verify datasets.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download (or copy) and verify a dataset",
                                description="Download (or copy) a dataset into the cache and "
                                "verify every file's SHA-256.", formatter_class=_Formatter)
    fetch.add_argument("--dataset", choices=DATASET_NAMES, default="mnist", help="dataset")
    fetch.add_argument("--data-dir", default=None,
                       help="folder holding the four IDX files (raw or .gz) to use first "
                       "(default: none; the cache is $LENET5_DATA or ~/.cache/lenet5)")
    fetch.set_defaults(func=cmd_data_fetch)

    train = command("train", "Train a model; writes a run directory.")
    train.add_argument("--arch", choices=tuple(ARCHITECTURES), default=d.arch, help="architecture")
    engine_flags(train)
    train.add_argument("--epochs", type=int, default=None,
                       help=f"passes over the training set ({per_arch('epochs')}; with "
                       "--resume, the run's own)")
    train.add_argument("--batch-size", type=int, default=None,
                       help=f"mini-batch size ({per_arch('batch_size')})")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help=f"optimizer ({per_arch('optimizer')})")
    train.add_argument("--lr", type=float, default=None,
                       help=f"learning rate, which the schedule scales ({per_arch('lr')})")
    train.add_argument("--schedule", choices=SCHEDULES, default=None,
                       help="learning-rate schedule: onecycle peaks at --lr; sdlm is the 1998 "
                       "paper's per-pass steps (--lr 5e-4 is the paper's), sdlm-warmup the "
                       "same with the first passes at "
                       + ", ".join(f"1/{1 / f:g}" for f in SDLM_WARMUP_FACTORS)
                       + f" of it ({per_arch('schedule')})")
    train.add_argument("--augment", nargs="?", const="affine", choices=AUGMENTATIONS,
                       default=None, help="random distortions of the training digits each "
                       "epoch: shift (translations up to 2 px), affine (the 1998 paper's "
                       f"kinds: translation up to {dist.MAX_SHIFT:g} px, scaling up to "
                       f"{dist.MAX_SCALE * 100:g}%%, squeezing up to {dist.MAX_SQUEEZE * 100:g}%%, "
                       f"shearing up to {dist.MAX_SHEAR:g}, and "
                       f"rotation up to {math.degrees(dist.MAX_ROTATION):g} degrees; plain "
                       "--augment), elastic (affine + elastic) or none "
                       f"({per_arch('augment')})")
    train.add_argument("--nondigits", type=float, default=None, metavar="FRACTION",
                       help="made-up non-digits added to the training set, as a fraction of "
                       "it (strokes, scribbles, hatching, shapes, blots, and junk cut from "
                       "pairs of digits), which teach the network to refuse what is not a "
                       f"digit; 0 turns it off ({per_arch('nondigits')})")
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
    train.add_argument("--data-dir", default=None, help="folder holding the dataset's IDX files "
                       "(default: the verified cache, $LENET5_DATA or ~/.cache/lenet5)")
    train.add_argument("--out", default=None,
                       help="run directory (default: runs/<arch>-<engine>-<date>-<time>)")
    train.add_argument("--resume", default=None, metavar="RUN_DIR",
                       help="continue an interrupted run from its last finished epoch")
    train.add_argument("--json", action="store_true",
                       help="print one JSON summary on stdout (progress goes to stderr)")
    train.add_argument("--no-report", dest="report", action="store_false",
                       help="skip writing the figures and report.html at the end (default: "
                       "write them; `lenet5 report RUN_DIR` writes them later)")
    train.set_defaults(func=cmd_train)

    evaluate = command("evaluate", "Measure a model on the test set.")
    evaluate.add_argument("model",
                          help="model.safetensors, a run directory, or (with --engine onnx) an "
                          ".onnx file")
    engine_flags(evaluate, INFERENCE_ENGINES)
    evaluate.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                          help="dataset (default: the one the model was trained on)")
    evaluate.add_argument("--data-dir", default=None, help="folder holding the IDX files "
                          "(default: the verified cache, $LENET5_DATA or ~/.cache/lenet5)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON document")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = command("predict", "Classify your own images (photos, scans, drawings).")
    predict.add_argument("model",
                         help="model.safetensors, a run directory, or (with --engine onnx) an "
                         ".onnx file")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                         help="image files or folders (searched recursively)")
    engine_flags(predict, INFERENCE_ENGINES)
    predict.add_argument("--top-k", type=int, default=3, help="alternatives to show")
    predict.add_argument("--save-input", default=None, metavar="DIR",
                         help="write each image, its digits boxed, beside the 28x28 images "
                         "the network saw")
    reject_flag(predict)
    predict.add_argument("--json", action="store_true", help="print one JSON document")
    predict.set_defaults(func=cmd_predict)

    export = command("export", "Write a model as a self-contained ONNX file: raw 0-255 pixels "
                     "(N, 1, 28, 28) in, logits (N, 10) out, checked against onnxruntime.")
    export.add_argument("model", help="model.safetensors or a run directory")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="file format")
    export.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="file to write, e.g. model.onnx (required, no default)")
    export.add_argument("--via", choices=VIAS, default="numpy",
                        help="numpy builds the graph with the onnx package alone; torch uses "
                        "torch.onnx.export on the torch engine's network")
    export.add_argument("--opset", type=int, default=OPSET,
                        help=f"ONNX opset, {MIN_OPSET} or newer (at most {TORCH_MAX_OPSET} "
                        "with --via torch)")
    export.add_argument("--json", action="store_true", help="print one JSON document")
    export.set_defaults(func=cmd_export)

    report = command("report", "Write a run's figures (curves, confusion matrix, mistakes, "
                     "feature maps, C1 filters) and report.html into its directory.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="run directory made by `lenet5 train`")
    engine_flags(report)
    report.set_defaults(func=cmd_report)

    summary = command("summary", "Show an architecture's layers, parameters and connections.")
    summary.add_argument("--arch", choices=tuple(ARCHITECTURES), default="lenet5",
                         help="architecture")
    summary.add_argument("--json", action="store_true", help="print one JSON document")
    summary.add_argument("--bitmaps", action="store_true",
                         help="also show the fixed RBF centres (lenet5-1998; with --json, as "
                         "rbf_centres, 10 lists of 84 values +1/-1)")
    summary.set_defaults(func=cmd_summary)

    serve = command("serve", "Serve the draw-a-digit web page and its HTTP API (needs the web "
                    "extra).")
    serve.add_argument("model", nargs="?", default=None,
                       help="model.safetensors or a run directory (default: the newest run "
                       "under ./runs/)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; 0.0.0.0 exposes it to your network")
    serve.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    reject_flag(serve)
    serve.add_argument("--workers", type=int, default=None,
                       help="processes answering requests, each with its own copy of the model "
                       "(default: one per CPU core, at most 4)")
    engine_flags(serve)
    serve.set_defaults(func=cmd_serve)
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
