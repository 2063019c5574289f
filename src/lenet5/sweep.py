"""`lenet5 sweep`: every (setting, seed) of a grid as an ordinary run directory, and statistics.

A single run is an anecdote; a sweep trains each setting with seeds 0..N-1 and reports the
test accuracy as mean, sample standard deviation, range and a 95% confidence interval, and
compares every pair of settings with Welch's t-test (which does not assume equal variances).

Runs are independent processes, each on one BLAS thread, so a run gives the same numbers
whichever machine of one kind runs it: locally in a process pool, or as Ray tasks on a
cluster (``ray_address``), whose results come back into the sweep folder on the driver. A
sweep is resumable: finished runs are kept, unfinished ones resumed, and a failed run is
reported in the summary, never dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import active_children, get_context
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import numpy as np

from .checkpoint import load_model
from .errors import Lenet5Error, Terminated
from .files import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    make_folder,
    read_config,
    read_metrics,
    refuse_others_files,
    write_atomic,
)
from .refusal import calibrated
from .signals import ctrl_c_ignored
from .training import TrainConfig, resume_config, train

SUMMARY_JSON, SUMMARY_MD, FIGURE = "summary.json", "summary.md", "sweep.png"
RAY_RETRIES = 3  # a task lost to a dead worker or node runs again this many times
EPOCH_POLL_S = 0.5  # how often a Ray task looks for a newly finished epoch to send back


@dataclass(frozen=True)
class Run:
    """One (setting, seed) of a sweep."""

    setting: int  # index into the sweep's settings
    seed: int
    directory: Path
    config: TrainConfig  # as given, with seed and out (train resolves the defaults)
    epochs: float  # how many the run has when finished


def settings_of(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values (TrainConfig fields), in the order given."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def setting_name(params: dict, folder: bool = False) -> str:
    """A setting's name, 'pool-avg_lr-0.001', or 'base' without a grid; as a `folder` name
    under --out, a value's "/" and what else a name should not hold %-escaped
    (data_dir-..%2F..%2Fdata), so that every run stays in its own folder there."""
    def shown(value: object) -> str:
        return quote(os.fsencode(str(value)), safe="") if folder else str(value)

    return "_".join(f"{k}-{shown(v)}" for k, v in params.items()) or "base"


def plan(base: TrainConfig, settings: list[dict], seeds: int, out: Path) -> list[Run]:
    runs = []
    for index, params in enumerate(settings):
        for seed in range(seeds):
            directory = out / setting_name(params, folder=True) / f"seed-{seed}"
            config = dataclasses.replace(base, **params, seed=seed, out=str(directory))
            if "optimizer" in params:  # the base's --beta1 is for the grid's Adam runs only
                config = config.without_other_optimizers_settings()
            try:
                config.validate()
            except Lenet5Error as exc:  # the grid's value, where the flags alone are good
                raise Lenet5Error(f"--grid's setting {setting_name(params)}: {exc}"
                                  if params and _valid(base) else str(exc)) from None
            _refuse_other_settings(directory, config)
            runs.append(Run(index, seed, directory, config, config.resolved().epochs))
    return runs


def _valid(config: TrainConfig) -> bool:
    try:
        config.validate()
    except Lenet5Error:
        return False
    return True


# settings a run may differ in and still be the planned run: where it runs, and its length
NOT_COMPARED = ("out", "data_dir", "device", "epochs")


def _refuse_other_settings(directory: Path, config: TrainConfig) -> None:
    """A run directory already there must hold the run planned, not one trained otherwise
    (a sweep into the same DIR with other options)."""
    if not (directory / CONFIG_FILE).is_file():
        return
    saved = read_config(directory, "the sweep")
    planned = dataclasses.asdict(config.resolved())
    differs = sorted(k for k, v in planned.items()
                     if k not in NOT_COMPARED and k in saved and saved[k] != v)
    if differs:
        shown = ", ".join(f"{k} {saved[k]!r} there, {planned[k]!r} now" for k in differs)
        raise Lenet5Error(f"{directory} holds a run trained with other settings ({shown}); "
                          "sweep into another --out, or delete it to train it again.")


def _a_sweeps_summary(out: Path) -> bool:
    """Whether `out` holds a summary.json lenet5 sweep wrote."""
    try:
        return set(json.loads((out / SUMMARY_JSON).read_text())) == {"settings", "comparisons"}
    except (OSError, ValueError, TypeError):  # none, not JSON, or not an object's keys
        return False


def finished_metrics(runs: list[Run]) -> dict[tuple[int, int], list[dict]]:
    """The metrics rows of each finished run (a model file of all its epochs, a last part
    pass's fraction included, and its refusal calibrated), by (setting, seed): each file read
    once."""
    done = {}
    for run in runs:
        if not (run.directory / MODEL_FILE).is_file():
            continue
        try:
            metadata = load_model(run.directory)[1]
            rows = read_metrics(run.directory, tested=True)
        except Lenet5Error:
            continue
        if metadata["epochs"] >= run.epochs and calibrated(metadata):
            done[run.setting, run.seed] = rows
    return done


# --- running one run, wherever ------------------------------------------------------------

def execute(config: TrainConfig, directory: str) -> str | None:
    """Train one run in ``directory`` (resuming what is there) on one BLAS thread; None, or
    the one-sentence reason it failed."""
    from threadpoolctl import threadpool_limits

    if config.engine == "torch":
        import torch

        torch.set_num_threads(1)
    quiet = lambda _: None  # noqa: E731
    try:
        with threadpool_limits(limits=1), _dataset_lock(config):
            from .data import datasets

            datasets.fetch(config.dataset, config.data_dir, log=quiet,  # once per node; the
                           repair=config.data_dir is not None)  # run then decodes it itself
        with threadpool_limits(limits=1):
            again = "the same `lenet5 sweep` command"  # continues every run
            if (Path(directory) / CONFIG_FILE).is_file():  # started: resumed (or started again)
                train(resume_config(directory, config.epochs), resume=directory, log=quiet,
                      progress=False, resumed_by=again)
            else:
                train(config, log=quiet, progress=False, resumed_by=again)
    except Lenet5Error as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def _dataset_lock(config: TrainConfig) -> Iterator[None]:
    """Runs on one machine fetch the dataset one at a time (the first fetches, the rest find
    it verified in the cache)."""
    from .data.datasets import cache_dir

    lock = cache_dir(config.dataset).parent / f".{config.dataset}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_files(directory: Path) -> dict[str, bytes]:
    """A run's files, its state read first: newer files beside it still resume (training
    writes the state last), while an older file beside a newer state would not."""
    names = sorted((p.name for p in directory.iterdir()
                    if p.is_file() and not p.name.startswith(".")),
                   key=lambda name: name != STATE_FILE)
    return {name: (directory / name).read_bytes() for name in names}


def _write_run_files(directory: Path, files: dict[str, bytes]) -> None:
    """A run's files as ``_run_files`` read them, the state written last, as training does."""
    for name in sorted(files, key=lambda name: name == STATE_FILE):
        write_atomic(directory / name, files[name])


