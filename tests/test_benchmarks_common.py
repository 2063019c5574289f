"""`benchmarks/common.py`: what the benchmark scripts share."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from common import picture_folder  # noqa: E402


def test_pictures_go_to_a_folder_removed_afterwards_unless_kept(tmp_path):
    with picture_folder(None, "lenet5-test-") as folder:
        (folder / "a.jpg").write_bytes(b"x")
        assert folder.name.startswith("lenet5-test-")
    assert not folder.exists()
    try:  # a benchmark stopped half-way leaves nothing either
        with picture_folder(None, "lenet5-test-") as folder:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        assert not folder.exists()
    kept = tmp_path / "kept" / "here"
    with picture_folder(str(kept), "lenet5-test-") as folder:
        (folder / "a.jpg").write_bytes(b"x")
    assert folder == kept and (kept / "a.jpg").read_bytes() == b"x"
