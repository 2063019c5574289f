"""What a process killed outright (`kill -9`, a power cut) leaves behind, for the tests of
what removes it (`lenet5.files.abandoned`)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from lenet5.files import ABANDONED_AFTER


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def leave_behind(path: Path, old: bool = True) -> Path:
    """`path` written as a killed process left it: half a file, unchanged (with `old`) for
    longer than `files.abandoned` waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a file")
    if old:
        then = time.time() - 2 * ABANDONED_AFTER
        os.utime(path, (then, then))
    return path
