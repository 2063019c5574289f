"""Run reports: every figure and the page are written, non-trivial, and self-contained."""

import html
import json
import os
import re

import numpy as np
import pytest
from leftovers import dead_pid, leave_behind
from PIL import Image

from lenet5.arch import ARCHITECTURES, init_params
from lenet5.checkpoint import save_model
from lenet5.cli import main
from lenet5.errors import Lenet5Error
from lenet5.model import load
from lenet5.report import FIGURES, plot_errors, plot_feature_maps, write_report
from lenet5.training import TrainConfig, train

PAGE = "report.html"


@pytest.fixture
def synthetic_run(synthetic_dataset, tmp_path):
    """Two epochs on the synthetic squares, with a validation split (so curves show val)."""
    config = TrainConfig(dataset=synthetic_dataset, epochs=2, batch_size=32, val_size=100,
                         out=str(tmp_path / "run"))
    return train(config, log=lambda _: None, progress=False)


def assert_picture(path, min_side=150, min_width=700):
    """A PNG of a sensible size with something drawn on it."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side and image.width >= min_width, image.size
        pixels = np.asarray(image.convert("L"))
    assert np.mean(pixels < 128) > 0.002, f"{path.name} looks blank"


def test_write_report_writes_every_figure_and_the_page(synthetic_run):
    written = write_report(synthetic_run, log=lambda _: None)
    assert [p.name for p in written] == [*FIGURES, PAGE]
    assert all(p.parent == synthetic_run for p in written)
    for path in written[:-1]:
        assert_picture(path)

    page = (synthetic_run / PAGE).read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources == list(FIGURES)  # relative, next to the page
    assert "http://" not in page and "https://" not in page  # no CDN, works offline
    metrics = [json.loads(line) for line in (synthetic_run / "metrics.jsonl").open()]
    for fact in ("lenet5", "numpy", "synthetic", f"{100 * metrics[-1]['test_acc']:.2f}%",
                 "time per epoch", "val_acc", "batch_size"):
        assert fact in page, fact


def test_report_command_and_train_writes_it_unless_told_not_to(synthetic_dataset, tmp_path,
                                                               capsys, monkeypatch):
    plain, skipped = tmp_path / "plain", tmp_path / "skipped"
    common = ["train", "--dataset", synthetic_dataset, "--epochs", "1"]
    assert main([*common, "--out", str(plain)]) == 0
    assert (plain / PAGE).is_file() and all((plain / f).is_file() for f in FIGURES)
    assert f"report: {plain / PAGE}" in capsys.readouterr().out

    assert main([*common, "--out", str(skipped), "--no-report", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["report"] is None
    assert not (skipped / PAGE).exists()

    assert main(["report", str(skipped)]) == 0
    assert str(skipped / PAGE) in capsys.readouterr().out
    assert all((skipped / f).is_file() for f in FIGURES)


@pytest.mark.parametrize("arch_name", sorted(ARCHITECTURES))
def test_feature_maps_cover_every_layer_of_each_architecture(arch_name, tmp_path):
    arch = ARCHITECTURES[arch_name]
    save_model(tmp_path / "model.safetensors", init_params(arch, 0),
               {"arch": arch_name, "dataset": "mnist", "classes": list("0123456789"),
                "input_normalization": {"kind": "mean_std", "pad": 2, "mean": 0.13,
                                        "std": 0.31}})
    model = load(tmp_path / "model.safetensors")
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    path = plot_feature_maps(model, digit, 1, tmp_path / "maps.png", "untrained")
    assert_picture(path)
    with Image.open(path) as image:  # one row per layer plus the input: tall
        assert image.height >= image.width


def test_errors_figure_when_there_are_no_mistakes(tmp_path):
    images = np.zeros((5, 28, 28), np.uint8)
    labels = np.arange(5)
    probs = np.eye(10)[labels]  # (5, 10), every prediction right
    path = plot_errors(images, labels, probs, list("0123456789"), tmp_path / "errors.png")
    assert_picture(path, min_width=600)


def test_most_confident_mistakes_come_first(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("lenet5.report.save_figure", lambda fig, path: shown.append(fig) or path)
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.array([0, 1, 2, 3])
    probs = np.full((4, 10), 0.01)
    probs[0, 0], probs[1, 5], probs[2, 6], probs[3, 3] = 0.91, 0.6, 0.9, 0.91  # 2 mistakes
    plot_errors(images, labels, probs, list("0123456789"), tmp_path / "errors.png")
    (ax,) = shown[0].axes
    assert [t.get_text() for t in ax.texts] == ["true 2\npred 6 90.0%", "true 1\npred 5 60.0%"]


@pytest.mark.parametrize("missing", ["metrics.jsonl", "model.safetensors"])
def test_a_run_dir_without_its_files_is_one_sentence(synthetic_run, missing, capsys):
    (synthetic_run / missing).unlink()
    assert main(["report", str(synthetic_run)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"lenet5: error: {synthetic_run} has no {missing}; pass a run directory "
                   "written by `lenet5 train`.")


def test_the_pretrained_model_has_no_curves_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where no folder is named pretrained
    assert main(["report", "pretrained"]) == 1
    assert capsys.readouterr().err == (
        "lenet5: error: pretrained is the model shipped with lenet5, which keeps no training "
        "curves to report; pass a run directory written by `lenet5 train`.\n")


def test_not_a_directory_and_empty_metrics(tmp_path, synthetic_run):
    with pytest.raises(Lenet5Error, match="is not a directory"):
        write_report(tmp_path / "nowhere")
    (synthetic_run / "metrics.jsonl").write_text("")
    with pytest.raises(Lenet5Error, match="holds no finished epoch"):
        write_report(synthetic_run)


def test_a_run_before_its_first_epoch_is_reported_once_one_has_finished(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(
        json.dumps({"arch": "lenet5", "engine": "numpy", "epochs": 2, "seed": 0}))
    assert main(["report", str(tmp_path / "run")]) == 1
    assert "nothing of" in capsys.readouterr().err


def test_a_run_still_training_is_reported_as_one(synthetic_run, capsys):
    import os

    (synthetic_run / ".lock").write_text(f"{os.getpid()}\n")  # as a live `lenet5 train` holds it
    assert main(["report", str(synthetic_run)]) == 0
    assert "is still training: this report shows its first 2 epochs" in capsys.readouterr().out
    assert "2 so far of 2, still training" in (synthetic_run / "report.html").read_text()
    (synthetic_run / ".lock").write_text("999999999\n")  # a run killed outright left it
    assert main(["report", str(synthetic_run)]) == 0
    assert "still training" not in capsys.readouterr().out


def test_report_of_a_read_only_run_goes_where_out_says(synthetic_run, tmp_path, capsys):
    """Someone else's run, or one on a read-only disk: --out writes the report elsewhere."""
    before = sorted(p.name for p in synthetic_run.iterdir())
    out = tmp_path / "elsewhere" / "report"
    assert main(["report", str(synthetic_run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*FIGURES, "report.html"]) and sorted(p.name for p in synthetic_run.iterdir()) == before
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    (tmp_path / "a file").write_text("")
    assert main(["report", str(synthetic_run), "--out", str(tmp_path / "a file")]) == 1
    assert "could not create" in capsys.readouterr().err


def test_report_refuses_to_write_over_a_special_file(synthetic_run, capsys):
    import os

    (synthetic_run / "curves.png").unlink(missing_ok=True)
    os.mkfifo(synthetic_run / "curves.png")
    code = main(["report", str(synthetic_run)])
    err = capsys.readouterr().err
    assert code == 1 and "curves.png is a FIFO, not a regular file" in err
    assert "--resume" not in err and err.count("\n") == 1


def test_a_run_folder_that_cannot_be_written_advises_out(synthetic_run, capsys, monkeypatch):
    import errno

    from lenet5 import files

    def read_only(path, data):
        raise files.write_error(path, OSError(errno.EROFS, "Read-only file system"))

    monkeypatch.setattr(files, "write_atomic", read_only)
    monkeypatch.setattr("lenet5.report.write_atomic", read_only)
    assert main(["report", str(synthetic_run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "that file system is read-only; write somewhere else (" in err
    assert err.endswith(f"(`lenet5 report {synthetic_run} --out DIR` writes the report into "
                        "another folder).\n")


def test_a_report_that_fails_leaves_no_empty_folder(synthetic_run, tmp_path, capsys,
                                                    monkeypatch):
    import errno

    from lenet5 import files

    def full(path, data):
        raise files.write_error(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr("lenet5.report.write_atomic", full)
    out = tmp_path / "reports" / "run"
    assert main(["report", str(synthetic_run), "--out", str(out)]) == 1
    assert "the disk is full" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()  # nor the parent it made


def test_a_run_stopped_before_its_only_test_pass_still_reports(synthetic_dataset, tmp_path):
    """--no-test-each-epoch measures the test set after the last epoch only: a run killed
    before it has epochs without test figures, and its report must still be written."""
    config = TrainConfig(dataset=synthetic_dataset, epochs=2, batch_size=32,
                         test_each_epoch=False, out=str(tmp_path / "run"))
    run = train(config, log=lambda _: None, progress=False)
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # as if killed in epoch 2
    written = write_report(run, log=lambda _: None)
    assert_picture(written[0])
    assert "final test loss" not in (run / PAGE).read_text()


def test_a_part_pass_is_reported_at_the_epochs_trained(synthetic_dataset, tmp_path,
                                                       monkeypatch):
    """--epochs 1.5 ends on half a pass, the second metrics row: the page's facts and the
    curves put it at 1.5 epochs."""
    from matplotlib.axes import Axes

    config = TrainConfig(dataset=synthetic_dataset, epochs=1.5, batch_size=32,
                         out=str(tmp_path / "run"))
    run = train(config, log=lambda _: None, progress=False)
    drawn, titles = [], []
    plot, set_ = Axes.plot, Axes.set
    monkeypatch.setattr(Axes, "plot", lambda ax, x, *a, **k: drawn.append(list(x))
                        or plot(ax, x, *a, **k))
    monkeypatch.setattr(Axes, "set", lambda ax, **k: titles.append(k.get("title"))
                        or set_(ax, **k))
    write_report(run, log=lambda _: None)
    assert drawn and all(x == [1, 1.5] for x in drawn)
    assert "Accuracy (test " in " ".join(filter(None, titles))
    assert any(t and t.endswith("after epoch 1.5)") for t in titles)
    facts = (run / PAGE).read_text()
    assert "<tr><td>epochs</td><td>1.5</td></tr>\n<tr><td>test accuracy" in facts


def test_a_model_file_whose_epochs_is_not_a_number_still_reports(synthetic_run):
    from lenet5.checkpoint import load_model

    params, metadata = load_model(synthetic_run)
    save_model(synthetic_run / "model.safetensors", params, {**metadata, "epochs": "abc"})
    write_report(synthetic_run, log=lambda _: None)
    assert "<tr><td>epochs</td><td>2</td></tr>" in (synthetic_run / PAGE).read_text()


@pytest.mark.parametrize("row", ['{}', '{"epoch": 1, "test_acc": "abc"}',
                                 '{"epoch": true, "train_loss": 0.5}'])
def test_a_damaged_metrics_row_is_one_sentence(synthetic_run, row, capsys):
    """Rows edited by hand had given a KeyError or numpy's TypeError from the plots."""
    (synthetic_run / "metrics.jsonl").write_text(row + "\n")
    assert main(["report", str(synthetic_run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lenet5: error: {synthetic_run / 'metrics.jsonl'} is damaged: its "
                          "row 1 has no number for ") and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["cost $5 vs $6", "m$\\foo{$", os.fsdecode(b"r\xff")])
def test_any_run_folder_name_reports(synthetic_run, name, capsys, monkeypatch):
    """A "$" pair had been drawn as math ("m$\\foo{$" raised an unknown-symbol error), and a
    name that is not UTF-8 had failed in matplotlib and in the page."""
    from matplotlib import cbook

    from lenet5 import report

    titles, save = [], report.save_figure
    monkeypatch.setattr(report, "save_figure",
                        lambda fig, path: titles.append(fig.get_suptitle()) or save(fig, path))
    run = synthetic_run.rename(synthetic_run.with_name(name))
    assert main(["report", str(run), "--out", str(run.with_name("out"))]) == 0, \
        capsys.readouterr().err
    page = (run.with_name("out") / "report.html").read_text()
    shown = "r\ufffd" if name.startswith("r") else name
    assert f"({html.escape(shown)})" in page
    curves = titles[0]  # drawn as it reads, not as math
    assert not cbook.is_math_text(curves) and curves.replace(r"\$", "$").endswith(f"({shown})")


def test_a_report_removes_what_a_killed_one_left(synthetic_run):
    old = leave_behind(synthetic_run / f".curves.png.{dead_pid()}.ab12cd34.tmp")
    write_report(synthetic_run)
    assert not old.exists() and not list(synthetic_run.glob(".*.tmp"))


def test_a_report_never_writes_over_files_no_report_wrote(synthetic_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "curves.png").write_bytes(b"my own picture")
    assert main(["report", str(synthetic_run), "--out", str(mine)]) == 1
    assert capsys.readouterr().err == (
        f"lenet5: error: --out {mine} holds curves.png, which no lenet5 report wrote; write the "
        "report into another --out, or move them away.\n")
    assert (mine / "curves.png").read_bytes() == b"my own picture"
    again = tmp_path / "again"  # a report's own files are written over
    for _ in range(2):
        assert main(["report", str(synthetic_run), "--out", str(again)]) == 0