def _ray_task(config: TrainConfig, files: dict[str, bytes]
              ) -> Iterator[tuple[str | None, dict[str, bytes], bool]]:
    """A run on a Ray worker, in a scratch folder there: the run's files so far go in; its
    files come back after each finished epoch, so that a sweep stopped part-way keeps them,
    and at the end with the outcome: (error or None, files, whether it is the end)."""
    with _scratch_folder() as scratch:
        _write_run_files(scratch, files)
        outcome: dict[str, str | None] = {}
        run = threading.Thread(target=lambda: outcome.update(error=_outcome(
            lambda: execute(dataclasses.replace(config, out=str(scratch)), str(scratch)))))
        run.start()
        try:
            state, saved = scratch / STATE_FILE, _stamp(scratch / STATE_FILE)
            while run.is_alive():
                run.join(EPOCH_POLL_S)
                stamp = _stamp(state)
                if stamp != saved and run.is_alive():  # an epoch finished: what a kill now
                    saved = stamp  # would leave, which resumes
                    yield None, _run_files(scratch), False
        finally:  # (the generator closed early: its folder goes only once the run ends)
            run.join()
        yield outcome.get("error", "the run ended without an outcome"), _run_files(scratch), True


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which write of ``path`` is there: each atomic write is a new file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


SCRATCH_PREFIX, SCRATCH_LOCK = "lenet5-sweep-", ".scratch.lock"
NODE_LOCK = ".lenet5-sweep.lock"  # in the temporary folder: one task at a time makes its own


