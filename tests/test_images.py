"""`lenet5.images`: a user's photo or drawing -> the 28x28 image MNIST would have made of it.

The invariant behind most tests: take a real MNIST test digit, disguise it the way users' images
differ from MNIST (moved, enlarged, dark on light, RGB, transparent, JPEG, uneven noisy paper),
and preprocessing must give the original digit back. Bad files must fail with an ImageError that
names the file, fast and without decoding anything large.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lenet5.errors import ImageError
from lenet5.images import MAX_FILE_BYTES, open_image, preprocess_image
from lenet5.predict import side_by_side


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (28, 28) images: 1 for the same picture, ~0 for unrelated."""
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def ink_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the strokes (pixels above half intensity)."""
    a, b = a > 127, b > 127
    return float((a & b).sum() / (a | b).sum())


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits(mnist_test_digits) -> np.ndarray:  # tests using it are marked mnist
    """60 test digits, six of each class: (60, 28, 28) uint8."""
    images, labels = mnist_test_digits
    chosen = np.concatenate([np.flatnonzero(labels == k)[:6] for k in range(10)])
    return images[chosen]


# --- disguises: how a user's image of the same digit differs from MNIST -------------------------


def enlarged(digit: np.ndarray) -> np.ndarray:
    """5x larger (smooth), off-centre on a bigger black canvas: (200, 180) uint8."""
    big = np.asarray(Image.fromarray(digit).resize((140, 140), Image.Resampling.BILINEAR))
    canvas = np.zeros((200, 180), dtype=np.uint8)
    canvas[50:190, 10:150] = big
    return canvas


def shifted(digit: np.ndarray) -> np.ndarray:
    canvas = np.zeros((60, 90), dtype=np.uint8)
    canvas[2:30, 55:83] = digit
    return canvas


def dark_on_light(digit: np.ndarray) -> np.ndarray:
    return 255 - enlarged(digit)


def rgb(digit: np.ndarray) -> np.ndarray:
    gray = dark_on_light(digit)  # (H, W)
    return np.stack([gray, gray // 2 + 128, gray], axis=-1)  # (H, W, 3), greenish paper


def transparent(digit: np.ndarray) -> np.ndarray:
    """What a browser canvas exports: black ink whose alpha is the stroke, on transparency."""
    rgba = np.zeros((*enlarged(digit).shape, 4), dtype=np.uint8)  # (H, W, 4) black, clear
    rgba[..., 3] = enlarged(digit)
    return rgba


def jpeg(digit: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(dark_on_light(digit)).save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def uneven_paper(digit: np.ndarray) -> np.ndarray:
    """Dark ink on paper lit from one side (0.55 to 0.95), with grain and specks far away."""
    rng = np.random.default_rng(int(digit.sum()))
    ink = enlarged(digit).astype(float) / 255  # (H, W)
    height, width = ink.shape
    light = (
        0.55 + 0.4 * np.arange(width)[None, :] / width + 0.05 * np.arange(height)[:, None] / height
    )
    photo = light * (1 - 0.85 * ink) + rng.normal(0, 0.03, ink.shape)  # (H, W)
    for row, col in [(5, 5), (8, 165), (120, 170), (190, 172)]:
        photo[row : row + 3, col : col + 3] = 0.1
    return np.clip(np.rint(photo * 255), 0, 255).astype(np.uint8)


DISGUISES: dict[str, Callable[[np.ndarray], object]] = {
    "shifted": shifted,
    "enlarged 5x": enlarged,
    "dark on light": dark_on_light,
    "RGB": rgb,
    "RGBA black on transparent": transparent,
    "JPEG quality 70": jpeg,
    "noisy uneven paper with specks": uneven_paper,
}


# --- MNIST itself -----------------------------------------------------------------------------


@pytest.mark.mnist
def test_an_mnist_digit_comes_back_nearly_unchanged(mnist_test_digits):
    images, _ = mnist_test_digits
    sample = images[:300]
    out = np.stack([preprocess_image(image) for image in sample])  # (300, 28, 28)
    assert out.shape == sample.shape
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - sample).mean() < 3.0  # grey levels, over all pixels
    iou = [ink_iou(a, b) for a, b in zip(sample, out, strict=True)]
    assert np.mean(iou) > 0.9
    corr = np.array([similarity(a, b) for a, b in zip(sample, out, strict=True)])
    assert corr.mean() > 0.98
    # the rest are off by one pixel: MNIST's centring rounds the centre of mass, so can we
    assert np.mean(corr > 0.95) > 0.95


@pytest.mark.mnist
def test_the_output_looks_like_mnist(digits):
    out = preprocess_image(dark_on_light(digits[0]))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255
    assert out[:4].sum() == out[-4:].sum() == out[:, :4].sum() == out[:, -4:].sum() == 0
    rows, cols = np.nonzero(out)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21  # 20 px box
    weight = out.astype(float)
    centre = [(weight * index).sum() / weight.sum() for index in np.indices(out.shape)]
    assert np.allclose(centre, 14.0, atol=0.5)  # centre of mass at (14, 14)


@pytest.mark.mnist
def test_float_input_in_0_1_and_uint8_input_agree(digits):
    digit = digits[3]
    assert np.array_equal(preprocess_image(digit / 255.0), preprocess_image(digit))


# --- disguised digits come back --------------------------------------------------------------


@pytest.mark.mnist
@pytest.mark.parametrize("disguise", list(DISGUISES))
def test_a_disguised_digit_comes_back(digits, disguise):
    corr = np.array([similarity(d, preprocess_image(DISGUISES[disguise](d))) for d in digits])
    assert corr.mean() > 0.85, f"{disguise}: mean correlation {corr.mean():.3f}"
    assert np.median(corr) > 0.9, f"{disguise}: median correlation {np.median(corr):.3f}"


@pytest.mark.mnist
def test_clean_drawings_read_their_ink_directly_with_the_same_result(digits, monkeypatch):
    """Paper of one exact grey (a canvas) tells the ink's polarity at once, sparing the server
    the local-median model; what comes out is what that model gives. Photos are left to it."""
    from lenet5.images import paper
    from lenet5.images.decode import array_to_gray

    clean = {enlarged: False, dark_on_light: True, rgb: True, transparent: True}  # dark ink?
    for make, dark_ink in clean.items():
        for digit in digits[::6]:  # one of each class
            picture = make(digit)
            gray = array_to_gray(picture, make.__name__)  # (H, W)
            assert paper.drawn_with_dark_ink(gray) is dark_ink, make.__name__
            direct = preprocess_image(picture)
            with monkeypatch.context() as patched:
                patched.setattr(paper, "drawn_with_dark_ink", lambda coarse: None)
                assert np.array_equal(preprocess_image(picture), direct), make.__name__
    photo = array_to_gray(uneven_paper(digits[0]), "photo")
    assert paper.drawn_with_dark_ink(photo) is None


@pytest.mark.mnist
def test_every_kind_of_source_gives_the_same_digit(digits, tmp_path):
    picture = dark_on_light(digits[7])  # (200, 180) uint8
    expected = preprocess_image(picture)
    file = tmp_path / "seven.png"
    file.write_bytes(png(picture))
    with file.open("rb") as stream:
        from_stream = preprocess_image(stream)
    for result in (
        preprocess_image(str(file)),
        preprocess_image(file),
        preprocess_image(file.read_bytes()),
        from_stream,
        preprocess_image(Image.open(file)),
        preprocess_image(picture.astype(np.float32) / 255),
    ):
        assert np.array_equal(result, expected)
    # colour conversions round differently in Pillow and NumPy: the same digit, nearly
    colour = np.stack([picture] * 3, axis=-1)  # (H, W, 3)
    assert similarity(preprocess_image(colour), expected) > 0.99
    assert similarity(preprocess_image(Image.fromarray(colour)), expected) > 0.99


def test_a_digit_written_in_two_strokes_keeps_both_and_drops_specks():
    """A 7 whose bar does not touch its stem is still one digit; dots far away are not."""

    def seven(gap: int, specks: bool = False) -> np.ndarray:
        page = Image.new("L", (300, 300), 255)
        draw = ImageDraw.Draw(page)
        draw.line([(80, 50), (210, 50)], fill=0, width=28)  # the bar
        draw.line([(205, 50 + gap), (110, 260)], fill=0, width=28)  # the stem
        if specks:
            for x, y in [(10, 10), (280, 20), (15, 285), (285, 280)]:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=0)
        return np.asarray(page)

    joined = preprocess_image(seven(gap=0))
    broken = preprocess_image(seven(gap=45))  # some 15 px of paper between bar and stem
    assert similarity(broken, joined) > 0.8
    top_row = broken[np.nonzero(broken.max(axis=1) > 127)[0][0]]
    assert np.count_nonzero(top_row > 127) >= 8  # the bar is there
    assert similarity(preprocess_image(seven(gap=45, specks=True)), broken) > 0.99
    stem_only = preprocess_image(seven(gap=45)[90:])
    assert similarity(stem_only, joined) < 0.7  # so the bar does matter


@pytest.mark.mnist
def test_gif_uses_the_first_frame(digits, tmp_path):
    first, second = (Image.fromarray(dark_on_light(d)) for d in (digits[0], digits[20]))
    file = tmp_path / "animated.gif"
    first.save(file, save_all=True, append_images=[second], duration=100, loop=0)
    out = preprocess_image(file)
    assert similarity(out, digits[0]) > 0.85
    assert similarity(out, digits[0]) > similarity(out, digits[20]) + 0.2


@pytest.mark.mnist
def test_exif_orientation_is_honoured(digits, tmp_path):
    """Phones store pixels as the sensor saw them and say "rotate 90 degrees" in EXIF
    (Orientation 6): the digit must be read upright."""
    upright = np.zeros((200, 120), dtype=np.uint8)  # (H, W) portrait
    upright[30:170, :] = np.asarray(
        Image.fromarray(digits[7]).resize((120, 140), Image.Resampling.BILINEAR)
    )
    stored = np.rot90(255 - upright, k=1)  # (120, 200): turned 90 degrees anticlockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    file = tmp_path / "phone.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(file, quality=95, exif=exif)

    assert open_image(file).size == (120, 200)  # (width, height) as displayed
    out = preprocess_image(file)
    assert similarity(out, preprocess_image(upright)) > 0.9
    assert similarity(out, preprocess_image(np.rot90(upright))) < 0.5
    assert np.array_equal(preprocess_image(Image.open(file)), out)  # a PIL image, too


def test_a_damaged_pil_image_is_an_image_error(tmp_path):
    file = tmp_path / "cut.png"
    file.write_bytes(truncated_png())
    with pytest.raises(ImageError, match=r"cut\.png is damaged or truncated"):
        preprocess_image(Image.open(file))  # opened lazily: the damage shows when decoding


def tiff_with_a_tag_past_its_end(tag: int) -> bytes:
    """An uncompressed TIFF of a digit whose `tag` claims 1,000 values, which would lie past
    the end of the file: Pillow warns and skips the tag."""
    img = Image.new("L", (40, 48), 235)
    ImageDraw.Draw(img).line([(8, 10), (32, 10), (16, 40)], fill=20, width=5)
    buffer = io.BytesIO()
    img.save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    assert data[:2] == b"II"  # little-endian, as Pillow writes it
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * entry  # tag, type, count, value or offset
        if struct.unpack_from("<H", data, at)[0] == tag:
            struct.pack_into("<I", data, at + 4, 1000)
            return bytes(data)
    raise AssertionError(f"no tag {tag} in Pillow's TIFF")


@pytest.mark.parametrize("tag, decodes", [(257, False), (278, True)],
                         ids=["image length: unreadable", "rows per strip: decodes"])
def test_a_damaged_tiff_warns_nothing(tag, decodes, recwarn):
    """Pillow warns on stderr about a damaged file's tags; the user gets one sentence (or the
    picture, where it still decodes) and nothing else."""
    data = tiff_with_a_tag_past_its_end(tag)
    if decodes:
        assert preprocess_image(data, name="scan.tif").shape == (28, 28)
    else:
        with pytest.raises(ImageError, match=r"^scan\.tif is not an image that can be read; "):
            preprocess_image(data, name="scan.tif")
    assert not [str(w.message) for w in recwarn]


# --- no digit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "picture",
    [
        np.full((100, 100), 255, dtype=np.uint8),
        np.zeros((28, 28), dtype=np.uint8),
        np.full((64, 64, 3), 128, dtype=np.uint8),
        np.random.default_rng(0).normal(0.5, 0.1, (200, 200)).clip(0, 1),
        np.random.default_rng(1).random((150, 150)),
        np.pad(np.ones((3, 3)), 100),  # a single speck
        np.ones((1, 1)),
    ],
    ids=["white", "black", "grey RGB", "gaussian noise", "uniform noise", "speck", "1 pixel"],
)
def test_an_image_without_a_digit_is_refused(picture):
    with pytest.raises(ImageError, match="^drawing.png contains no digit: "):
        preprocess_image(picture, name="drawing.png")


def shaded_sheet(depth: float, ink: float = 0.0) -> np.ndarray:
    """A (300, 240) photo of a sheet whose right edge lies in a shade `depth` deep (a steeper
    fall of the light than the paper model follows), with two specks and, where `ink` > 0, a
    bar of a 1 that much darker than the paper in the middle."""
    y, x = np.mgrid[0:300, 0:240].astype(np.float64)  # (300, 240) each
    sheet = 0.88 - 0.03 * y / 300
    sheet -= depth * np.clip((x - 190) / 50, 0, 1) ** 1.5 * np.clip(1 - abs(y - 150) / 120, 0, 1)
    sheet += np.random.default_rng(0).normal(0, 0.004, sheet.shape)
    for row, col in ((60, 50), (250, 120)):
        sheet[row - 1:row + 2, col - 1:col + 2] = 0.2
    sheet[70:230, 100:116] -= ink
    return np.rint(255 * sheet.clip(0, 1)).astype(np.uint8)


@pytest.mark.parametrize("depth", [0.12, 0.18])
def test_the_shade_at_a_sheets_edge_is_not_ink(depth):
    """Shade at the edge had read as a 1 (MIN_EDGE_CONTRAST). Ink as faint as the shade still
    counts away from the edge, and dark ink at the edge counts; faint ink that touches the edge
    is taken for shade (the price, stated in MIN_EDGE_CONTRAST's docstring)."""
    with pytest.raises(ImageError, match="^sheet.png contains no digit: "):
        preprocess_image(shaded_sheet(depth), name="sheet.png")
    faint = preprocess_image(shaded_sheet(depth, ink=depth))  # (28, 28)
    assert np.count_nonzero(faint > 127) >= 40 and faint[:, :10].max() == 0  # the upright bar
    along = shaded_sheet(0.0)
    along[40:260, 200:] = 40  # a pen's bar all along the right edge
    assert np.count_nonzero(preprocess_image(along) > 127) >= 40
    cropped = shaded_sheet(0.0)
    cropped[100:, 150:166] -= round(255 * depth)  # a faint bar cut by the bottom edge
    with pytest.raises(ImageError, match="contains no digit: "):
        preprocess_image(cropped)


def test_a_blank_file_names_the_file(tmp_path):
    file = tmp_path / "white.png"
    file.write_bytes(png(np.full((80, 80), 255, dtype=np.uint8)))
    with pytest.raises(ImageError, match=r"white\.png contains no digit"):
        preprocess_image(file)


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((4, 4, 5), dtype=np.uint8), "shape"),
        (np.zeros(10, dtype=np.uint8), "shape"),
        (np.zeros((0, 5), dtype=np.uint8), "empty"),
        (np.full((8, 8), 2.0), r"\[0, 1\]"),
        (np.full((8, 8), np.nan), r"\[0, 1\]"),
        (np.zeros((8, 8), dtype=np.int64), "dtype"),
    ],
)
def test_an_unusable_array_is_refused(array, words):
    with pytest.raises(ImageError, match=words):
        preprocess_image(array)


