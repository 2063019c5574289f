"""`lenet5 sweep`: settings x seeds as run directories, statistics, resuming, Ray."""

import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from lenet5.checkpoint import load_model
from lenet5.cli import main
from lenet5.errors import Lenet5Error
from lenet5.files import read_metrics
from lenet5.sweep import compare, describe, plan, run_sweep, setting_name, settings_of
from lenet5.training import TrainConfig


def test_describe_gives_sample_statistics_and_a_t_interval():
    values = [0.98, 0.985, 0.99, 0.975]
    d = describe(values)
    assert d["mean"] == pytest.approx(np.mean(values))
    assert d["std"] == pytest.approx(np.std(values, ddof=1))
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert d["ci95"] == pytest.approx([low, high])
    assert describe([0.9])["std"] is None and describe([0.9])["ci95"] is None
    # two seeds far apart: the interval is cut to what an accuracy or a time can be
    assert describe([0.9, 0.3], 0.0, 1.0)["ci95"] == [0.0, 1.0]
    assert describe([2.0, 40.0], 0.0)["ci95"][0] == 0.0


def test_compare_is_welchs_t_test():
    a, b = [0.980, 0.982, 0.979, 0.981], [0.985, 0.990, 0.987, 0.986, 0.991]
    c = compare(a, b)
    assert c["p_value"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert c["difference"] == pytest.approx(np.mean(b) - np.mean(a))
    assert c["ci95"][0] < c["difference"] < c["ci95"][1] and c["significant"]


def test_settings_are_every_combination_in_order():
    grid = {"pool": ["max", "avg"], "lr": [1e-3, 3e-3]}
    settings = settings_of(grid)
    assert [setting_name(s) for s in settings] == [
        "pool-max_lr-0.001", "pool-max_lr-0.003", "pool-avg_lr-0.001", "pool-avg_lr-0.003"]
    assert setting_name({}) == "base"


def test_a_value_holding_a_path_names_one_folder_under_out(tmp_path):
    """--grid data_dir=../../x had put its runs outside --out; the name as shown is as given."""
    settings = settings_of({"data_dir": ["../../x", "/abs/y", os.fsdecode(b"d\xff")]})
    runs = plan(TrainConfig(), settings, 1, tmp_path)
    assert [run.directory.relative_to(tmp_path).parts for run in runs] == [
        ("data_dir-..%2F..%2Fx", "seed-0"), ("data_dir-%2Fabs%2Fy", "seed-0"),
        ("data_dir-d%FF", "seed-0")]
    assert setting_name(settings[0]) == "data_dir-../../x"


@pytest.mark.parametrize("grid, message", [
    ("colour=red", "'colour' is not a train option"),
    ("pool=max,mean", "'mean' is not a valid pool"),
    ("lr=fast", "'fast' is not a valid lr; give values that --lr takes (`lenet5 train --help` "
                "says which)."),
    ("batch_size=64,0", "--grid's setting batch_size-0: --batch-size must be"),
    ("epochs=0,1", "--grid's setting epochs-0: --epochs must be a positive number, got 0."),
    ("epochs=abc", "'abc' is not a valid epochs"),  # a type that raises ArgumentTypeError
    ("pool=max,max", "'max' gives pool 'max' twice; give each value once"),
    ("lr=1e-3,0.001", "'0.001' gives lr 0.001 twice"),
    ("test_each_epoch=true,true", "'true' gives test_each_epoch True twice"),
    ("seed=1,2", "seeds are not a grid axis; give their count, --seeds N"),
    ("pool=", "give values after"),
])
def test_bad_grid_items_are_one_sentence(grid, message, capsys, tmp_path):
    assert main(["sweep", "--seeds", "1", "--grid", grid, "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_a_bad_flag_beside_a_grid_is_not_blamed_on_the_grid(capsys, tmp_path):
    assert main(["sweep", "--seeds", "1", "--batch-size", "0", "--grid", "pool=max,avg",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--batch-size must be" in err and "--grid" not in err


@pytest.mark.parametrize("seeds", ["0", "10001", "100000000000000000000"])
def test_seeds_out_of_range_are_one_sentence_before_any_plan(seeds, capsys, tmp_path):
    """10**20 seeds had made a plan of every run, filling the memory."""
    assert main(["sweep", "--seeds", seeds, "--out", str(tmp_path / "s")]) == 1
    assert capsys.readouterr().err == (f"lenet5: error: --seeds must be between 1 and 10,000, "
                                       f"got {seeds}.\n")
    assert not (tmp_path / "s").exists()


def test_a_sweep_never_writes_over_a_summary_no_sweep_wrote(capsys, tmp_path):
    (tmp_path / "summary.md").write_text("my notes")
    assert main(["sweep", "--seeds", "1", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"lenet5: error: --out {tmp_path} holds summary.md, which no lenet5 sweep wrote; sweep "
        "into another --out, or move them away.\n")
    assert (tmp_path / "summary.md").read_text() == "my notes"


def test_an_axis_given_twice_is_one_sentence(capsys, tmp_path):
    assert main(["sweep", "--seeds", "1", "--grid", "lr=0.1", "lr=0.2", "--out",
                 str(tmp_path)]) == 1
    assert ("--grid lr=0.2: lr is a grid axis already; give all its values in one item"
            in capsys.readouterr().err)


def test_a_grid_over_optimizers_gives_each_run_only_its_own_optimizers_settings(tmp_path):
    runs = plan(TrainConfig(beta1=0.8), settings_of({"optimizer": ["adam", "sgd"]}), 1, tmp_path)
    assert [(r.config.optimizer, r.config.beta1) for r in runs] == [("adam", 0.8), ("sgd", None)]
    with pytest.raises(Lenet5Error, match="--beta1 applies to --optimizer adam or adamw only"):
        plan(TrainConfig(beta1=0.8, optimizer="sgd"), settings_of({}), 1, tmp_path)


def test_a_run_stopped_while_calibrating_is_calibrated_by_the_next_sweep(
        synthetic_dataset, tmp_path, monkeypatch):
    from lenet5 import training

    base = TrainConfig(dataset=synthetic_dataset, epochs=1, batch_size=32)
    calibrate = training.calibrate_model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "calibrate_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(base, {}, 1, tmp_path, workers=1, log=lambda _: None)
    monkeypatch.setattr(training, "calibrate_model", calibrate)
    lines = []
    run_sweep(base, {}, 1, tmp_path, workers=1, log=lines.append)
    assert "0 finished already, 1 to run" in lines[0]
    assert "refusal" in load_model(tmp_path / "base" / "seed-0")[1]


def test_an_out_that_is_a_file_is_said_before_any_run(tmp_path, capsys):
    (tmp_path / "a file").write_text("")
    assert main(["sweep", "--seeds", "2", "--out", str(tmp_path / "a file")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not create" in err and "failed" not in err


def test_a_run_stopped_in_its_first_epoch_is_started_again(synthetic_dataset, tmp_path):
    """Its folder holds only its settings: a new run would not write over them, a resumed one
    starts again."""
    from lenet5.training import train

    base = TrainConfig(dataset=synthetic_dataset, epochs=1, batch_size=32)
    [run] = plan(base, settings_of({}), 1, tmp_path)

    def stopped_in_first_epoch(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(run.config, log=stopped_in_first_epoch)
    assert [p.name for p in run.directory.iterdir()] == ["config.json"]
    summary = run_sweep(base, {}, 1, tmp_path, workers=1, log=lambda _: None)
    assert summary["settings"][0]["n"] == 1 and not summary["settings"][0]["failed"]


def test_a_sweep_summarizes_its_runs_resumes_and_reports_failures(synthetic_dataset, tmp_path):
    base = TrainConfig(dataset=synthetic_dataset, epochs=2, batch_size=32, lr=1e-2,
                       schedule="constant")
    grid = {"pool": ["max", "avg"]}
    # a sweep stopped after every run's first epoch, then run again in full: runs resume
    first = run_sweep(dataclasses.replace(base, epochs=1), grid, 3, tmp_path, workers=1,
                      log=lambda _: None)
    assert all(s["n"] == 3 for s in first["settings"])
    summary = run_sweep(base, grid, 3, tmp_path, workers=1, log=lambda _: None)
    assert [s["params"] for s in summary["settings"]] == [{"pool": "max"}, {"pool": "avg"}]
    for setting in summary["settings"]:
        accuracy = [read_metrics(tmp_path / run)[-1]["test_acc"] for run in setting["runs"]]
        assert setting["n"] == 3 and setting["seeds"] == [0, 1, 2] and not setting["failed"]
        assert setting["test_acc"]["mean"] == pytest.approx(np.mean(accuracy))
        assert setting["test_acc"]["std"] == pytest.approx(np.std(accuracy, ddof=1))
    [comparison] = summary["comparisons"]
    assert comparison["test"].startswith("Welch")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "sweep.png").is_file()

    assert all(len(read_metrics(tmp_path / run)) == 2 for s in summary["settings"]
               for run in s["runs"])
    resumed = read_metrics(tmp_path / "pool-avg" / "seed-1")
    straight = run_sweep(base, {"pool": ["avg"]}, 2, tmp_path / "straight", workers=1,
                         log=lambda _: None)
    assert straight["settings"][0]["n"] == 2
    assert [r["test_acc"] for r in resumed] == [
        r["test_acc"] for r in read_metrics(tmp_path / "straight" / "pool-avg" / "seed-1")]

    # finished runs are kept as they are
    kept = (tmp_path / "pool-max" / "seed-0" / "model.safetensors").read_bytes()
    again = run_sweep(base, grid, 3, tmp_path, workers=1, log=lambda _: None)
    assert again == summary
    assert (tmp_path / "pool-max" / "seed-0" / "model.safetensors").read_bytes() == kept

    # a sweep made longer by part of an epoch trains the rest (1.5 epochs are two passes)
    longer = run_sweep(base, {"pool": ["max"]}, 1, tmp_path / "longer", workers=1,
                       log=lambda _: None)
    run_sweep(dataclasses.replace(base, epochs=1.5), {"pool": ["max"]}, 1, tmp_path / "part",
              workers=1, log=lambda _: None)
    extended = run_sweep(base, {"pool": ["max"]}, 1, tmp_path / "part", workers=1,
                         log=lambda _: None)
    assert load_model(tmp_path / "part" / "pool-max" / "seed-0")[1]["epochs"] == 2
    assert extended["settings"][0]["test_acc"] == longer["settings"][0]["test_acc"]

    # a sweep into the same folder with other settings is refused, not mixed in
    with pytest.raises(Lenet5Error, match=r"seed-0 holds a run trained with other settings "
                                          r"\(lr 0.01 there, 0.02 now\)"):
        run_sweep(dataclasses.replace(base, lr=2e-2), grid, 3, tmp_path, workers=1,
                  log=lambda _: None)

    # a failed run is reported, not dropped
    failing = run_sweep(base, {"lr": [1e12]}, 1, tmp_path / "diverging", workers=1,
                        log=lambda _: None)
    [setting] = failing["settings"]
    assert setting["n"] == 0 and "diverged" in setting["failed"][0]["error"]


def test_sweep_cli_prints_the_summary_and_fails_when_a_run_failed(synthetic_dataset, tmp_path,
                                                                   capsys):
    common = ["sweep", "--dataset", synthetic_dataset, "--epochs", "1", "--seeds", "2",
              "--workers", "1", "--json"]
    assert main([*common, "--out", str(tmp_path / "ok")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["settings"][0]["n"] == 2
    assert main([*common, "--lr", "1e12", "--out", str(tmp_path / "bad")]) == 1
    capsys.readouterr()
    assert main([*common, "--workers", "0", "--out", str(tmp_path / "none")]) == 1
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.mnist
@pytest.mark.slow
@pytest.mark.parametrize(("signum", "to_group", "code", "how"),
                         [(signal.SIGINT, True, 130, "interrupted"),
                          (signal.SIGTERM, False, 143, "terminated")],
                         ids=["Ctrl-C reaches every process", "kill reaches the sweep only"])
def test_a_stopped_sweep_stops_every_run_at_once_and_starts_none(mnist, tmp_path, signum,
                                                                 to_group, code, how):
    """Its pool's workers had trained the runs queued before Ctrl-C, and after `kill` went
    on alone and then waited for work forever."""
    out = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lenet5", "sweep", "--limit", "20000", "--epochs", "3",
         "--seeds", "4", "--workers", "2", "--out", str(out)], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as at a terminal
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("base/seed-*/state.safetensors"))) < 2:  # both runs have
            assert sweep.poll() is None and time.monotonic() < deadline  # an epoch to
            time.sleep(0.1)  # resume from
        (os.killpg if to_group else os.kill)(sweep.pid, signum)
        _, err = sweep.communicate(timeout=20)
    finally:  # the sweep's workers too, were it still running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == code
    assert err.endswith(f"lenet5: {how}; run the same command again to go on: finished runs "
                        "are kept, the others resume.\n")
    assert sorted(p.name for p in (out / "base").iterdir()) == ["seed-0", "seed-1"]
    deadline = time.monotonic() + 10  # no process of the sweep is left
    while subprocess.run(["pgrep", "-g", str(sweep.pid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_ray_task_sends_its_files_back_after_every_epoch(synthetic_dataset, tmp_path,
                                                          monkeypatch):
    """What a Ray worker sends back as it trains: a sweep stopped part-way keeps each run's
    finished epochs (they had stayed in the worker's scratch folder, lost), and a run resumed
    from them ends as one never stopped."""
    from lenet5 import sweep, training

    save_epoch = training.save_epoch

    def slow_save(*args):  # time for the task to look between epochs, however fast they are
        save_epoch(*args)
        time.sleep(0.2)

    monkeypatch.setattr(training, "save_epoch", slow_save)
    monkeypatch.setattr(sweep, "EPOCH_POLL_S", 0.01)
    config = TrainConfig(dataset=synthetic_dataset, epochs=3, batch_size=32, lr=1e-2,
                         schedule="constant")
    *epochs, (error, files, finished) = sweep._ray_task(config, {})
    assert error is None and finished and not any(last for _, _, last in epochs)
    assert [len(f["metrics.jsonl"].splitlines()) for _, f, _ in epochs] == [1, 2, 3]
    assert all("state.safetensors" in f and not any(name.startswith(".") for name in f)
               for _, f, _ in epochs)
    *_, (_, resumed, _) = sweep._ray_task(config, epochs[0][1])

    def figures(files: dict[str, bytes]) -> list[dict]:
        rows = [json.loads(line) for line in files["metrics.jsonl"].splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert figures(resumed) == figures(files)
    assert resumed["model.safetensors"] == files["model.safetensors"]


def test_a_ray_task_removes_the_scratch_folders_of_tasks_killed_before(tmp_path,
                                                                      monkeypatch):
    """A sweep stopped on Ray kills its tasks' workers, whose folders stay on their nodes."""
    import fcntl
    import tempfile

    from lenet5 import sweep

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed, alive, killed_unlocked = (tmp_path / f"{sweep.SCRATCH_PREFIX}{name}"
                                      for name in ("killed", "alive", "killed-unlocked"))
    for folder in (killed, alive, killed_unlocked):  # (the last killed before it locked it)
        (folder / "model.safetensors").parent.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    (killed / sweep.SCRATCH_LOCK).touch()
    node_lock = tmp_path / sweep.NODE_LOCK
    with open(alive / sweep.SCRATCH_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with sweep._scratch_folder() as scratch:
            assert sorted(tmp_path.iterdir()) == sorted([node_lock, alive, scratch])
    assert sorted(tmp_path.iterdir()) == [node_lock, alive]


def test_a_run_s_files_are_read_state_first_and_written_state_last(tmp_path, monkeypatch):
    """A snapshot taken while a run writes its next epoch, and the driver's copy stopped
    part-way, must still resume: the state never newer than the files beside it."""
    from lenet5 import sweep

    for name in ("metrics.jsonl", "state.safetensors", "model.safetensors", "config.json"):
        (tmp_path / name).write_bytes(name.encode())
    files = sweep._run_files(tmp_path)
    assert next(iter(files)) == "state.safetensors" and len(files) == 4
    written = []
    monkeypatch.setattr(sweep, "write_atomic", lambda path, data: written.append(path.name))
    sweep._write_run_files(tmp_path, files)
    assert written[-1] == "state.safetensors" and len(written) == 4


class FakeRay:
    """Ray's calls as `_follow_on_ray` makes them, each task a list of what it yields or
    raises in turn, one list per attempt."""

    class exceptions:  # noqa: N801 (ray.exceptions)
        class RayError(Exception):
            pass

    def __init__(self, attempts: list[list]):
        self.attempts, self.given = attempts, []

    def remote(self, **options):
        def task(function):
            return type("Task", (), {"remote": lambda _, config, files: self._start(files)})()
        return task

    def _start(self, files):
        self.given.append(files)
        return iter(self.attempts.pop(0))

    def wait(self, generators, num_returns):
        return generators[:1], generators[1:]

    def get(self, item):
        if isinstance(item, Exception):
            raise item
        return item


def test_a_ray_task_that_fails_starts_again_from_the_files_already_here(synthetic_dataset,
                                                                        tmp_path):
    """Ray's own retry of a streaming task starts it from the files it was first given, and
    a retry that yields no more than was taken ends the stream (StopIteration had escaped)."""
    from lenet5 import sweep

    [run] = plan(TrainConfig(dataset=synthetic_dataset, epochs=2), settings_of({}), 1,
                 tmp_path)
    run.directory.mkdir(parents=True)
    epoch = {"state.safetensors": b"epoch 1", "metrics.jsonl": b"{}"}
    lost = FakeRay.exceptions.RayError("worker died")
    ray = FakeRay([[(None, epoch, False), lost], [], [(None, {"model.safetensors": b"m"}, True)]])
    reports = []
    sweep._follow_on_ray(ray, [run], lambda run, error: reports.append(error))
    assert ray.given == [{}, {"state.safetensors": b"epoch 1", "metrics.jsonl": b"{}"},
                         {"state.safetensors": b"epoch 1", "metrics.jsonl": b"{}"}]
    assert reports == [None] and (run.directory / "model.safetensors").read_bytes() == b"m"

    ray = FakeRay([[lost]] * (sweep.RAY_RETRIES + 1))
    sweep._follow_on_ray(ray, [run], lambda run, error: reports.append(error))
    assert len(ray.given) == sweep.RAY_RETRIES + 1 and "worker died" in reports[-1]


HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.mark.mnist
@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="--ray needs Ray (extra 'cluster')")
def test_the_same_runs_locally_and_on_a_two_node_ray_cluster(mnist, tmp_path):
    from ray.cluster_utils import Cluster

    base = TrainConfig(epochs=1, limit=1500)
    grid = {"pool": ["max", "avg"]}
    local = run_sweep(base, grid, 2, tmp_path / "local", workers=2, log=lambda _: None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        on_ray = run_sweep(base, grid, 2, tmp_path / "ray", ray_address=cluster.address,
                           log=lambda _: None)
    finally:
        cluster.shutdown()
    for mine, theirs in zip(local["settings"], on_ray["settings"], strict=True):
        assert mine["test_acc"] == theirs["test_acc"] and theirs["n"] == 2
        for run in mine["runs"]:
            strip = [{k: v for k, v in row.items() if k != "seconds"}
                     for row in read_metrics(tmp_path / "local" / run)]
            assert strip == [{k: v for k, v in row.items() if k != "seconds"}
                             for row in read_metrics(tmp_path / "ray" / run)]


def test_ray_missing_is_said_before_anything_else(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    said = []
    with pytest.raises(Lenet5Error, match=r"--ray needs Ray .*pip install -e '\.\[cluster\]'"):
        run_sweep(TrainConfig(), {}, 1, tmp_path, ray_address="auto", log=said.append)
    assert said == [] and not any(tmp_path.iterdir())


def test_a_run_s_seconds_keep_two_figures_below_ten():
    from lenet5.sweep import _seconds

    assert [_seconds(v) for v in (0.234, 1.0, 9.96, 59.2, None)] == [
        "0.23", "1.0", "10", "59", "-"]


def test_a_ray_address_nothing_answers_at_is_one_sentence_at_once():
    """Ray retries such an address for minutes, saying so only in its log (Ctrl-C too took
    half a minute to stop it)."""
    import socket

    from lenet5.sweep import _refuse_unreachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        listening.listen()
        _refuse_unreachable(f"127.0.0.1:{port}")  # something answers: Ray's to judge
        _refuse_unreachable(f"ray://127.0.0.1:{port}")
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):  # closed now
        with pytest.raises(Lenet5Error, match=rf"^cannot reach a Ray cluster at --ray "
                                              rf"{address} \(Connection refused\); start one"):
            _refuse_unreachable(address)
    _refuse_unreachable("auto")  # the cluster `ray start` named, or one started here
    for port in ("0", "70000", "99999999999999999999"):  # 70000 had tried port 4464
        with pytest.raises(Lenet5Error, match=rf"^--ray 127\.0\.0\.1:{port} has no port \(1 "
                                              r"to 65535\); pass the cluster's address"):
            _refuse_unreachable(f"127.0.0.1:{port}")


def test_the_sweep_figure_takes_each_settings_own_runs(tmp_path, monkeypatch):
    """Each setting's curve is the mean (and band) of its own seeds' runs, n of them: not of
    every setting's runs with those seeds."""
    import lenet5.report
    from lenet5.sweep import Run, plot_sweep

    figures = []
    monkeypatch.setattr(lenet5.report, "save_figure", lambda fig, path: figures.append(fig))
    settings = [{"pool": "max"}, {"pool": "avg"}]
    accuracy = {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.5, (1, 1): 0.3}  # (setting, seed)
    runs = [Run(setting, seed, tmp_path / f"{setting}-{seed}", TrainConfig(), 1)
            for setting, seed in accuracy]
    metrics = {key: [{"epoch": 1, "test_acc": acc}] for key, acc in accuracy.items()}
    plot_sweep(tmp_path, settings, runs, metrics)
    lines = figures[0].axes[0].lines
    assert [line.get_label() for line in lines] == ["pool-max (n = 2)", "pool-avg (n = 2)"]
    assert [line.get_ydata()[0] for line in lines] == pytest.approx([85.0, 40.0])