@contextlib.contextmanager
def _scratch_folder() -> Iterator[Path]:
    """A Ray task's folder in the node's temporary folder, locked while the task lives: a
    task killed with its worker (a sweep stopped) leaves it, and a later task removes it.
    Folders are made and locked under NODE_LOCK, so one without its lock taken is dead."""
    temporary = Path(tempfile.gettempdir())
    with open(temporary / NODE_LOCK, "a") as node:
        fcntl.flock(node, fcntl.LOCK_EX)
        for folder in temporary.glob(f"{SCRATCH_PREFIX}*"):
            with contextlib.suppress(OSError):
                _remove_if_dead(folder)
        scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        lock = open(scratch / SCRATCH_LOCK, "w")  # noqa: SIM115 (held while the task lives)
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield scratch
    finally:
        lock.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_if_dead(folder: Path) -> None:
    try:
        lock = open(folder / SCRATCH_LOCK)  # noqa: SIM115
    except FileNotFoundError:  # killed before it locked it
        shutil.rmtree(folder)
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its task lives
        shutil.rmtree(folder)


# --- executors ----------------------------------------------------------------------------

Report = Callable[[Run, str | None], None]


def run_locally(runs: list[Run], workers: int, report: Report) -> None:
    if workers == 1:  # one at a time: no pool needed
        for run in runs:
            report(run, _outcome(lambda run=run: execute(run.config, str(run.directory))))
        return
    context = get_context("spawn")  # a fresh interpreter per worker: no inherited BLAS threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_stop_at_a_signal) as pool:
        with ctrl_c_ignored():  # the workers start at the first submit: until their
            futures = {pool.submit(_execute_unless_stopped, run.config,  # initializer takes
                                   str(run.directory)): run for run in runs}  # Ctrl-C
        try:
            for future in as_completed(futures):
                report(futures[future], _outcome(future.result))
        except KeyboardInterrupt:  # Ctrl-C, or `kill` (which reaches only this process): the
            pool.shutdown(wait=False, cancel_futures=True)  # runs stop now, no other starts
            for worker in active_children():
                worker.terminate()
            raise


_worker = {"running": False, "stopped": False}  # a pool worker's own: see _stop_at_a_signal


def _stop_at_a_signal() -> None:
    """A pool worker's first SIGINT (Ctrl-C reaches the whole sweep) or SIGTERM (the sweep's,
    when it is stopped) ends its run as Ctrl-C ends `lenet5 train`, and it starts no other
    run: the pool hands it those queued before the stop."""
    def stop(signum: int, frame: object) -> None:
        first = not _worker["stopped"]
        _worker["stopped"] = True
        if first and _worker["running"]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _execute_unless_stopped(config: TrainConfig, directory: str) -> str | None:
    if _worker["stopped"]:  # (the sweep has stopped too, unless the worker alone was)
        return "not started: its worker process was stopped (Ctrl-C or kill); run the sweep again"
    _worker["running"] = True
    try:
        return execute(config, directory)
    finally:
        _worker["running"] = False