# --- bad files ------------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (the data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    data = png(np.random.default_rng(0).integers(0, 255, (100, 100), dtype=np.uint8))
    return data[: len(data) // 2]


def sparse_file(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # a hole: takes no disk space, reads as zeros


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("missing.png", None, "does not exist"),
        ("notes.png", lambda p: p.write_text("these are my notes, not a picture"), "not an image"),
        ("empty.png", lambda p: p.write_bytes(b""), "empty"),
        ("cut.png", lambda p: p.write_bytes(truncated_png()), "damaged or truncated"),
        ("wide.png", lambda p: p.write_bytes(png_claiming(7000, 6000)), "40 megapixels"),
        ("bomb.png", lambda p: p.write_bytes(png_claiming(20000, 20000)), "too large"),
        ("huge.png", sparse_file, "larger than 50 MB"),
    ],
)
def test_a_bad_file_is_refused_fast_naming_the_file(tmp_path, name, make, words):
    file = tmp_path / name
    if make is not None:
        make(file)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        for read in (open_image, preprocess_image):
            with pytest.raises(ImageError, match=words) as error:
                read(file)
            assert str(file) in str(error.value)
            assert "\n" not in str(error.value)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 20 * 2**20  # nothing big was read or decoded
    assert time.perf_counter() - start < 2.0  # first use loads Pillow's plugins: ~0.5 s


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        preprocess_image(tmp_path)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs Linux device files")
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_refused_before_reading(device):
    """Issue 17, defect 3: /dev/zero says it holds 0 bytes and never ends."""
    start = time.perf_counter()
    for read in (open_image, preprocess_image):
        with pytest.raises(ImageError, match=f"^{device} is not a regular file"):
            read(device)
    assert time.perf_counter() - start < 1.0


