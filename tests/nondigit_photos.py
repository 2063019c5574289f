"""Synthetic photographs of things that are not digits, for the refusal tests and benchmark.

Letters (printed in Debian's DejaVu and Liberation fonts, and hand-drawn strokes), signs (+ - =
% $ # and others), scribbles, hatching, shapes, smudges and empty paper, each on the unevenly lit
paper of `photo_digits.photograph`, as JPEG. Nothing here shares code or seeds with the
non-digits that `lenet5.refusal` generates to calibrate a model: a benchmark on these pictures
measures what the refusal does on kinds of marks it was never tuned on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from photo_digits import DIGIT_FRACTION, SIDE_RANGE, add_specks, photograph, to_jpeg
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = ["KINDS", "make_nondigit", "make_nondigit_set", "missing_fonts"]

KINDS = ("letter", "drawn letter", "sign", "scribble", "hatching", "shape", "smudge", "empty")
SHARES = (0.2, 0.15, 0.2, 0.1, 0.1, 0.1, 0.05, 0.1)
"""How often each kind comes up in a set."""
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SIGNS = "+-=%$#&@*?!/<>~^()[]{}"
FONT_DIR = Path("/usr/share/fonts/truetype")
FONTS = tuple(f"dejavu/DejaVu{name}.ttf" for name in (
    "Sans-Bold", "Sans-BoldOblique", "Sans-ExtraLight", "Sans-Oblique", "Sans",
    "SansCondensed-Bold", "SansCondensed-BoldOblique", "SansCondensed-Oblique", "SansCondensed",
    "SansMono-Bold", "SansMono-BoldOblique", "SansMono-Oblique", "SansMono", "Serif-Bold",
    "Serif-BoldItalic", "Serif-Italic", "Serif", "SerifCondensed-Bold",
    "SerifCondensed-BoldItalic", "SerifCondensed-Italic", "SerifCondensed")) + tuple(
    f"liberation/Liberation{family}-{style}.ttf"
    for family in ("Mono", "Sans", "SansNarrow", "Serif")
    for style in ("Bold", "BoldItalic", "Italic", "Regular"))
"""The printed letters' fonts, in FONT_DIR: Debian's fonts-dejavu-core, fonts-dejavu-extra and
fonts-liberation (which Debian's chromium brings). Named, not whatever the machine has: each
font drawn shifts every later random draw, so other fonts make another set (this benchmark's
non-digits read 80.5% refused without Liberation, 75.0% with it)."""
SUPERSAMPLE = 4
"""Strokes are drawn this many times larger, then shrunk: antialiased edges, like a photo's."""

# Hand-drawn letters: strokes as polylines in a unit box (x right, y down), jittered per drawing.
STROKE_LETTERS = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.25, 0.55), (0.75, 0.55)]],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.7, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.7, 0.5)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.55), (1, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "R": [[(0, 1), (0, 0), (0.8, 0.05), (0.9, 0.25), (0.8, 0.45), (0, 0.5), (1, 1)]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "k": [[(0, 0), (0, 1)], [(0.8, 0.4), (0, 0.75), (0.9, 1)]],
    "m": [[(0, 1), (0, 0.3), (0.25, 0.25), (0.5, 0.4), (0.5, 1)],
          [(0.5, 0.4), (0.75, 0.25), (1, 0.4), (1, 1)]],
    "n": [[(0, 1), (0, 0.3), (0.5, 0.25), (0.9, 0.4), (0.9, 1)]],
    "w": [[(0, 0.3), (0.25, 1), (0.5, 0.5), (0.75, 1), (1, 0.3)]],
    "x": [[(0, 0.3), (1, 1)], [(1, 0.3), (0, 1)]],
    "y": [[(0, 0.2), (0.5, 0.6)], [(1, 0.2), (0.3, 1)]],
    "z": [[(0, 0.3), (1, 0.3), (0, 1), (1, 1)]],
}


def missing_fonts() -> str:
    """Why these sets cannot be made here ("" where they can)."""
    missing = [name for name in FONTS if not (FONT_DIR / name).is_file()]
    if not missing:
        return ""
    return (f"the non-digit sets print letters in Debian's DejaVu and Liberation fonts, and "
            f"{len(missing)} of them are not in {FONT_DIR} (first {missing[0]}): install "
            "fonts-dejavu-core, fonts-dejavu-extra and fonts-liberation")


def _font(size: int, rng: np.random.Generator) -> ImageFont.FreeTypeFont:
    if missing := missing_fonts():
        raise FileNotFoundError(missing)
    return ImageFont.truetype(str(FONT_DIR / FONTS[int(rng.integers(len(FONTS)))]), size)


def _crop(canvas: np.ndarray, level: float = 0.02) -> np.ndarray:
    """The box of the (H, W) canvas's pixels above `level`."""
    rows, cols = np.nonzero(canvas > level)
    if rows.size == 0:
        return canvas[:1, :1]
    return canvas[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _text(text: str, rng: np.random.Generator) -> np.ndarray:
    """Printed text, ink (h, w) in [0, 1], at a drawing scale of about 200 px."""
    font = _font(200, rng)
    canvas = Image.new("L", (600, 400), 0)
    bold = int(rng.integers(0, 9))
    ImageDraw.Draw(canvas).text((100, 50), text, fill=255, font=font, stroke_width=bold,
                                stroke_fill=255)
    return _crop(np.asarray(canvas, dtype=np.float32) / 255.0)


def _strokes(lines: list[np.ndarray], pen: float, rng: np.random.Generator) -> np.ndarray:
    """Polylines (k, 2) in a unit box drawn with a round pen `pen` (fraction of the box),
    ink (h, w) in [0, 1] at a drawing scale of about 200 px."""
    side = 200 * SUPERSAMPLE
    pad = int(pen * side) + 4
    canvas = Image.new("L", (side + 2 * pad, side + 2 * pad), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(2, int(pen * side))
    for line in lines:
        points = [(pad + x * side, pad + y * side) for x, y in line]
        draw.line(points, fill=255, width=width, joint="curve")
        for x, y in (points[0], points[-1]):  # round caps
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    small = canvas.resize((canvas.width // SUPERSAMPLE, canvas.height // SUPERSAMPLE),
                          Image.Resampling.BOX)
    return _crop(np.asarray(small, dtype=np.float32) / 255.0)


def _smooth_curve(points: np.ndarray, steps: int = 16) -> np.ndarray:
    """A Catmull-Rom spline (m, 2) through the points (k, 2)."""
    padded = np.vstack([points[:1], points, points[-1:]])
    t = np.linspace(0.0, 1.0, steps, endpoint=False)[:, None]  # (steps, 1)
    pieces = []
    for p0, p1, p2, p3 in zip(padded[:-3], padded[1:-2], padded[2:-1], padded[3:], strict=True):
        pieces.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                             + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return np.vstack([*pieces, points[-1:]])


def _drawn_letter(rng: np.random.Generator) -> np.ndarray:
    letter = list(STROKE_LETTERS)[int(rng.integers(len(STROKE_LETTERS)))]
    aspect = rng.uniform(0.6, 1.1)
    lines = [np.asarray(stroke, dtype=float) * [aspect, 1.0] + rng.normal(0, 0.04, (len(stroke), 2))
             for stroke in STROKE_LETTERS[letter]]
    return _strokes(lines, rng.uniform(0.05, 0.14), rng)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    points = rng.uniform(0.0, 1.0, size=(int(rng.integers(5, 13)), 2))
    return _strokes([_smooth_curve(points)], rng.uniform(0.02, 0.08), rng)


def _hatching(rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(4, 13))
    lines = []
    for angle in rng.uniform(0, np.pi, size=1 if rng.random() < 0.6 else 2):
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        for offset in np.linspace(-0.4, 0.4, count):
            centre = 0.5 + offset * normal + rng.normal(0, 0.01, 2)
            lines.append(np.array([centre - 0.45 * direction, centre + 0.45 * direction]))
    return _strokes(lines, rng.uniform(0.015, 0.05), rng)


def _shape(rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(6))
    if kind == 0:  # rectangle
        w, h = rng.uniform(0.4, 1.0, 2)
        lines = [np.array([(0, 0), (w, 0), (w, h), (0, h), (0, 0)])]
    elif kind == 1:  # triangle
        lines = [np.array([(0, 1), (0.5, 0), (1, 1), (0, 1)])]
    elif kind == 2:  # five-pointed star
        angles = np.pi / 2 + np.arange(6) * 4 * np.pi / 5
        lines = [0.5 + 0.5 * np.stack([np.cos(angles), -np.sin(angles)], axis=1)]
    elif kind == 3:  # arrow
        lines = [np.array([(0, 0.5), (1, 0.5)]), np.array([(0.7, 0.25), (1, 0.5), (0.7, 0.75)])]
    elif kind == 4:  # zigzag
        count = int(rng.integers(3, 7))
        xs = np.linspace(0, 1, 2 * count + 1)
        lines = [np.stack([xs, np.tile([0.3, 0.7], count + 1)[: xs.size]], axis=1)]
    else:  # spiral
        t = np.linspace(0, rng.uniform(3, 5) * np.pi, 80)
        lines = [0.5 + 0.5 * (t / t[-1])[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)]
    lines = [line + rng.normal(0, 0.02, line.shape) for line in lines]
    return _strokes(lines, rng.uniform(0.03, 0.1), rng)


def _smudge(rng: np.random.Generator) -> np.ndarray:
    """A soft, uneven blot: smoothed noise, thresholded softly."""
    side = 120
    noise = ndimage.gaussian_filter(rng.normal(size=(side, side)), rng.uniform(6, 14))
    y, x = np.mgrid[0:side, 0:side] / side - 0.5  # (side, side) each
    envelope = np.exp(-(x**2 + y**2) / (2 * rng.uniform(0.15, 0.25) ** 2))
    blot = 0.5 * noise / noise.std() + 3.0 * envelope - 1.5
    ink = np.clip(blot, 0.0, 1.0) * rng.uniform(0.4, 1.0)
    return _crop(ndimage.gaussian_filter(ink, 2.0).astype(np.float32), 0.1)


def _patch(kind: str, rng: np.random.Generator) -> np.ndarray | None:
    """The kind's ink (h, w) in [0, 1] at a drawing scale, or None for empty paper."""
    if kind == "letter":
        return _text(LETTERS[int(rng.integers(len(LETTERS)))], rng)
    if kind == "sign":
        return _text(SIGNS[int(rng.integers(len(SIGNS)))], rng)
    makers = {"drawn letter": _drawn_letter, "scribble": _scribble, "hatching": _hatching,
              "shape": _shape, "smudge": _smudge}
    return makers[kind](rng) if kind in makers else None


def make_nondigit(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A (H, W, 3) uint8 photo of one thing of `kind` (see KINDS) that is not a digit, sized
    and placed as `photo_digits.make_photo` places digits, rotated up to 15 degrees, blurred."""
    short = int(rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1))
    long = int(rng.integers(short, min(SIDE_RANGE[1], round(1.5 * short)) + 1))
    height, width = (short, long) if rng.random() < 0.5 else (long, short)
    ink = np.zeros((height, width), dtype=np.float32)  # (H, W)
    drawn = _patch(kind, rng)
    box = (height // 2, width // 2, height // 2, width // 2)
    if drawn is not None:
        scale = rng.uniform(*DIGIT_FRACTION) * short / max(drawn.shape)
        size = max(1, round(drawn.shape[1] * scale)), max(1, round(drawn.shape[0] * scale))
        patch = Image.fromarray(drawn).resize(size, Image.Resampling.BOX)
        patch = patch.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR, expand=True)
        patch = np.clip(ndimage.gaussian_filter(np.asarray(patch), rng.uniform(0.3, 1.5)), 0, 1)
        top = int(rng.integers(0, max(1, height - patch.shape[0] + 1)))
        left = int(rng.integers(0, max(1, width - patch.shape[1] + 1)))
        patch = patch[: height - top, : width - left]
        ink[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
        box = (top, left, top + patch.shape[0], left + patch.shape[1])
    add_specks(ink, box, rng)
    return photograph(ink, rng)


def make_nondigit_set(n: int, seed: int) -> list[tuple[bytes, str]]:
    """`n` (JPEG bytes, kind) photos of non-digits, kinds in the proportions of SHARES; the
    same seed always gives the same set (on a machine with the same fonts)."""
    rng = np.random.default_rng(seed)
    counts = np.floor(np.asarray(SHARES) * n).astype(int)
    counts[0] += n - counts.sum()
    kinds = np.repeat(KINDS, counts)
    return [(to_jpeg(make_nondigit(str(kind), rng), rng), str(kind)) for kind in kinds]