def import_ray() -> ModuleType:
    """The ray module, or the error that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise Lenet5Error(f"--ray needs Ray ({exc}); install it with `pip install -e "
                          "'.[cluster]' -c constraints.txt`.") from None
    return ray


def run_on_ray(runs: list[Run], address: str, report: Report) -> None:
    """Each run a Ray task (one CPU), retried if its worker dies; the run's files come back
    into its directory here after each epoch. ``address`` "auto": the cluster RAY_ADDRESS or
    `ray start` on this machine names, else a Ray instance started here for the sweep."""
    ray = import_ray()
    env = {k: v for k, v in os.environ.items() if k == "LENET5_DATA"}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:  # a Ray instance started here ends with the sweep, even stopped while it starts
        try:
            ray.init(address=None if address == "auto" else address, include_dashboard=False,
                     log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise Lenet5Error(f"cannot reach a Ray cluster at --ray {address} ({exc}); start "
                              "one (`ray start --head`) or pass its address.") from None
        except SystemExit as exc:  # ray.init's own SIGTERM handler, from its start on
            if exc.code == signal.SIGTERM:
                raise Terminated from None
            raise
        finally:
            if on_sigterm is not None and signal.getsignal(signal.SIGTERM) is not on_sigterm:
                signal.signal(signal.SIGTERM, on_sigterm)  # (ray.init's exits, unsaid)
        _follow_on_ray(ray, runs, report)
    finally:
        ray.shutdown()


RAY_CONNECT_TIMEOUT = 5.0
"""Seconds --ray HOST:PORT has to answer before the sweep says it cannot reach it: Ray's own
connection retries each failure for minutes, saying so only in its log."""


def _refuse_unreachable(address: str) -> None:
    """A Lenet5Error when --ray names a host and port (``ray://`` too) where nothing accepts
    a connection; "auto" and what is not HOST:PORT are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    if not 1 <= int(port) <= 65535:
        raise Lenet5Error(f"--ray {address} has no port (1 to 65535); pass the cluster's "
                          "address as HOST:PORT, e.g. 10.0.0.5:6379.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), RAY_CONNECT_TIMEOUT).close()
    except (OSError, ValueError) as exc:  # refused, no such host, timed out
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                  ) or "timed out"
        raise Lenet5Error(f"cannot reach a Ray cluster at --ray {address} ({reason}); start "
                          "one (`ray start --head`) or pass its address.") from None


def _follow_on_ray(ray: ModuleType, runs: list[Run], report: Report) -> None:
    """Each run a streaming task; its files written here as they come. A task that fails
    (its worker or node lost) starts again from the files here, at most RAY_RETRIES times:
    Ray's own retry would start it again from the files it was first given."""
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    pending, failures = {}, dict.fromkeys(range(len(runs)), 0)

    def submit(index: int) -> None:
        pending[task.remote(runs[index].config, _existing_files(runs[index].directory))] = index

    for index in range(len(runs)):
        submit(index)
    while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready)
        try:
            error, files, finished = ray.get(next(ready))
        except (ray.exceptions.RayError, StopIteration) as exc:
            failures[index] += 1
            if failures[index] <= RAY_RETRIES:
                submit(index)
                continue
            error, files, finished = f"the Ray task failed ({type(exc).__name__}: {exc})", {}, True
        _write_run_files(runs[index].directory, files)
        if finished:
            report(runs[index], error)
        else:
            pending[ready] = index


def _existing_files(directory: Path) -> dict[str, bytes]:
    return _run_files(directory) if (directory / STATE_FILE).is_file() else {}


def _outcome(result: Callable[[], str | None]) -> str | None:
    """A run's outcome; a crash (a bug, a worker process killed) is that run's failure."""
    try:
        return result()
    except Exception as exc:
        return f"the run failed ({type(exc).__name__}: {exc})"


# --- the sweep ----------------------------------------------------------------------------

MAX_SEEDS = 10_000
"""Seeds per setting beyond any comparison's need (a typo: 10**20 had filled the memory with
the plan of its runs)."""


