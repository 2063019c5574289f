"""`tests/nondigit_photos.py`: photos of letters, signs, scribbles and other non-digits."""

from __future__ import annotations

import hashlib
import shutil

import nondigit_photos
import pytest
from nondigit_photos import FONT_DIR, FONTS, make_nondigit_set, missing_fonts

pytestmark = pytest.mark.skipif(bool(missing_fonts()), reason=missing_fonts())


def digest(pictures: list[tuple[bytes, str]]) -> str:
    return hashlib.sha256(b"".join(jpeg + kind.encode() for jpeg, kind in pictures)).hexdigest()


def test_a_set_is_the_same_whatever_other_fonts_the_machine_has(tmp_path, monkeypatch):
    """The benchmark's figures compare across machines only on the same pictures: another
    font on the machine had made every letter after the first another one."""
    made_here = digest(make_nondigit_set(30, seed=5))
    for name in FONTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FONT_DIR / name, tmp_path / name)
    shutil.copy(FONT_DIR / FONTS[0], tmp_path / "dejavu" / "AnotherFont.ttf")
    monkeypatch.setattr(nondigit_photos, "FONT_DIR", tmp_path)
    assert digest(make_nondigit_set(30, seed=5)) == made_here


def test_a_missing_font_is_named_with_its_package(tmp_path, monkeypatch):
    monkeypatch.setattr(nondigit_photos, "FONT_DIR", tmp_path)
    assert missing_fonts().endswith("install fonts-dejavu-core, fonts-dejavu-extra and "
                                    "fonts-liberation")
    with pytest.raises(FileNotFoundError, match=f"{len(FONTS)} of them are not in {tmp_path}"):
        make_nondigit_set(30, seed=5)