def test_a_fifo_with_no_writer_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def attempt() -> None:
        try:
            preprocess_image(fifo)
        except ImageError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=attempt, daemon=True)  # open() blocks in the old code
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "opening a FIFO with no writer waited for one"
    assert outcome == [f"{fifo} is not a regular file (a device, pipe or socket); "
                       "pass an image file."]


def test_a_file_read_is_bounded_whatever_its_size_claims(tmp_path, monkeypatch):
    """Files in /proc and on some network filesystems report a size that is not theirs: the
    read itself stops at MAX_FILE_BYTES + 1."""
    from lenet5.images import decode

    file = tmp_path / "liar.png"
    sparse_file(file)
    real_fstat, real_stat = os.fstat, os.stat

    def small(st: os.stat_result) -> os.stat_result:
        fields = list(st)
        fields[6] = 100  # st_size
        return os.stat_result(fields)

    monkeypatch.setattr(decode.os, "fstat", lambda fd: small(real_fstat(fd)))
    monkeypatch.setattr(Path, "stat", lambda self, **kw: small(real_stat(self)))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="larger than 50 MB"):
            open_image(file)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_FILE_BYTES + 2**20  # one bounded read, nothing more


def test_bytes_and_streams_are_named_as_the_caller_says():
    with pytest.raises(ImageError, match="^upload.jpg is not an image"):
        preprocess_image(b"GIF? no", name="upload.jpg")
    with pytest.raises(ImageError, match="^upload.jpg is not an image"):
        open_image(io.BytesIO(b"GIF? no"), name="upload.jpg")
    with pytest.raises(ImageError, match="binary mode"):
        open_image(io.StringIO("text"), name="upload.jpg")