def run_sweep(base: TrainConfig, grid: dict[str, list], seeds: int, out: Path, *,
              workers: int | None = None, ray_address: str | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Train what is not finished yet, then write and return the summary."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise Lenet5Error(f"--seeds must be between 1 and {MAX_SEEDS:,}, got {seeds}.")
    if workers is not None and workers < 1:
        raise Lenet5Error(f"--workers must be at least 1, got {workers}.")
    if ray_address:
        import_ray()  # a missing Ray, or a cluster not there, is said before the plan is
        _refuse_unreachable(ray_address)
    settings = settings_of(grid)
    runs = plan(base, settings, seeds, out)
    refuse_others_files(out, (SUMMARY_JSON, SUMMARY_MD, FIGURE), lambda: _a_sweeps_summary(out),
                        "sweep", "sweep into another --out")
    make_folder(out)  # a --out that cannot be is said before any run
    done = finished_metrics(runs)
    todo = [run for run in runs if (run.setting, run.seed) not in done]
    failures: dict[tuple[int, int], str] = {}
    log(f"sweep: {len(settings)} setting(s) x {seeds} seed(s) -> {out}; {len(runs) - len(todo)} "
        f"finished already, {len(todo)} to run"
        + (f" on Ray ({ray_address})" if ray_address else ""))
    if todo:
        bar = _progress(len(todo))

        def report(run: Run, error: str | None) -> None:
            bar.update()
            label = f"{setting_name(settings[run.setting])} seed {run.seed}"
            if error:
                failures[(run.setting, run.seed)] = error
                log(f"{label}: failed: {error}")
            else:
                accuracy = read_metrics(run.directory, tested=True)[-1]["test_acc"]
                log(f"{label}: test accuracy {100 * accuracy:.2f}%")

        if ray_address:
            run_on_ray(todo, ray_address, report)
        else:
            run_locally(todo, workers or os.cpu_count() or 1, report)
        bar.close()
    metrics = finished_metrics(runs) if todo else done
    summary = summarize(out, settings, runs, failures, metrics)
    write_atomic(out / SUMMARY_JSON, json.dumps(summary, indent=2).encode())
    write_atomic(out / SUMMARY_MD, summary_markdown(summary).encode())
    plot_sweep(out, settings, runs, metrics)
    log(f"sweep: {out / SUMMARY_MD}")
    return summary


def _progress(total: int):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="runs", file=sys.stderr,
                disable=not sys.stderr.isatty())


# --- statistics -----------------------------------------------------------------------------

def describe(values: list[float], low: float = -math.inf, high: float = math.inf) -> dict:
    """Mean, sample standard deviation, range and the 95% t-interval of the mean, cut to the
    range the values can take (``low`` to ``high``): from two seeds the interval is wide, and
    an accuracy's had reached past 100%."""
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values)) if n else None
    std = float(np.std(values, ddof=1)) if n > 1 else None
    ci95 = None
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci95 = [max(mean - half, low), min(mean + half, high)]
    return {"mean": mean, "std": std, "min": min(values, default=None),
            "max": max(values, default=None), "ci95": ci95}


