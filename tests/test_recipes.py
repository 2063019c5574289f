"""`lenet5.recipes` and `lenet5 recipes`: every well-known setup one command away."""

import json

import pytest

from lenet5.cli import main
from lenet5.errors import Lenet5Error
from lenet5.recipes import all_recipes, load_recipe, names


def test_each_shipped_recipe_is_a_valid_training_configuration():
    recipes = all_recipes()
    assert {"default", "pytorch-tutorial", "pytorch-tutorial-sgd", "pytorch-tutorial-adam",
            "avg-pool", "numpy-sgd", "numpy-adam", "sigmoid-avg-pool", "lenet5-1998",
            "lenet5-1998-distortions"} <= set(names())
    for recipe in recipes:
        config = recipe.config({})
        config.validate()
        assert recipe.description and recipe.reference["source"], recipe.name
    assert sum(r.reference["figure"] is not None for r in recipes) >= 6


def test_recipes_json_lists_what_spec_promises(capsys):
    assert main(["recipes", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"name", "description", "options", "reference", "measured"} <= set(listed[0])
    tutorial = next(r for r in listed if r["name"] == "pytorch-tutorial")
    assert tutorial["reference"]["figure"] == 98.59
    assert tutorial["options"]["batch_size"] == 128 and tutorial["options"]["epochs"] == 30


def test_flags_override_a_recipe():
    recipe = load_recipe("avg-pool")
    config = recipe.config({"epochs": 2, "pool": "max"}).resolved()
    assert (config.epochs, config.pool, config.batch_size, config.lr) == (2, "max", 64, 1e-3)


def test_another_optimizer_drops_the_recipes_settings_of_its_own():
    """`--recipe fast --optimizer adam`: the recipe's SGD momentum and Nesterov do not apply,
    and were refused as if the user had given --momentum."""
    recipe = load_recipe("fast")
    config = recipe.config({"optimizer": "adam"})
    config.validate()
    resolved, own = config.resolved(), recipe.config({}).resolved()
    assert (resolved.optimizer, resolved.nesterov, resolved.lr, resolved.epochs) == \
        ("adam", False, own.lr, own.epochs)  # the recipe's other settings stay
    assert config.momentum is None
    same = recipe.config({"optimizer": "sgd"})
    assert (same.momentum, same.nesterov) == (0.9, True)


def test_fast_recipe_tests_once_unless_asked_and_runs_on_either_engine(synthetic_dataset,
                                                                     tmp_path):
    assert "--nesterov" in load_recipe("fast").flags().split()
    assert "--no-test-each-epoch" in load_recipe("fast").flags().split()
    config = load_recipe("fast").config({}).resolved()
    assert (config.epochs, config.augment, config.test_each_epoch) == (2.5, "none", False)
    assert load_recipe("fast").config({"test_each_epoch": True}).resolved().test_each_epoch
    for engine in ("numpy", "torch"):
        out = tmp_path / engine
        assert main(["train", "--recipe", "fast", "--engine", engine, "--device", "cpu",
                     "--dataset", synthetic_dataset, "--epochs", "1.5", "--out", str(out),
                     "--no-report"]) == 0
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert ["test_acc" in row for row in rows] == [False, True]
    assert main(["train", "--recipe", "fast", "--dataset", synthetic_dataset, "--epochs", "2",
                 "--test-each-epoch", "--out", str(tmp_path / "each"), "--no-report"]) == 0
    rows = (tmp_path / "each" / "metrics.jsonl").read_text().splitlines()
    assert all("test_acc" in json.loads(line) for line in rows)


def test_a_users_recipe_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('description = "small"\n[options]\nepochs = 1\nactivation = "tanh"\n'
                    '[reference]\nfigure = 97.5\nsource = "me"\n')
    recipe = load_recipe(str(path))
    assert recipe.name == "mine" and recipe.options == {"epochs": 1, "activation": "tanh"}
    namesake = tmp_path / "default.toml"  # a file of one's own is not the shipped recipe:
    namesake.write_text(path.read_text())  # it has not been measured here
    assert load_recipe(str(namesake)).measured == {} and load_recipe("default").measured


@pytest.mark.parametrize("text, message", [
    ("[options]\nbatchsize = 4\n", "sets unknown options batchsize"),
    ("[options\n", "is not valid TOML"),
    ('[options]\nepochs = "5"\n', "'epochs' in .*bad.toml is '5', not a number"),
    ('description = "x"\noptions = 5\n', r"options in .*bad.toml is 5, not a table; write it "
                                           r"as a \[options\] section"),
    ('reference = "a paper"\n', "reference in .*bad.toml is 'a paper', not a table"),
    (b"\xff\xfe[options]", r"recipe .*bad.toml is not UTF-8 text, which TOML must be; save it "
                          "as UTF-8"),
    ("description = 5\n", r"bad.toml's description is 5, not text; fix the recipe file\."),
    ('[reference]\nfigure = "high"\n', r"bad.toml's figure is 'high', not a percentage; "),
    ("[reference]\nfigure = 990\n", "figure is 990, not a percentage"),
    ("[reference]\nsource = true\n", "source is True, not text"),
    ("[option]\npool = 'avg'\n", r"bad.toml holds option, which a recipe does not read; it "
                                  r"reads only description, options, reference; fix the"),
    ("batch_size = 64\n", r"holds batch_size, .* \(train options go in the \[options\] "
                          r"section\); fix the recipe file\."),
    ("colour = 'red'\n[options]\nepochs = 2\n", "holds colour, which a recipe does not read"),
    ("[reference]\nfigure = 99\nurl = 'x'\n", r"bad.toml's \[reference\] holds url, which a "
                                             r"recipe does not read; it reads only figure, "
                                             r"source; fix"),
])
def test_bad_recipe_files_are_one_sentence(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(Lenet5Error, match=message):
        load_recipe(str(path))


def test_a_recipe_is_read_as_utf_8_in_any_locale(tmp_path):
    """TOML is UTF-8: a recipe with an Ü loads under the C locale too."""
    import os
    import subprocess
    import sys

    path = tmp_path / "mine.toml"
    path.write_text('description = "Über-LeNet"\n[options]\nepochs = 2\n', encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    shown = subprocess.run([sys.executable, "-c", "import sys; from lenet5.recipes import "
                            "load_recipe; print(ascii(load_recipe(sys.argv[1]).description))",
                            str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == ascii("Über-LeNet")


@pytest.mark.parametrize("name", ["resnet", ""])  # "" had been no recipe at all
def test_unknown_recipe_names_the_known_ones(name, capsys):
    assert main(["train", "--recipe", name]) == 1
    err = capsys.readouterr().err
    assert f"unknown --recipe {name!r}" in err and "pytorch-tutorial" in err


def test_train_with_a_recipe_and_an_override(synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "avg-pool", "--dataset", synthetic_dataset, "--epochs",
                 "1", "--out", str(out), "--no-report", "--json"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["pool"], saved["batch_size"], saved["epochs"]) == ("avg", 64, 1)