# --- side by side and speed --------------------------------------------------------------------


@pytest.mark.mnist
def test_side_by_side_shows_both_at_the_same_height(digits):
    original = Image.fromarray(transparent(digits[5]), mode="RGBA")  # (180 wide, 200 high)
    processed = preprocess_image(original)
    picture = side_by_side(original, processed)
    assert picture.mode == "RGB" and picture.height == 224
    shown = np.asarray(picture)  # (224, W, 3)
    right = shown[:, -224:, 0]  # the 28x28, each pixel an 8x8 block
    assert np.array_equal(right[::8, ::8], processed)
    assert shown[112, 10].tolist() == [255, 255, 255]  # transparency shown as white paper
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    assert Image.open(buffer).size == picture.size


@pytest.mark.mnist
def test_a_big_photo_is_processed_quickly(digits):
    """The budget is 20 ms for a 1000x1000 JPEG on two cores; this bound only catches
    regressions like a per-pixel Python loop, which would take seconds."""
    photo = Image.fromarray(dark_on_light(digits[1])).resize((1000, 1000))
    buffer = io.BytesIO()
    photo.convert("RGB").save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    preprocess_image(data)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        preprocess_image(data)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.2


def test_quantile_is_numpys():
    """`paper.quantile` stands in for np.quantile in every reading: the same values."""
    from lenet5.images.paper import quantile

    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 10, 257, 4096):
        for values in (rng.normal(size=size), rng.random(size, dtype=np.float32),
                       rng.integers(0, 255, size=size, dtype=np.uint8),
                       rng.integers(0, 5, size=(size, 2))):
            for q in (0.0, 0.2, 0.5, 0.75, 0.999, 1.0):
                expected = np.quantile(values, q)  # float32 values: numpy rounds to float32
                assert quantile(values, q) == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("shape", [(16, 16), (16, 12), (12, 16), (16, 3), (16, 1), (2, 16)])