def compare(a: list[float], b: list[float]) -> dict:
    """b's mean minus a's, its 95% interval and p-value by Welch's t-test."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return {"difference": None, "ci95": None, "p_value": None, "significant": None}
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    difference = float(np.mean(b) - np.mean(a))
    se = math.sqrt(va + vb)
    if se == 0:
        return {"difference": difference, "ci95": [difference, difference],
                "p_value": 0.0 if difference else 1.0, "significant": difference != 0}
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf(0.975, dof)) * se
    p_value = float(2 * stats.t.sf(abs(difference) / se, dof))
    return {"difference": difference, "ci95": [difference - half, difference + half],
            "p_value": p_value, "significant": p_value < 0.05}


def summarize(out: Path, settings: list[dict], runs: list[Run],
              failures: dict[tuple[int, int], str], metrics: dict) -> dict:
    """summary.json's document, from the finished runs' own metrics (``finished_metrics``)."""
    done = [[run for run in runs if run.setting == index and (index, run.seed) in metrics]
            for index in range(len(settings))]
    accuracy_of = [[metrics[index, run.seed][-1]["test_acc"] for run in done[index]]
                   for index in range(len(settings))]
    rows = []
    for index, params in enumerate(settings):
        mine = [run for run in runs if run.setting == index]
        accuracy = accuracy_of[index]
        seconds = [sum(row.get("seconds", 0.0) for row in metrics[index, run.seed])
                   for run in done[index]]
        failed = [{"seed": run.seed, "run": str(run.directory.relative_to(out)),
                   "error": failures.get((index, run.seed), "did not finish")}
                  for run in mine if (index, run.seed) not in metrics]
        rows.append({"params": params, "n": len(done[index]),
                     "seeds": [run.seed for run in done[index]],
                     "test_acc": describe(accuracy, 0.0, 1.0),
                     "train_seconds": describe(seconds, 0.0),
                     "runs": [str(run.directory.relative_to(out)) for run in done[index]],
                     "failed": failed,
                     "config": _config_json(mine[0].config)})
    comparisons = []
    for i, j in itertools.combinations(range(len(rows)), 2):
        comparisons.append({"a": rows[i]["params"], "b": rows[j]["params"],
                            "test": "Welch's t-test, two-sided, on final test accuracy",
                            **compare(accuracy_of[i], accuracy_of[j])})
    return {"settings": rows, "comparisons": comparisons}


def _config_json(config: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(config.resolved()).items()
            if k not in ("seed", "out")}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _seconds(value: float | None) -> str:
    """A run's training time: two significant figures below 10 s (0.23 s is not "0", and 1 s
    beside 0.77 s is "1.0")."""
    if value is None:
        return "-"
    return f"{value:#.2g}" if value < 9.95 else f"{value:.0f}"


def summary_markdown(summary: dict) -> str:
    lines = ["| setting | n | test accuracy mean +- std | min | max | 95% CI of the mean | "
             "training s/run |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary["settings"]:
        acc, sec = s["test_acc"], s["train_seconds"]
        std = "" if acc["std"] is None else f" +- {100 * acc['std']:.2f}"
        ci = "-" if acc["ci95"] is None else f"{_pct(acc['ci95'][0])} - {_pct(acc['ci95'][1])}"
        lines.append(f"| {setting_name(s['params'])} | {s['n']} | {_pct(acc['mean'])}{std} | "
                     f"{_pct(acc['min'])} | {_pct(acc['max'])} | {ci} | "
                     f"{_seconds(sec['mean'])} |")
    failed = [f for s in summary["settings"] for f in s["failed"]]
    if failed:
        lines += ["", "Failed runs:", *[f"- {f['run']}: {f['error']}" for f in failed]]
    if summary["comparisons"]:
        lines += ["", "| b - a | difference | 95% CI | p (Welch) | significant |",
                  "|---|---:|---:|---:|---|"]
        for c in summary["comparisons"]:
            d = c["difference"]
            lines.append(
                f"| {setting_name(c['b'])} - {setting_name(c['a'])} | "
                + ("-" if d is None else f"{100 * d:+.2f} pt") + " | "
                + ("-" if c["ci95"] is None else
                   f"{100 * c['ci95'][0]:+.2f} to {100 * c['ci95'][1]:+.2f}") + " | "
                + ("-" if c["p_value"] is None else f"{c['p_value']:.3g}") + " | "
                + ("-" if c["significant"] is None else "yes" if c["significant"] else "no")
                + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(out: Path, settings: list[dict], runs: list[Run], metrics: dict) -> Path:
    """Test accuracy by epoch: each setting's mean over seeds, with a band of +- one std."""
    from .report import new_figure, save_figure

    fig = new_figure(7.5, 4.5)
    ax = fig.subplots()
    for index, params in enumerate(settings):
        curves = [[(row["epoch"], row["test_acc"]) for row in metrics[index, run.seed]
                   if "test_acc" in row]  # every epoch, or the last (--no-test-each-epoch)
                  for run in runs if run.setting == index and (index, run.seed) in metrics]
        if not curves:
            continue
        length = min(map(len, curves))
        acc = 100 * np.array([[a for _, a in c[:length]] for c in curves])  # (seeds, epochs)
        epochs = np.array([e for e, _ in curves[0][:length]])
        mean, std = acc.mean(axis=0), acc.std(axis=0, ddof=1) if len(acc) > 1 else 0 * acc[0]
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3,
                          label=f"{setting_name(params)} (n = {len(acc)})")
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)",
           title="Test accuracy over seeds: mean, band +- 1 std")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return save_figure(fig, out / FIGURE)

