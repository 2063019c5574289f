"""Pictures of a training run, and one HTML page that shows them with the run's figures.

`write_report` reads a run directory (metrics.jsonl, model.safetensors, config.json), evaluates
the model on its dataset's test set and writes, next to them:

- curves.png: loss and accuracy by epoch (train, test, and validation when the run had one);
- confusion.png: the 10x10 test confusion matrix with counts;
- errors.png: the test images the model got wrong most confidently;
- feature_maps.png: what every layer computes for one test digit, input to output;
- filters.png: the C1 kernels;
- report.html: all of the above with the run's facts, self-contained (no network needed).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so importing this module
changes no global matplotlib state and needs no display.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from . import pretrained
from .data import load as load_dataset
from .errors import Lenet5Error
from .files import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TEMPORARY,
    is_number,
    made_folder,
    not_trained_yet,
    read_config,
    read_metrics,
    refuse_others_files,
    remove_abandoned,
    training_now,
    unfinished_run,
    write_atomic,
)
from .model import Model
from .model import load as load_model
from .outputs import probabilities

DPI = 130
ERROR_GRID = (4, 8)  # rows, columns of errors.png
FIGURES = {
    "curves.png": "Learning curves",
    "confusion.png": "Confusion matrix",
    "errors.png": "Most confident mistakes",
    "feature_maps.png": "Feature maps",
    "filters.png": "C1 filters",
}
COLORS = {"train": "#1f77b4", "test": "#d62728", "val": "#2ca02c"}
PAGE, PAGE_TITLE = "report.html", "LeNet-5 run report: "
REPORT_FILES = (*FIGURES, PAGE)


def new_figure(width: float, height: float, **kw) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    write_atomic(path, buffer.getvalue())
    return path


# --- curves -------------------------------------------------------------------------------

def plot_curves(metrics: list[dict], path: Path, title: str,
                epochs_trained: float | None = None) -> Path:
    """Loss (left) and accuracy (right) by epoch; a last pass that was a part of one (2.5
    epochs: the third row) at the epochs trained."""
    epochs = [row["epoch"] if epochs_trained is None else min(row["epoch"], epochs_trained)
              for row in metrics]
    fig = new_figure(11, 4.2)
    loss_ax, acc_ax = fig.subplots(1, 2)
    series = (
        (loss_ax, "train_loss", "train"),
        (loss_ax, "test_loss", "test"),
        (acc_ax, "train_acc", "train"),
        (acc_ax, "val_acc", "val"),
        (acc_ax, "test_acc", "test"),
    )
    for ax, key, split in series:
        values = [row[key] for row in metrics if key in row]
        if len(values) == len(metrics):
            scale = 100.0 if key.endswith("_acc") else 1.0
            style = {"linestyle": "--", "marker": "s"} if split == "val" else {"marker": "o"}
            ax.plot(epochs, np.array(values) * scale, markersize=4, color=COLORS[split],
                    label="validation" if split == "val" else split, **style)
    tested = [row for row in metrics if "test_acc" in row]  # --no-test-each-epoch: the last
    loss_ax.set(title="Loss (mean per image)", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="Accuracy" + (f" (test {100 * tested[-1]['test_acc']:.2f}% after epoch "
                                   f"{epochs[metrics.index(tested[-1])]:g})" if tested else ""),
               xlabel="epoch", ylabel="accuracy")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(decimals=1))
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title.replace("$", r"\$"), fontsize=13)  # a "$" in a run's name is no math
    return save_figure(fig, path)


# --- confusion matrix ---------------------------------------------------------------------

def plot_confusion(labels: np.ndarray, predictions: np.ndarray, classes: list[str],
                   path: Path) -> Path:
    """Counts of (true, predicted) pairs; colour on a square-root scale so errors show."""
    k = len(classes)
    counts = np.bincount(labels.astype(np.int64) * k + predictions, minlength=k * k)
    counts = counts.reshape(k, k)  # (true, predicted)
    accuracy = np.trace(counts) / counts.sum()
    fig = new_figure(7.6, 6.6)
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", norm=PowerNorm(0.4, vmin=0, vmax=counts.max()))
    dark = image.norm(counts) > 0.55  # (k, k): cells where white text reads better
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if dark[row, col] else ("#999999" if count == 0 else "black")
        ax.text(col, row, str(count), ha="center", va="center", fontsize=8.5, color=color)
    ticks = np.arange(k)
    ax.set_xticks(ticks, classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right"
                  if max(map(len, classes)) > 2 else "center")
    ax.set_yticks(ticks, classes)
    ax.set(xlabel="predicted label", ylabel="true label",
           title=f"Test confusion matrix: {counts.sum():,} images, "
                 f"{counts.sum() - np.trace(counts):,} errors ({100 * accuracy:.2f}% right)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="images")
    return save_figure(fig, path)


# --- most confident mistakes --------------------------------------------------------------

def _mosaic(tiles: np.ndarray, columns: int, gap: int, band: int = 0) -> np.ndarray:
    """(N, h, w) tiles in a grid of `columns`, NaN (drawn as paper) between them and in a
    `band` of rows above each tile for its caption: one image, so one axes draws them all."""
    n, h, w = tiles.shape
    rows = -(-n // columns)
    cells = np.full((rows * columns, band + h + gap, w + gap), np.nan)  # (R*C, cell h, cell w)
    cells[:n, band:band + h, :w] = tiles
    grid = cells.reshape(rows, columns, band + h + gap, w + gap).transpose(0, 2, 1, 3)
    grid = grid.reshape(rows * (band + h + gap), columns * (w + gap))
    return grid[:grid.shape[0] - gap, :grid.shape[1] - gap]  # no gap after the last row/column


def _cmap(name: str):
    return colormaps[name].with_extremes(bad="white")


def plot_errors(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: list[str],
                path: Path) -> Path:
    """A grid of the wrong predictions with the highest confidence, most confident first."""
    predictions = probs.argmax(axis=1)  # (N,)
    confidence = probs.max(axis=1)  # (N,)
    wrong = np.flatnonzero(predictions != labels)
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:ERROR_GRID[0] * ERROR_GRID[1]]
    if not len(shown):
        fig = new_figure(6, 1.2)
        fig.text(0.5, 0.5, f"No mistakes on the {len(labels):,} test images", ha="center",
                 va="center", fontsize=13)
        return save_figure(fig, path)
    side, gap, band = images.shape[-1], 6, 11  # pixels of the 28x28 digits
    columns = min(ERROR_GRID[1], len(shown))
    grid = _mosaic(images[shown].astype(np.float64), columns, gap, band)  # (H, W)
    width = 1.45 * columns
    fig = new_figure(width, width * grid.shape[0] / grid.shape[1] + 0.45)
    ax = fig.subplots()
    ax.imshow(grid, cmap=_cmap("gray_r"), vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    for i, index in enumerate(shown):
        row, col = divmod(i, columns)
        ax.text(col * (side + gap) + side / 2, row * (band + side + gap) + band - 1,
                f"true {classes[labels[index]]}\npred {classes[predictions[index]]} "
                f"{100 * confidence[index]:.1f}%", ha="center", va="bottom", fontsize=8.5)
    fig.suptitle(f"The {len(shown)} most confident of {len(wrong):,} test mistakes "
                 f"(of {len(labels):,} images)", fontsize=12)
    return save_figure(fig, path)


# --- feature maps -------------------------------------------------------------------------

def _map_colors(values: np.ndarray) -> dict:
    """Imshow settings for one layer: a shared scale, diverging only where values go negative."""
    top = float(np.abs(values).max()) or 1.0
    if values.min() < 0:
        return {"cmap": _cmap("RdBu_r"), "vmin": -top, "vmax": top}
    return {"cmap": _cmap("magma"), "vmin": 0.0, "vmax": top}


def plot_feature_maps(model: Model, image: np.ndarray, label: int, path: Path,
                      title: str) -> Path:
    """One row per layer for one digit: the input, every spatial layer's maps, dense layers as
    strips of units, and the output as class probabilities."""
    layers = model.feature_maps(image[None])  # [(name, (1, C, H, W) or (1, F))]
    probs = probabilities(layers[-1][1])[0]  # (K,): the last layer's output is the logits
    network_input = model.inputs(image)[0]  # (1, 32, 32)
    rows: list[tuple[str, np.ndarray]] = [("input", network_input)]
    for name, values in layers[:-1]:
        values = values[0]
        if values.ndim == 3 and values.shape[1] * values.shape[2] == 1:
            values = values.reshape(-1)  # 1x1 maps (the 1998 C5) are a vector of units
        rows.append((name, values))
    # Up to 8 maps share a row's width, so small layers are not blown up; more get a column each.
    columns = [max(v.shape[0], 8) if v.ndim == 3 else 1 for _, v in rows]
    heights = [0.95 if v.ndim == 1 else 0.4 + 11.0 / n for (_, v), n in zip(rows, columns,
                                                                           strict=True)]
    heights.append(2.3)  # the output bar chart
    fig = new_figure(12, sum(heights) + 0.5)
    panels = fig.subfigures(len(heights), 1, height_ratios=heights)
    for panel, (name, values), n in zip(panels, rows, columns, strict=False):
        ax = panel.subplots()
        if values.ndim == 3:
            shape = "x".join(map(str, values.shape))
            heading = "input (normalised, padded)" if name == "input" else name
            panel.suptitle(f"{heading}: {shape}", x=0.01, ha="left", fontsize=10)
            colors = ({"cmap": _cmap("gray"), "vmin": values.min(), "vmax": values.max()}
                      if name == "input" else _map_colors(values))
            grid = _mosaic(values.astype(np.float64), n, gap=max(1, values.shape[-1] // 7))
            shown = ax.imshow(grid, interpolation="nearest", **colors)
            ax.set_axis_off()
            if name != "input":
                bar = panel.colorbar(shown, ax=ax, shrink=0.85, aspect=10, pad=0.01)
                bar.ax.tick_params(labelsize=7)
                bar.locator = MaxNLocator(3 if n <= 8 else 2)
        else:
            colors = _map_colors(values)
            panel.suptitle(f"{name}: {values.shape[0]} units", x=0.01, ha="left", fontsize=10)
            shown = ax.imshow(values[None], aspect="auto", interpolation="nearest", **colors)
            ax.set_yticks([])
            ax.set_xlabel("unit", fontsize=8, labelpad=1)
            ax.tick_params(labelsize=8)
            bar = panel.colorbar(shown, ax=ax, aspect=4, pad=0.01)
            bar.set_ticks([colors["vmin"], colors["vmax"]], labels=[
                f"{colors['vmin']:.3g}", f"{colors['vmax']:.3g}"], fontsize=7)
    ax = panels[-1].subplots()
    predicted = int(probs.argmax())
    bars = ax.bar(model.classes, probs, color="#9ab7d3")
    bars[predicted].set_color("#1f4e79")
    ax.set_ylim(0, 1.12)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set(xlabel="class", ylabel="probability")
    ax.bar_label(bars, [f"{100 * p:.1f}%" if p >= 0.005 else "" for p in probs], fontsize=8)
    panels[-1].suptitle(f"{layers[-1][0]}: class probabilities (true {model.classes[label]}, "
                        f"predicted {model.classes[predicted]})", x=0.01, ha="left",
                        fontsize=10)
    fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)


# --- C1 filters ---------------------------------------------------------------------------

def plot_filters(weights: np.ndarray, path: Path) -> Path:
    """The first layer's kernels (out, 1, k, k) on one diverging scale centred at 0."""
    kernels = weights[:, 0]  # (C, k, k)
    top = float(np.abs(kernels).max()) or 1.0
    columns = min(len(kernels), 8)
    rows = -(-len(kernels) // columns)
    fig = new_figure(1.6 * columns + 1.2, 1.75 * rows + 0.6)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for c, ax in enumerate(axes.ravel()[:len(kernels)]):
        shown = ax.imshow(kernels[c], cmap="RdBu_r", vmin=-top, vmax=top,
                          interpolation="nearest")
        ax.set_title(f"filter {c + 1}", fontsize=9)
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.85, label="weight")
    side = kernels.shape[-1]
    fig.suptitle(f"C1 kernels ({len(kernels)} x {side}x{side}; red excites, blue inhibits)",
                 fontsize=12)
    return save_figure(fig, path)