@pytest.mark.parametrize("percentile", [20, 50])
def test_percentile_filter_is_ndimages(shape, percentile):
    """`paper.percentile_filter` stands in for scipy's on the paper's tiny copy: the same
    values, windows wider than the image included."""
    from scipy import ndimage

    from lenet5.images.paper import percentile_filter

    small = np.random.default_rng(1).random(shape).astype(np.float32)
    size = max(3, round(0.5 * min(shape)))
    assert np.array_equal(percentile_filter(small, percentile, size),
                          ndimage.percentile_filter(small, percentile, size=size, mode="reflect"))


@pytest.mark.parametrize("strokes", [0, 1, 200])
def test_the_rank_background_of_an_even_page_is_not_smoothed(strokes, monkeypatch):
    """Where the rank filter finds one level everywhere (a canvas), it is the estimate, not
    smoothed (smoothing would give that level again, to a rounding unit); elsewhere the
    estimate is smoothed as before."""
    from scipy import ndimage

    from lenet5.images import paper

    small = np.full((16, 16), 0.3, np.float32)  # paper, bright ink on it
    small.ravel()[np.random.default_rng(1).permutation(256)[:strokes]] = 0.8
    rank = paper.percentile_filter(small, 20, 8)
    smoothed = ndimage.gaussian_filter(rank, 2.0, mode="nearest")
    calls, gaussian = [], ndimage.gaussian_filter
    monkeypatch.setattr(ndimage, "gaussian_filter",
                        lambda *args, **kw: calls.append(1) or gaussian(*args, **kw))
    np.testing.assert_allclose(paper._rank_background(small, 20), smoothed, rtol=1e-6)
    even = strokes < 200
    assert (np.ptp(rank) == 0) == even and calls == ([] if even else [1])


def test_an_opaque_picture_with_alpha_is_read_as_its_grey():
    """An RGBA or LA picture whose alpha is 255 everywhere (the page's canvas) gives the
    values compositing onto white gives, small or shrunk; a translucent one is composited."""
    from lenet5.images.decode import array_to_gray, pil_to_gray

    rng = np.random.default_rng(5)
    for shape in [(20, 30), (300, 200)]:
        rgba = (rng.random((*shape, 4)) * 255).astype(np.uint8)
        rgba[..., 3] = 255
        for img in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba[..., [0, 3]], "LA")):
            np.testing.assert_array_equal(
                pil_to_gray(img, "x"), array_to_gray(np.asarray(img.convert("LA")), "x"))
    rgba[0, 0, 3] = 0  # one transparent pixel: composited, white there
    assert pil_to_gray(Image.fromarray(rgba, "RGBA"), "x", 1000)[0, 0] == 1.0
