"""The command line as a user meets it: real MNIST, small runs, and mistakes."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lenet5.cli import main


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


def test_bad_flag_value(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--epochs", "0", "--out", str(tmp_path / "r"))
    assert code == 1 and "--epochs must be at least 1" in err