# --- HTML ---------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.92rem; }
td, th { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: left; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.facts td:first-child { color: #555; } .metrics th:not(:first-child) { text-align: right; }
img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
details { margin-top: 1rem; }
"""


def _table(header: list[str] | None, rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header) if header else ""
    body = "\n".join("<tr>" + "".join(f'<td{" class=num" if i and header else ""}>'
                                      f"{html.escape(cell)}</td>" for i, cell in enumerate(row))
                     + "</tr>" for row in rows)
    return (f'<table class="{css}">' + (f"<tr>{head}</tr>" if head else "") + body + "</table>")


def _metrics_table(metrics: list[dict]) -> str:
    columns = [k for k in ("epoch", "train_loss", "train_acc", "val_acc", "test_loss",
                           "test_acc", "seconds", "lr") if all(k in row for row in metrics)]

    def cell(key: str, value: float) -> str:
        if key == "epoch":
            return str(value)
        if key.endswith("_acc"):
            return f"{100 * value:.2f}%"
        if key == "lr":
            return f"{value:.3g}"
        return f"{value:.4f}" if "loss" in key else f"{value:.1f}"

    return _table(columns, [[cell(k, row[k]) for k in columns] for row in metrics], "metrics")


def write_html(path: Path, title: str, facts: list[tuple[str, str]], metrics: list[dict],
               config: dict, figures: list[Path]) -> Path:
    """A self-contained page: images are referenced by file name, next to the page."""
    sections = "\n".join(
        f"<h2>{html.escape(FIGURES[f.name])}</h2>\n"
        f'<img src="{html.escape(f.name)}" alt="{html.escape(FIGURES[f.name])}">'
        for f in figures)
    config_rows = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in config.items()]
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="sub">Report written by <code>lenet5 report</code>.</p>
{_table(None, [[k, v] for k, v in facts], "facts")}
<h2>Epochs</h2>
{_metrics_table(metrics)}
{sections}
<details><summary>Training configuration (config.json)</summary>
{_table(None, config_rows, "facts")}
</details>
</body>
</html>
"""
    write_atomic(path, page.encode())
    return path


# --- the whole report ---------------------------------------------------------------------

def _a_report_there(folder: Path) -> bool:
    """Whether `folder` holds a report.html lenet5 wrote."""
    try:
        return f"<title>{html.escape(PAGE_TITLE)}" in (folder / PAGE).read_text(errors="replace")
    except OSError:
        return False


def _read_run(run: Path) -> tuple[list[dict], dict]:
    """(metrics rows, config) of a run directory with at least one finished epoch."""
    if str(run) == pretrained.NAME and not run.is_dir():
        raise Lenet5Error(f"{run} is the model shipped with lenet5, which keeps no training "
                          "curves to report; pass a run directory written by `lenet5 train`.")
    if not run.is_dir():
        raise Lenet5Error(f"{run} is not a directory; pass a run directory written by "
                          "`lenet5 train`.")
    if unfinished_run(run):
        raise Lenet5Error(f"nothing of {run} to report yet: {not_trained_yet(run)}.")
    for required in (METRICS_FILE, MODEL_FILE):
        if not (run / required).is_file():
            raise Lenet5Error(f"{run} has no {required}; pass a run directory written by "
                              "`lenet5 train`.")
    metrics = read_metrics(run)
    if not metrics:
        raise Lenet5Error(f"{run / METRICS_FILE} holds no finished epoch; train at least "
                          "one epoch first.")
    return metrics, read_config(run, "the report") if (run / CONFIG_FILE).is_file() else {}


def write_report(run_dir: str | Path, *, out: str | Path | None = None, engine: str = "numpy",
                 device: str = "auto", feature_index: int = 0,
                 log: Callable[[str], None] = print) -> list[Path]:
    """Write the five figures and report.html into `out` (made if need be; `run_dir` by
    default: a run on a read-only disk or someone else's is reported elsewhere); returns their
    paths, page last.

    `engine` computes the test-set predictions; `feature_index` picks the test digit whose
    feature maps are drawn.
    """
    run = Path(run_dir)
    metrics, config = _read_run(run)
    folder = run if out is None else Path(out)
    if folder != run:
        refuse_others_files(folder, REPORT_FILES, lambda: _a_report_there(folder), "report",
                            "write the report into another --out")
    with made_folder(folder):  # a report that failed leaves no empty folder
        remove_abandoned(folder, TEMPORARY, REPORT_FILES)  # killed reports' files
        model = load_model(run, engine=engine, device=device)
        dataset = model.metadata.get("dataset", config.get("dataset", "mnist"))
        data = load_dataset(dataset, config.get("data_dir"), log=log)
        probs = model.predict_proba(data.test_images)  # (N, K)
        labels = data.test_labels.astype(np.int64)  # (N,)
        predictions = probs.argmax(axis=1)
        errors = int(np.count_nonzero(predictions != labels))
        name = f"{model.arch.name} on {dataset} ({os.fsencode(run.name).decode(errors='replace')})"

        index = feature_index % len(labels)
        trained = model.metadata.get("epochs")  # a part pass's row counts as a whole one
        epochs_trained = float(trained) if is_number(trained) else float(metrics[-1]["epoch"])
        ongoing = training_now(run)  # a report of the epochs so far, said to be one
        if ongoing:
            log(f"{run} is still training: this report shows its first {epochs_trained:g} "
                f"epoch{'s' if epochs_trained != 1 else ''}")
        figures = [
            plot_curves(metrics, folder / "curves.png", f"Learning curves: {name}", epochs_trained),
            plot_confusion(labels, predictions, model.classes, folder / "confusion.png"),
            plot_errors(data.test_images, labels, probs, model.classes, folder / "errors.png"),
            plot_feature_maps(model, data.test_images[index], int(labels[index]),
                              folder / "feature_maps.png",
                              f"What each layer computes for test image #{index}"),
            plot_filters(model.engine.parameters()["C1.weight"], folder / "filters.png"),
        ]
        facts = _run_facts(model, config, metrics, dataset, len(data.train_images), errors,
                           len(labels), epochs_trained, ongoing)
        page = write_html(folder / PAGE, f"{PAGE_TITLE}{name}", facts, metrics,
                          config, figures)
        return [*figures, page]


def _run_facts(model: Model, config: dict, metrics: list[dict], dataset: str, n_train: int,
               errors: int, n_test: int, epochs_trained: float, ongoing: bool = False
               ) -> list[tuple[str, str]]:
    """The (fact, value) rows at the top of report.html."""
    seconds = [row["seconds"] for row in metrics if "seconds" in row]
    trained_with = config.get("engine", model.metadata.get("engine", "?"))
    facts = [
        ("architecture", f"{model.arch.name}: {model.arch.description}"),
        ("engine", f"{trained_with} (trained on {config.get('device', 'cpu')}); "
                   f"report evaluated with {model.engine.name}"),
        ("dataset", f"{dataset}: {config.get('train_images', n_train):,} "
                    f"training images, {n_test:,} test images"),
        ("epochs", f"{epochs_trained:g}" + (f" so far of {config.get('epochs', '?')}, still "
                                            "training" if ongoing else "")),
        ("test accuracy", f"{100 * (1 - errors / n_test):.2f}%"),
        ("test errors", f"{errors:,} of {n_test:,}"),
    ]
    if "test_loss" in metrics[-1]:  # a run stopped early without --test-each-epoch has none
        facts.append(("final test loss", f"{metrics[-1]['test_loss']:.4f}"))
    if seconds:
        facts.append(("time per epoch", f"{np.mean(seconds):.1f} s (mean of {len(seconds)}; "
                                        f"{sum(seconds):.0f} s in all)"))
    if config:
        facts.append(("optimizer", f"{config.get('optimizer')} lr {config.get('lr')} "
                                   f"({config.get('schedule')}), batch {config.get('batch_size')}"))
    return facts
