"""Replay issue 17's defects in model files, training runs and writes, as a user meets them.

Each case runs the real ``lenet5`` command in a fresh process and expects what the issue asks
for: a non-zero exit, no traceback, and stderr that is exactly one line starting
``lenet5: error:`` (or, where the case says so, a correct repair). Needs MNIST (fetched on
first use into the usual cache) and some 2 minutes of a 2-core machine. The device-node case
needs root; without it a FIFO stands in.

    python benchmarks/replay_issue17_runs.py

Prints one line per case and exits 1 if any case fails.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared helpers
from lying_models import ISSUE_LIES, LIES, rewrite_metadata  # noqa: E402

SMALL = ["--limit", "2000", "--batch-size", "64", "--no-report"]


def lenet5(*argv: object, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    command = [sys.executable, "-m", "lenet5", *map(str, argv)]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, expect: str) -> tuple[bool, str]:
    """(passed, what stderr said): exit != 0, no traceback, one `lenet5: error:` line holding
    ``expect``."""
    lines = proc.stderr.strip().splitlines()
    line = lines[-1] if lines else "(nothing on stderr)"
    ok = (proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1
          and line.startswith("lenet5: error:") and expect in line)
    return ok, f"exit {proc.returncode}: {line}"


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for f in run.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


class Replay:
    """The runs the cases start from (copied, never changed), and the tally."""

    def __init__(self, work: Path, digit: Path, run: Path, run_1998: Path):
        self.work, self.digit, self.run, self.run_1998 = work, digit, run, run_1998
        self.model_bytes = (run / "model.safetensors").read_bytes()
        self.failed = self.n = 0

    def fresh(self, name: str) -> Path:
        return copy_run(self.run, self.work / name)

    def check(self, name: str, result: tuple[bool, str]) -> None:
        ok, said = result
        self.n += 1
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name:<46} {said}", flush=True)


def lying_metadata(r: Replay) -> None:
    lies = {name: LIES[name] for name in (*ISSUE_LIES, "unknown kind", "numbers as classes")}
    for lie, (field, value) in lies.items():
        model = r.fresh(f"lie-{lie.replace(' ', '-')}") / "model.safetensors"
        rewrite_metadata(model, **{field: value})
        for command in (["evaluate", model], ["predict", model, r.digit],
                        ["export", model, "-o", model.with_suffix(".onnx")]):
            r.check(f"{command[0]}: metadata {lie}",
                    one_line_error(lenet5(*command), repr(field)))
    model = r.fresh("lie-serve") / "model.safetensors"
    rewrite_metadata(model, input_normalization="{}")
    r.check("serve: metadata {}", one_line_error(
        lenet5("serve", model, "--port", "0", "--workers", "1"), "input_normalization"))


def flipped_bit(r: Replay) -> None:
    model = r.fresh("flipped") / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-5000] ^= 0x08
    model.write_bytes(bytes(data))
    for command in (["evaluate", model], ["predict", model, r.digit]):
        r.check(f"{command[0]}: a flipped bit in the weights",
                one_line_error(lenet5(*command), "damaged: its weights do not match"))


def export_onto_a_device(r: Replay) -> None:
    node = r.work / "full"
    if os.geteuid() == 0:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a /dev/full of our own
        kind = "a device node"
    else:
        os.mkfifo(node)
        kind = "a FIFO (not root)"
    before = os.lstat(node)
    ok, said = one_line_error(lenet5("export", r.run, "-o", node), "not a regular file")
    after = os.lstat(node)
    ok = ok and (after.st_mode, after.st_rdev) == (before.st_mode, before.st_rdev)
    r.check(f"export -o {kind}", (ok, said))
    (r.work / "seen").mkdir()
    os.mkfifo(r.work / "seen" / r.digit.name)
    proc = lenet5("predict", r.run, r.digit, "--save-input", r.work / "seen", "--json")
    result = json.loads(proc.stdout)[0] if proc.stdout else {}
    r.check("predict --save-input onto a FIFO", (
        proc.returncode == 1 and "not a regular file" in result.get("error", ""),
        f"exit {proc.returncode}: {result.get('error', proc.stderr.strip())}"))


def mixed_up_resume(r: Replay) -> None:
    run = r.fresh("mixed")
    (r.run_1998 / "state.safetensors").replace(run / "state.safetensors")
    r.check("--resume: a lenet5-1998 state in a lenet5 run",
            one_line_error(lenet5("train", "--resume", run, "--epochs", 3),
                           "was written by a lenet5-1998 run"))
    for name, fields, expect in (("epoch abc", {"epoch": "abc"}, "'epoch'"),
                                 ("epoch -1", {"epoch": "-1"}, "'epoch'"),
                                 ("epoch 9", {"epoch": "9"}, "holds 2")):
        run = r.fresh(f"state-{name.replace(' ', '-')}")
        rewrite_metadata(run / "state.safetensors", **fields)
        r.check(f"--resume: state {name}",
                one_line_error(lenet5("train", "--resume", run, "--epochs", 12), expect))
    for i, (name, text, expect) in enumerate((("a list", "[1, 2]", "holds a list"),
                                              ('"lr": "fast"', None, "not a number"))):
        run = r.fresh(f"config-{i}")
        if text is None:
            config = json.loads((run / "config.json").read_text())
            text = json.dumps({**config, "lr": "fast"})
        (run / "config.json").write_text(text)
        r.check(f"--resume: config.json holding {name}",
                one_line_error(lenet5("train", "--resume", run, "--epochs", 3), expect))
    run = r.fresh("complete")
    config_before = (run / "config.json").read_bytes()
    ok, said = one_line_error(lenet5("train", "--resume", run, "--epochs", 1),
                              "already has 2 finished epochs")
    r.check("--resume --epochs 1 after 2 epochs", (
        ok and (run / "config.json").read_bytes() == config_before, said))
    r.check("--resume with --lr and --batch-size", one_line_error(
        lenet5("train", "--resume", run, "--lr", "0.1", "--batch-size", "8"),
        "--batch-size, --lr cannot be changed"))
    lone = r.work / "lone"
    lone.mkdir()
    (lone / "model.safetensors").write_bytes(r.model_bytes)
    r.check("train --out DIR holding a lone model", one_line_error(
        lenet5("train", "--out", lone, *SMALL, "--epochs", 1), "already holds a model"))


def two_trainings(r: Replay) -> None:
    """Two `lenet5 train --out SAME` at once; then kill -9 during an epoch and resume."""
    out = r.work / "shared"
    first = lenet5("train", "--out", out, "--epochs", 2, "--no-report", wait=False)
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    r.check("a second train --out SAME while one runs", one_line_error(
        lenet5("train", "--out", out, *SMALL, "--epochs", 1),
        f"being written by process {first.pid}"))
    while not (out / "metrics.jsonl").exists() and first.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # well into epoch 2
    first.send_signal(signal.SIGKILL)
    first.wait()
    (out / ".model.safetensors.k1ll3d00.tmp").write_bytes(b"half a model")  # as a kill leaves
    proc = lenet5("train", "--resume", out, "--no-report")
    leftovers = sorted(p.name for p in out.glob(".*.tmp"))
    rows = len((out / "metrics.jsonl").read_text().splitlines())
    r.check("kill -9, then --resume (lock and .tmp gone)", (
        proc.returncode == 0 and not leftovers and rows == 2,
        f"exit {proc.returncode}: {rows} epochs, leftovers {leftovers or 'none'}"))


def bad_flags(r: Replay) -> None:
    for argv, expect in ((["--seed", "-1"], "--seed must be at least 0"),
                         (["--optimizer", "sgd", "--momentum", "-1"], "--momentum must be"),
                         (["--weight-decay", "-1"], "--weight-decay must be"),
                         (["--optimizer", "sgd", "--momentum", "nan"], "--momentum must be"),
                         (["--momentum", "0.5"], "--optimizer sgd only")):
        r.check(f"train {' '.join(argv)}", one_line_error(
            lenet5("train", "--out", r.work / "never", *argv), expect))


def divergence(r: Replay) -> None:
    r.check("train --lr 1e6", one_line_error(
        lenet5("train", "--lr", "1e6", "--out", r.work / "lr1e6", *SMALL, "--epochs", 2),
        "training diverged"))
    r.check("train --arch lenet5-1998 --lr 10", one_line_error(
        lenet5("train", "--arch", "lenet5-1998", "--lr", "10", "--out", r.work / "lr10",
               "--limit", "2000", "--epochs", 3, "--no-report"), "training diverged"))


CASES: tuple[Callable[[Replay], None], ...] = (
    export_onto_a_device, lying_metadata, flipped_bit, mixed_up_resume, two_trainings,
    bad_flags, divergence)


def main() -> int:
    from PIL import Image

    from lenet5.data import load

    with tempfile.TemporaryDirectory(prefix="replay17-") as tmp:
        work = Path(tmp)
        Image.fromarray(load("mnist", log=lambda _: None).test_images[0]).save(work / "digit.png")
        print("training the runs the cases start from ...", flush=True)
        for out, argv in ((work / "base", ["--epochs", 2]),
                          (work / "base-1998", ["--arch", "lenet5-1998", "--epochs", 1])):
            proc = lenet5("train", "--out", out, *SMALL, *argv)
            if proc.returncode:
                print(proc.stderr)
                return 1
        r = Replay(work, work / "digit.png", work / "base", work / "base-1998")
        for case in CASES:
            case(r)
        print(f"{r.n - r.failed} of {r.n} cases pass")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
