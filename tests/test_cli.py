"""The command line as a user meets it: real MNIST, small runs, and mistakes."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from lying_models import ISSUE_LIES, LIES, NORM, rewrite_metadata
from PIL import Image

from lenet5.cli import build_parser, main
from lenet5.version import __version__


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, mnist):
    """`lenet5 train --limit 2000 --epochs 3 --batch-size 32` on real MNIST."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--limit", "2000", "--epochs", "3", "--batch-size", "32",
                 "--out", str(out), "--json", "--no-report"])
    assert code == 0
    return out


@pytest.mark.mnist
def test_train_writes_a_run_and_evaluate_agrees(small_run, capsys):
    metrics = [json.loads(line) for line in (small_run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and metrics[-1]["test_acc"] > 0.9
    code, out, _ = run_cli(capsys, "evaluate", str(small_run), "--json")
    result = json.loads(out)
    assert code == 0
    assert set(result) >= {"accuracy", "loss", "n", "errors", "seconds", "arch", "engine"}
    assert result["n"] == 10_000 and result["arch"] == "lenet5" and result["engine"] == "numpy"
    assert result["accuracy"] == pytest.approx(metrics[-1]["test_acc"], abs=1e-12)
    assert result["loss"] == pytest.approx(metrics[-1]["test_loss"], rel=1e-5)
    assert result["errors"] == round((1 - result["accuracy"]) * 10_000)


@pytest.mark.mnist
def test_human_readable_evaluate(small_run, capsys):
    code, out, _ = run_cli(capsys, "evaluate", str(small_run / "model.safetensors"))
    assert code == 0 and "accuracy" in out and "10,000 images" in out


@pytest.mark.mnist
def test_predict_on_mnist_digits(small_run, mnist, tmp_path, capsys):
    for i in range(5):
        Image.fromarray(mnist.test_images[i]).save(tmp_path / f"digit{i}.png")
    code, out, _ = run_cli(capsys, "predict", str(small_run), str(tmp_path), "--json")
    results = json.loads(out)
    assert code == 0 and len(results) == 5
    assert [r["label"] for r in results] == mnist.test_labels[:5].tolist()
    assert all(set(r) == {"file", "label", "confidence", "top", "text", "digits", "rejected"}
               for r in results)


@pytest.mark.mnist
def test_api_matches_cli(small_run, mnist):
    import lenet5

    model = lenet5.load(small_run)
    probs = model.predict_proba(mnist.test_images[:100])
    assert probs.shape == (100, 10) and np.allclose(probs.sum(axis=1), 1)
    as_float = model.predict_proba(mnist.test_images[:100] / 255.0)
    np.testing.assert_allclose(as_float, probs, atol=1e-5)
    assert lenet5.datasets.load("mnist").train_images.shape == (60000, 28, 28)


def test_summary_json(capsys):
    code, out, _ = run_cli(capsys, "summary", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["arch"] == "lenet5" and doc["total_params"] == 61_706
    assert [layer["name"] for layer in doc["layers"]][0] == "C1"
    assert set(doc["layers"][0]) == {"name", "output", "params", "connections"}


def test_summary_table(capsys):
    code, out, _ = run_cli(capsys, "summary")
    assert code == 0 and "C3" in out and "61,706" in out


def test_help_states_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "(default: 128 for lenet5" in out and "(default: 15 for lenet5" in out
    assert "--resume" in out and "(default: 0)" in out


def test_a_usage_mistake_points_at_its_commands_help(capsys):
    for argv, command in ((["predict", "--frobnicate", "a.png"], "lenet5 predict"),
                          (["train", "--epochs"], "lenet5 train"), (["--frob"], "lenet5")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1
        assert err.startswith(f"{command}: error: ") and f"see `{command} --help`." in err


@pytest.mark.parametrize("argv", [["train", "--out", ""], ["sweep", "--seeds", "1", "--out", " "],
                                  ["report", "run", "--out", ""],
                                  ["predict", "a.png", "--save-input", ""],
                                  ["train", "--resume", ""], ["evaluate", "m", "--data-dir", ""]])
def test_an_empty_folder_option_is_refused(argv, capsys, tmp_path, monkeypatch):
    """It had written into the current folder (train: into runs/) without a word."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and capsys.readouterr().err == (
        f"lenet5 {argv[0]}: error: argument {argv[-2]}: is empty; name a folder (. for this "
        f"one); see `lenet5 {argv[0]} --help`.\n")
    assert not any(tmp_path.iterdir())


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"lenet5 {__version__}\n"


@pytest.mark.mnist
def test_truncated_idx_file_is_one_clear_sentence(mnist, tmp_path):
    data = tmp_path / "data" / "mnist"
    shutil.copytree(_mnist_cache(), data)
    target = data / "t10k-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes()[:5000])
    env = {"LENET5_DATA": str(tmp_path / "data"), "PATH": "/usr/bin:/bin",
           "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": ":".join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "lenet5", "train", "--epochs", "1",
                           "--limit", "100", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lenet5: error:") and "t10k-labels-idx1-ubyte" in last


def _mnist_cache():
    from lenet5.data.datasets import cache_dir, fetch

    fetch("mnist", log=lambda _: None)
    return cache_dir("mnist")


def test_missing_model_is_one_clear_sentence(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nothing"))
    assert code == 1 and err.startswith("lenet5: error: no model at")
    assert err.count("\n") == 1


def test_a_required_flag_s_help_states_no_default(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "0, 1, ... N-1 (required)" in shown and "(default: None)" not in shown


def test_bad_flag_value(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--epochs", "0", "--out", str(tmp_path / "r"))
    assert code == 1 and "--epochs must be a positive number, got 0." in err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "x", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--epochs: 'x' is not a number (e.g. 3 or 2.5)" in err


def test_train_json_says_how_many_epochs_the_model_had(synthetic_dataset, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--dataset", synthetic_dataset, "--epochs", "1.5",
                           "--batch-size", "64", "--no-report", "--json", "--out",
                           str(tmp_path / "r"))
    document = json.loads(out)
    assert code == 0 and document["epochs"] == 1.5 and len(document["metrics"]) == 2


@pytest.mark.parametrize("text, value", [("3", 3), ("2.5", 2.5), ("3.0", 3)])
def test_epochs_stay_whole_unless_written_as_a_fraction(text, value):
    args = build_parser().parse_args(["train", "--epochs", text])
    assert args.epochs == value and type(args.epochs) is type(value)


# --- issue 17 -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--optimizer", "sgd", "--momentum", "-1"], "--momentum"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--optimizer", "sgd", "--momentum", "nan"], "--momentum"),
    (["--momentum", "0.5"], "--momentum applies to --optimizer sgd only"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--val-size", "-3"], "--val-size must be at least 0"),
    (["--refusal-error", "1.5"], "--refusal-error must be between 0 and 1"),
])
def test_bad_training_flags_are_one_sentence_before_any_work(capsys, tmp_path, argv, flag):
    code, out, err = run_cli(capsys, "train", "--out", str(tmp_path / "r"), *argv)
    assert code == 1 and out == "" and flag in err
    assert err.startswith("lenet5: error:") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_resume_refuses_training_flags_it_would_ignore(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "run"), "--lr", "0.1",
                           "--batch-size", "8", "--seed", "0", "--epochs", "4")
    assert code == 1 and err.count("\n") == 1
    assert "--batch-size, --lr, --seed cannot be changed" in err
    assert "--epochs" not in err.split(";")[0]


def test_resume_help_says_which_flags_it_takes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "only --epochs (to extend it), --device and --data-dir" in out
    assert "--momentum" in out and "sgd only" in out


@pytest.fixture
def lying_model(tmp_path, request):
    """A model file whose metadata field lies as lying_models.LIES[request.param] says."""
    from lenet5.arch import LENET5, init_params
    from lenet5.checkpoint import save_model

    path = tmp_path / "model.safetensors"
    save_model(path, init_params(LENET5, 0), {
        "arch": "lenet5", "dataset": "mnist", "classes": list("0123456789"),
        "input_normalization": NORM})
    field, value = LIES[request.param]
    rewrite_metadata(path, **{field: value})
    return path, field


@pytest.mark.parametrize("lying_model", ISSUE_LIES, indirect=True)
def test_lying_metadata_is_one_sentence_in_every_command(lying_model, tmp_path, capsys):
    import lenet5
    from lenet5.errors import ModelFileError

    path, field = lying_model
    Image.new("L", (28, 28), 255).save(tmp_path / "digit.png")
    for argv in (["evaluate", path], ["predict", path, tmp_path / "digit.png"],
                 ["export", path, "-o", tmp_path / "model.onnx"]):
        code, out, err = run_cli(capsys, *map(str, argv))
        assert code == 1 and out == "" and err.count("\n") == 1, argv
        assert err.startswith(f"lenet5: error: {path}") and repr(field) in err, argv
    with pytest.raises(ModelFileError, match=repr(field)):
        lenet5.load(path)
    serve = subprocess.run([sys.executable, "-m", "lenet5", "serve", str(path), "--port", "0",
                            "--workers", "1"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert serve.returncode == 1 and "Traceback" not in serve.stderr
    assert repr(field) in serve.stderr and serve.stderr.count("\n") == 1


def test_ctrl_c_says_how_to_go_on(capsys, monkeypatch, synthetic_dataset, tmp_path):
    """Stopped while training, the advice names the run to resume; a sweep goes on when run
    again; elsewhere there is nothing to go on with."""
    import lenet5.cli
    from lenet5 import training

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(lenet5.cli, "cmd_summary", interrupted)
    code, _, err = run_cli(capsys, "summary")
    assert code == 130 and err == "lenet5: interrupted.\n"
    with monkeypatch.context() as loading:  # the commands' modules are imported: a traceback
        loading.setattr(lenet5.cli, "build_parser", interrupted)
        code, _, err = run_cli(capsys, "summary")
    assert code == 130 and err == "lenet5: interrupted.\n"
    monkeypatch.setattr(lenet5.cli, "cmd_sweep", interrupted)
    code, _, err = run_cli(capsys, "sweep", "--seeds", "1", "--out", str(tmp_path / "sw"))
    assert code == 130 and err == ("lenet5: interrupted; run the same command again to go on: "
                                   "finished runs are kept, the others resume.\n")
    train_epochs = training._train_epochs
    monkeypatch.setattr(training, "_train_epochs", interrupted)
    code, _, err = run_cli(capsys, "train", "--dataset", synthetic_dataset, "--out",
                           str(tmp_path / "run"))
    assert code == 130 and err == ("lenet5: interrupted; no epoch had finished and nothing "
                                   "was kept: run the command again.\n")

    def in_the_first_epoch(config, arch, data, resume, log, progress):
        training.start_run(config, arch, data, resume, log)  # writes config.json
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_train_epochs", in_the_first_epoch)
    code, _, err = run_cli(capsys, "train", "--dataset", synthetic_dataset, "--out",
                           str(tmp_path / "run"))
    assert code == 130 and err == ("lenet5: interrupted; no epoch had finished: `lenet5 train "
                                   f"--resume {tmp_path / 'run'}` starts the run again.\n")
    monkeypatch.setattr(training, "_train_epochs", train_epochs)
    code, _, _ = run_cli(capsys, "train", "--resume", str(tmp_path / "run"), "--epochs", "1")
    assert code == 0  # as it says
    save_epoch = training.save_epoch

    def then_stopped(config, run):
        save_epoch(config, run)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_epoch", then_stopped)
    code, _, err = run_cli(capsys, "train", "--dataset", synthetic_dataset, "--out",
                           str(tmp_path / "run2"))
    assert code == 130 and err.endswith("lenet5: interrupted; the run continues from its last "
                                        "finished epoch with `lenet5 train --resume "
                                        f"{tmp_path / 'run2'}`.\n")
    monkeypatch.setattr(training, "save_epoch", save_epoch)
    monkeypatch.setattr(training, "_train_epochs", train_epochs)  # stopped while writing
    # the figures: the run itself is finished
    monkeypatch.setattr(lenet5.cli, "_write_run_report", interrupted)
    code, _, err = run_cli(capsys, "train", "--dataset", synthetic_dataset, "--epochs", "1",
                           "--out", str(tmp_path / "done"))
    assert code == 130 and err.endswith(
        f"lenet5: interrupted while writing the report; the run is finished in "
        f"{tmp_path / 'done'}, and `lenet5 report {tmp_path / 'done'}` writes its figures.\n")


def test_every_option_s_help_states_its_default():
    from lenet5.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    unstated = [(name, action.option_strings) for name, command in commands.items()
                for action in command._actions if action.option_strings and action.help
                and action.default is None and not action.required
                and "default" not in action.help]
    assert unstated == []


def test_sigterm_stops_training_as_ctrl_c_does(capsys, monkeypatch, synthetic_dataset,
                                              tmp_path):
    """`kill` (or `timeout`) while training: the run's files are cleaned up as after Ctrl-C,
    the same advice, exit status 143; the handler is gone after."""
    import signal

    from lenet5 import training

    def terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(training, "_train_epochs", terminated)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli(capsys, "train", "--dataset", synthetic_dataset, "--out",
                           str(tmp_path / "run"))
    assert code == 143 and err == ("lenet5: terminated; no epoch had finished and nothing "
                                   "was kept: run the command again.\n")
    assert signal.getsignal(signal.SIGTERM) is before and not (tmp_path / "run").exists()


def test_main_runs_in_a_thread_that_is_not_the_main_one(capsys):
    """Signals are the main thread's to handle: a notebook's or a test's thread calling main
    had got ValueError from signal.signal."""
    import threading

    codes = []
    thread = threading.Thread(target=lambda: codes.append(main(["summary"])))
    thread.start()
    thread.join()
    assert codes == [0] and "C1" in capsys.readouterr().out


@pytest.mark.parametrize(("error", "said"), [
    (PermissionError(13, "Permission denied", "runs/x/config.json"),
     "runs/x/config.json: Permission denied; check the path and its permissions."),
    (OSError(28, "No space left on device", "runs/x"),
     "runs/x: No space left on device; the disk is full: free some disk space or write "
     "somewhere else."),
    (OSError(5, "Input/output error"), "Input/output error; check the paths given and their "
                                       "permissions."),
    (NotADirectoryError(20, "Not a directory", "notes.txt/x"), "notes.txt/x: Not a directory; "
     "a part of the path is a file, not a folder; choose another path."),
    (OSError(36, "File name too long", "a" * 300), f"{'a' * 300}: File name too long; "
                                                  "choose a shorter path."),
])
def test_an_os_error_no_command_explained_is_one_sentence(error, said, capsys, monkeypatch):
    """A path this user may not look at raises from Path's tests on Python 3.11, wherever a
    command looks: it is one sentence naming the file, not a traceback."""
    def summary(_):
        raise error

    monkeypatch.setattr("lenet5.cli.cmd_summary", summary)
    assert main(["summary"]) == 1
    assert capsys.readouterr().err == f"lenet5: error: {said}\n"


def test_sigterm_stops_any_command_as_ctrl_c_does(capsys, monkeypatch):
    """`kill` while predicting, exporting, fetching...: exit status 143 and a word, where
    Python's default ended the process silently (leaving a `data fetch`'s npm running and its
    partial files behind, or a picture's temporary file)."""
    import signal

    import lenet5.cli

    def terminated(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(lenet5.cli, "cmd_summary", terminated)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_cli(capsys, "summary")
    assert code == 143 and err == "lenet5: terminated.\n"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("argv", [["train", "--lr", "abc"], ["summary", "--arch", "foo"],
                                  ["predict"], []])
def test_usage_mistakes_are_one_line_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("lenet5") and "error: " in err and "--help`." in err


@pytest.mark.parametrize("columns", ["40", "200"])
def test_predict_usage_names_the_model_once(capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    usage = " ".join(capsys.readouterr().out.split("\n\n")[0].split())
    assert usage.endswith("[--json] [MODEL] IMAGE_OR_DIR [IMAGE_OR_DIR ...]")
