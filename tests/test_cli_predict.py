"""`lenet5 predict`: formats, folders, --top-k, --json, --save-input, and bad files that fail
alone (quickly, without decoding a decompression bomb) while the others are still predicted."""

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lenet5.arch import get_arch, init_params
from lenet5.checkpoint import save_model
from lenet5.cli import build_parser, main
from lenet5.predict import find_images
from lenet5.refusal import DEFAULT_THRESHOLD

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tiff": "TIFF",
           ".webp": "WEBP"}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A model file with initial weights: enough for schema and error tests, no training."""
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, init_params(get_arch("lenet5"), 0),
               {"arch": "lenet5", "dataset": "mnist", "classes": [str(d) for d in range(10)],
                "input_normalization": {"kind": "mean_std", "pad": 2, "mean": 0.1307,
                                        "std": 0.3081}})
    return path


def drawing(size=(160, 200)) -> Image.Image:
    """A dark "7" drawn on light paper."""
    image = Image.new("RGB", size, (235, 230, 220))
    w, h = size
    ImageDraw.Draw(image).line([(0.25 * w, 0.2 * h), (0.75 * w, 0.2 * h), (0.4 * w, 0.8 * h)],
                               fill=(30, 30, 40), width=max(4, w // 14), joint="curve")
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all black: tiny on disk, huge when decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(1)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    """A truncated PNG, a text file named .png, a 20000x20000 PNG and one good photo."""
    folder = tmp_path_factory.mktemp("mixed")
    drawing().save(folder / "good.jpg", quality=85)
    drawing().save(folder / "whole.png")
    whole = (folder / "whole.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "whole.png").unlink()
    (folder / "notes.png").write_text("this is not an image\n")
    (folder / "huge.png").write_bytes(png_claiming(20000, 20000))
    return folder


def test_every_format_and_the_json_schema(untrained_model, tmp_path, capsys):
    for suffix, fmt in FORMATS.items():
        drawing().save(tmp_path / f"seven{suffix}", format=fmt)
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path, "--json",
                             "--reject-threshold", "0")  # untrained: refuse nothing
    results = json.loads(out)
    assert code == 0, err
    assert [r["file"] for r in results] == [str(tmp_path / f"seven{s}") for s in sorted(FORMATS)]
    for r in results:
        assert set(r) == {"file", "label", "confidence", "top", "text", "digits", "rejected"}
        assert isinstance(r["label"], int) and isinstance(r["confidence"], float)
        assert r["text"] == str(r["label"]) and r["rejected"] is None
        (digit,) = r["digits"]
        assert set(digit) == {"label", "confidence", "box", "top"}
        assert digit["label"] == r["label"] and digit["top"] == r["top"]
        x0, y0, x1, y1 = digit["box"]  # the stroke of the 160x200 drawing
        assert 30 <= x0 < x1 <= 130 and 30 <= y0 < y1 <= 170
        assert len(r["top"]) == 3  # the default --top-k
        assert all(isinstance(k, int) and isinstance(p, float) for k, p in r["top"])
        assert [r["label"], r["confidence"]] == r["top"][0]
        probs = [p for _, p in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    labels = {r["label"] for r in results}
    assert len(labels) == 1, "the same drawing in six formats should get one label"


def test_a_refusal_is_an_answer_and_the_threshold_can_be_set(untrained_model, tmp_path,
                                                              capsys):
    """A model file without a calibrated threshold uses refusal.DEFAULT_THRESHOLD; a refused
    picture is an answer (exit 0), not an error."""
    drawing().save(tmp_path / "seven.png")
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path, "--json",
                           "--reject-threshold", "1")
    (result,) = json.loads(out)
    assert code == 0
    assert result["label"] is None and result["text"] is None
    assert "not a digit" in result["rejected"] and "threshold 1.00" in result["rejected"]
    assert [d["label"] for d in result["digits"]] == [None]
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path, "--json")
    (result,) = json.loads(out)
    default = f"threshold {DEFAULT_THRESHOLD:.2f}"
    assert result["label"] is not None or default in result["rejected"]
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path, "--reject-threshold", "1")
    assert code == 0 and out.startswith(f"{tmp_path / 'seven.png'}: not read: it is not a digit")
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path,
                             "--reject-threshold", "-0.5")
    assert code == 1 and out == ""
    assert err == "lenet5: error: --reject-threshold must be between 0 and 1, got -0.5.\n"


def test_a_number_is_read_boxed_and_saved(untrained_model, tmp_path, capsys):
    """Three drawings in a row: three digits, each boxed in the picture --save-input writes,
    beside the three 28x28 images the network saw."""
    row = Image.new("RGB", (3 * 160 + 40, 220), (235, 230, 220))
    for i in range(3):
        row.paste(drawing(), (20 + i * 160, 10))
    row.save(tmp_path / "777.png")
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path / "777.png", "--json",
                           "--reject-threshold", "0", "--save-input", tmp_path / "seen")
    (result,) = json.loads(out)
    assert code == 0 and len(result["digits"]) == 3
    assert result["label"] is None and result["top"] == []
    assert result["text"] == "".join(str(d["label"]) for d in result["digits"])
    for i, digit in enumerate(result["digits"]):
        assert 20 + i * 160 <= digit["box"][0] < digit["box"][2] <= 20 + (i + 1) * 160
    with Image.open(tmp_path / "seen" / "777.png") as picture:
        assert picture.height == 224 and picture.width > 3 * 224
        pixels = np.asarray(picture.convert("RGB"))
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 60) & (pixels[..., 2] < 60)
    assert green.any()  # the accepted digits' boxes
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path / "777.png",
                             "--save-input", tmp_path / "seen2")
    assert code == 0 and out.startswith(f"{tmp_path / '777.png'}: ")  # without --json, it
    assert err == (f"lenet5: --save-input: what the network saw of 1 picture is in "  # says
                   f"{tmp_path / 'seen2'}.\n")  # where it put them
    assert (tmp_path / "seen2" / "777.png").is_file()


def test_gif_first_frame_is_used(untrained_model, tmp_path, capsys):
    blank = Image.new("RGB", (160, 200), (235, 230, 220))
    drawing().save(tmp_path / "anim.gif", save_all=True, append_images=[blank], duration=100)
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path / "anim.gif", "--json")
    assert code == 0 and "label" in json.loads(out)[0]


def test_top_k(untrained_model, tmp_path, capsys):
    drawing().save(tmp_path / "seven.png")
    for k, expected in ((1, 1), (5, 5), (50, 10)):
        code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path, "--json",
                               "--top-k", k)
        (result,) = json.loads(out)
        assert code == 0 and len(result["top"]) == expected
        assert len({label for label, _ in result["top"]}) == expected
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path, "--top-k", "0")
    assert code == 1 and out == ""
    assert err == "lenet5: error: --top-k must be at least 1, got 0.\n"


def test_bad_files_fail_alone_quickly(untrained_model, mixed_dir, capsys):
    started = time.perf_counter()
    code, out, _ = run_cli(capsys, "predict", untrained_model, mixed_dir, "--json")
    seconds = time.perf_counter() - started
    results = {Path(r["file"]).name: r for r in json.loads(out)}
    assert code == 1
    assert list(results) == ["good.jpg", "huge.png", "notes.png", "truncated.png"]  # sorted
    assert "label" in results["good.jpg"]
    for name, words in (("huge.png", "too large"), ("notes.png", "not an image"),
                        ("truncated.png", "truncated")):
        assert set(results[name]) == {"file", "error"}
        assert name in results[name]["error"] and words in results[name]["error"]
    assert seconds < 2.0, f"predict took {seconds:.2f} s"


def test_bad_files_use_little_memory(untrained_model, mixed_dir):
    """Run the real command and read its own peak memory: the 20000x20000 PNG (400 MB
    decoded) must be refused from its header. The child reports VmHWM itself, since the
    rusage of a forked child starts from the test process's own high-water mark."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    report_peak = ("import sys\n"
                   "from lenet5.cli import main\n"
                   "code = main(sys.argv[1:])\n"
                   "sys.stderr.write(next(line for line in open('/proc/self/status')\n"
                   "                      if line.startswith('VmHWM')))\n"
                   "sys.exit(code)\n")
    process = subprocess.run([sys.executable, "-c", report_peak, "predict", str(untrained_model),
                              str(mixed_dir), "--json"], capture_output=True, text=True, env=env,
                             timeout=120)
    assert process.returncode == 1
    assert len(json.loads(process.stdout)) == 4
    peak_mb = int(process.stderr.strip().splitlines()[-1].split()[1]) / 1024  # kB
    assert peak_mb < 200, f"peak memory {peak_mb:.0f} MB"  # about 70 MB measured


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs Linux device files")
def test_devices_and_fifos_fail_alone(untrained_model, mixed_dir, tmp_path):
    """Issue 17, defect 3: `predict RUN /dev/zero` never returned (and a FIFO with no writer
    blocked). The real command, in a child capped at 2 GB of address space and a timeout."""
    import resource

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    files = ["/dev/zero", str(fifo), str(mixed_dir / "good.jpg"), "/dev/urandom"]
    process = subprocess.run([sys.executable, "-m", "lenet5", "predict", str(untrained_model),
                              *files, "--json"], capture_output=True, text=True, env=env,
                             timeout=60, preexec_fn=cap_memory)
    assert process.returncode == 1 and "Traceback" not in process.stderr
    results = json.loads(process.stdout)
    assert [r["file"] for r in results] == files
    assert "label" in results[2]
    for result in results[:2] + results[3:]:
        assert result["error"] == (f"{result['file']} is not a regular file (a device, pipe or "
                                   "socket); pass an image file.")


def test_too_big_file_and_too_many_pixels(untrained_model, tmp_path, capsys):
    with open(tmp_path / "big.jpg", "wb") as f:
        f.truncate(51 * 2**20)  # sparse: 51 MB on paper, nothing on disk
    (tmp_path / "wide.png").write_bytes(png_claiming(8000, 6000))  # 48 megapixels
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path, "--json")
    big, wide = json.loads(out)
    assert code == 1
    assert "larger than 50 MB" in big["error"]
    assert "megapixels" in wide["error"]


def test_no_ink_is_an_error_entry(untrained_model, tmp_path, capsys):
    Image.new("L", (100, 100), 240).save(tmp_path / "blank.png")
    drawing().save(tmp_path / "seven.png")
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path)
    assert code == 1
    assert out.startswith(f"{tmp_path / 'seven.png'}: ") and out.count("\n") == 1
    assert f"{tmp_path / 'blank.png'}: error: " in err and "no digit" in err
    assert "1 of 2 images could not be classified" in err


def test_save_input_names_are_unique(untrained_model, tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        drawing().save(tmp_path / "in" / folder / "7.png")
    drawing((300, 200)).save(tmp_path / "in" / "7.jpg")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a picture")
    saved = tmp_path / "seen"
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path / "in",
                           "--save-input", saved, "--json")
    results = json.loads(out)
    assert code == 1 and len(results) == 4
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["7-2.png", "7-3.png", "7.png"]  # in order: 7.jpg, a/7.png, b/7.png
    assert {Path(r["file"]).relative_to(tmp_path / "in").as_posix(): Path(r["saved_input"]).name
            for r in results if "error" not in r} == {"7.jpg": "7.png", "a/7.png": "7-2.png",
                                                      "b/7.png": "7-3.png"}
    with Image.open(saved / "7.png") as picture:
        assert picture.format == "PNG" and picture.height == 224
        assert picture.width > 224 + 224  # the 300x200 original, then the 28x28 blown up


def test_save_input_never_writes_over_a_picture_it_reads(untrained_model, tmp_path, capsys):
    """--save-input into the folder of the photos: each is saved under another name."""
    drawing().save(tmp_path / "7.png")
    drawing((300, 200)).save(tmp_path / "7-2.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path / "7.png",
                           tmp_path / "7-2.png", "--save-input", tmp_path, "--json")
    assert code == 0 and {p.name: p.read_bytes() for p in tmp_path.iterdir()
                          if p.name in before} == before
    assert [Path(r["saved_input"]).name for r in json.loads(out)] == ["7-3.png", "7-2-2.png"]


def test_pictures_may_follow_an_option(untrained_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawing().save(tmp_path / "a.png")
    drawing().save(tmp_path / "b.png")
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path / "a.png", "--top-k",
                           "1", tmp_path / "b.png", "--json")
    assert code == 0 and [Path(r["file"]).name for r in json.loads(out)] == ["a.png", "b.png"]
    drawing().save(tmp_path / "-c.png")  # after --, a name that looks like an option
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path / "a.png", "--json",
                           "--", "-c.png")
    assert [r["file"] for r in json.loads(out)] == [str(tmp_path / "a.png"), "-c.png"]
    with pytest.raises(SystemExit) as usage:  # a mistyped option is still named
        run_cli(capsys, "predict", tmp_path / "a.png", "--jsn", tmp_path / "b.png")
    assert usage.value.code == 2 and "unrecognized arguments: --jsn" in capsys.readouterr().err


@pytest.mark.parametrize("save", [False, True])
def test_a_symlink_loop_is_an_error_entry(untrained_model, tmp_path, capsys, save):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    drawing().save(tmp_path / "7.png")
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path / "loop.png",
                             tmp_path / "7.png", "--json",
                             *(["--save-input", tmp_path / "seen"] if save else []))
    results = json.loads(out)
    assert code == 1 and "Traceback" not in err
    assert "error" in results[0] and "error" not in results[1]


def test_folders_are_searched_recursively_and_sorted(tmp_path):
    for name in ("b/2.png", "a/z.PNG", "a/sub/1.jpeg", "a/readme.txt", "c.webp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_images([tmp_path / "a", tmp_path / "b", tmp_path / "missing.png"])
    assert found == [str(tmp_path / "a/sub/1.jpeg"), str(tmp_path / "a/z.PNG"),
                     str(tmp_path / "b/2.png"), str(tmp_path / "missing.png")]


def test_no_images_at_all_is_one_sentence(untrained_model, tmp_path, capsys):
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path)
    assert code == 1 and out == ""
    assert err.startswith("lenet5: error: no images found in ") and err.count("\n") == 1


@pytest.mark.mnist
def test_trained_model_reads_digits_written_as_files(trained_run, mnist, tmp_path, capsys):
    """MNIST test digits saved as dark-on-light pictures, 4x larger and off-centre, are read
    as the model reads the originals."""
    import lenet5

    digits, labels = mnist.test_images[:100], mnist.test_labels[:100]
    for i, digit in enumerate(digits):
        paper = np.full((160, 180), 230, np.uint8)
        big = np.asarray(Image.fromarray(255 - digit).resize((112, 112), Image.BICUBIC))
        top, left = 10 + i % 30, 5 + i % 50
        paper[top:top + 112, left:left + 112] = np.minimum(paper[top:top + 112,
                                                                 left:left + 112], big)
        Image.fromarray(paper).save(tmp_path / f"{i:03d}.png")
    # refusing nothing: this weak model calibrates itself to refuse about half of its digits
    code, out, _ = run_cli(capsys, "predict", trained_run, tmp_path, "--json",
                           "--reject-threshold", "0")
    predicted = np.array([r["label"] for r in json.loads(out)])
    assert code == 0
    direct = lenet5.load(trained_run).predict(digits)
    assert np.mean(predicted == direct) >= 0.95
    assert np.mean(predicted == labels) >= 0.90


def test_save_input_failures_are_per_file_and_the_rest_go_on(untrained_model, tmp_path, capsys,
                                                             monkeypatch):
    """A full disk while writing one --save-input picture: that file keeps its reading and
    says why its picture is missing, no empty or temporary PNG is left, the other pictures
    are still saved, and one line says what failed (a full disk had given one error entry a
    file, each "could not be classified")."""
    import errno

    from lenet5 import files

    for name in ("a", "b", "c"):
        drawing().save(tmp_path / f"{name}.png")
    saved = tmp_path / "seen"
    real_fsync, calls = os.fsync, []

    def disk_full_once(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", disk_full_once)
    code, out, err = run_cli(capsys, "predict", untrained_model, *(tmp_path / f"{n}.png"
                                                                    for n in "abc"),
                             "--save-input", saved, "--json")
    results = json.loads(out)
    assert code == 1 and all("label" in r and "error" not in r for r in results)
    assert results[0]["saved_input"] is None and "No space left" in results[0]["save_error"]
    assert "--resume" not in results[0]["save_error"]
    assert [Path(r["saved_input"]).name for r in results[1:]] == ["b.png", "c.png"]
    assert sorted(p.name for p in saved.iterdir()) == ["b.png", "c.png"]
    assert err == ("lenet5: --save-input: 1 of 3 pictures could not be written, the first: "
                   f"{results[0]['save_error']}\n")


def test_ctrl_c_while_predicting_keeps_what_was_read(untrained_model, tmp_path, capsys,
                                                     monkeypatch):
    """Printed as each file is read, and as JSON of the files read so far: a stopped run over
    a folder of photos had shown nothing."""
    from lenet5 import predict

    for name in ("a", "b", "c"):
        drawing().save(tmp_path / f"{name}.png")
    read, calls = predict.predict_file, []

    def stopped_at_the_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read(*args)

    monkeypatch.setattr(predict, "predict_file", stopped_at_the_third)
    files = [tmp_path / f"{n}.png" for n in "abc"]
    code, out, err = run_cli(capsys, "predict", untrained_model, *files, "--json")
    assert code == 130 and err == "lenet5: interrupted.\n"
    assert [r["file"] for r in json.loads(out)] == [str(f) for f in files[:2]]
    calls.clear()
    code, out, _ = run_cli(capsys, "predict", untrained_model, *files)
    assert code == 130 and [line.split(":")[0] for line in out.splitlines()] == [
        str(f) for f in files[:2]]


def test_save_input_onto_a_fifo_is_a_picture_not_written(untrained_model, tmp_path, capsys):
    drawing().save(tmp_path / "a.png")
    (tmp_path / "seen").mkdir()
    os.mkfifo(tmp_path / "seen" / "a.png")
    code, out, _ = run_cli(capsys, "predict", untrained_model, tmp_path / "a.png",
                           "--save-input", tmp_path / "seen", "--json")
    assert code == 1 and "not a regular file" in json.loads(out)[0]["save_error"]


# --- paths that give no picture: each an error entry of its own ----------------------------

@pytest.fixture
def locked(tmp_path, monkeypatch) -> Path:
    """A folder this user may not enter or list, as a user other than root meets it (root,
    which CI runs as, may enter any): every look at a path under it is Permission denied."""
    folder = tmp_path / "locked"
    (folder / "sub").mkdir(parents=True)
    drawing().save(folder / "sub" / "7.png")

    def denied(real):
        def call(path, *args, **kwargs):
            if str(path).startswith(str(folder)):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)
        return call

    for name in ("stat", "lstat", "open", "scandir"):
        monkeypatch.setattr(os, name, denied(getattr(os, name)))
    return folder


def test_a_folder_given_among_pictures_that_holds_none_is_an_error_entry(untrained_model,
                                                                          tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    drawing().save(tmp_path / "7.png")
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path / "empty",
                             tmp_path / "7.png", "--json")
    results = json.loads(out)
    assert code == 1 and "Traceback" not in err
    assert results[0] == {"file": str(tmp_path / "empty"),
                          "error": f"no images found in {tmp_path / 'empty'}; pass image files "
                                   "(PNG, JPEG, BMP, GIF, TIFF, WebP) or folders holding them."}
    assert results[1]["file"] == str(tmp_path / "7.png") and "error" not in results[1]


def test_paths_that_cannot_be_looked_at_are_error_entries_not_a_traceback(
        untrained_model, locked, tmp_path, capsys):
    drawing().save(tmp_path / "7.png")
    for first in ([], [untrained_model]):  # the model named, or not (pretrained)
        code, out, err = run_cli(capsys, "predict", *first, locked / "sub" / "7.png", locked,
                                 tmp_path / "7.png", "--json")
        results = json.loads(out)
        assert code == 1 and "Traceback" not in err, err
        assert [r["file"] for r in results] == [str(locked / "sub" / "7.png"), str(locked),
                                                str(tmp_path / "7.png")]
        for r in results[:2]:
            assert r["error"] == (f"{r['file']} cannot be read (Permission denied); check the "
                                  "path and that you may read it."), r
        assert "error" not in results[2]


def unlistable(monkeypatch, folder: Path) -> None:
    """``folder`` can be looked at but not listed, as another user's folder of mode 711."""
    real = os.scandir

    def scandir(path=".", *args):
        if str(path) == str(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_alone_says_why(untrained_model, tmp_path, capsys,
                                                       monkeypatch):
    unlistable(monkeypatch, tmp_path)
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path)
    assert code == 1 and out == ""
    assert err == (f"lenet5: error: {tmp_path} cannot be read (Permission denied); check the "
                   "path and that you may read it.\n")


def test_folders_under_a_folder_that_cannot_be_listed_are_error_entries(tmp_path, monkeypatch):
    drawing().save(tmp_path / "a.png")
    (tmp_path / "b").mkdir()
    unlistable(monkeypatch, tmp_path / "b")
    found = find_images([tmp_path])
    assert found[0] == str(tmp_path / "a.png")
    assert found[1].path == str(tmp_path / "b") and "Permission denied" in found[1].error


def test_a_folder_s_links_and_odd_files_are_left_out_as_rglob_left_them(tmp_path):
    """Links to folders are not followed (one to a folder above would never end), and a
    link to nothing or a FIFO named like a picture is no picture."""
    drawing().save(tmp_path / "7.png")
    (tmp_path / "sub").mkdir()
    drawing().save(tmp_path / "sub" / "8.png")
    (tmp_path / "sub" / "up").symlink_to(tmp_path)
    (tmp_path / "linked").symlink_to(tmp_path / "sub")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "shown.png").symlink_to(tmp_path / "7.png")  # a link to a picture is one
    assert find_images([tmp_path]) == [str(tmp_path / "7.png"), str(tmp_path / "shown.png"),
                                       str(tmp_path / "sub/8.png")]


def test_found_paths_are_spelt_as_path_spells_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    drawing().save(tmp_path / "pics" / "sub" / "7.png")
    assert find_images(["./pics"]) == find_images(["pics//"]) == ["pics/sub/7.png"]


def test_every_path_given_giving_no_picture_is_one_sentence(untrained_model, tmp_path, capsys):
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path / "e1", tmp_path / "e2")
    assert code == 1 and out == ""
    assert err == (f"lenet5: error: no images found in {tmp_path / 'e1'}, {tmp_path / 'e2'}; "
                   "pass image files (PNG, JPEG, BMP, GIF, TIFF, WebP) or folders holding them.\n")


def test_where_nothing_holds_a_picture_a_folder_that_cannot_be_listed_says_why(
        untrained_model, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "locked").mkdir()
    unlistable(monkeypatch, tmp_path / "locked")
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path / "empty",
                             tmp_path / "locked", "--json")
    assert code == 1 and out == ""
    assert err == (f"lenet5: error: {tmp_path / 'locked'} cannot be read (Permission denied); "
                   "check the path and that you may read it.\n")


def test_a_missing_first_argument_is_the_model_even_as_a_link_to_nothing(tmp_path, capsys):
    drawing().save(tmp_path / "7.png")
    (tmp_path / "latest").symlink_to(tmp_path / "deleted-run")
    code, out, err = run_cli(capsys, "predict", tmp_path / "latest", tmp_path / "7.png")
    assert code == 1 and out == "" and err.startswith(f"lenet5: error: no model at {tmp_path}")


def test_a_model_that_cannot_be_looked_at_is_one_sentence(locked, capsys):
    for command in ("evaluate", "predict"):
        args = [command, locked / "run"] + ([locked / "x.png"] if command == "predict" else [])
        code, out, err = run_cli(capsys, *args)
        assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
        assert err == (f"lenet5: error: {locked / 'run'} cannot be read (Permission denied); "
                       "check the path and that you may read it.\n")


def test_save_input_that_is_a_file_says_so(untrained_model, tmp_path, capsys):
    drawing().save(tmp_path / "7.png")
    (tmp_path / "afile").write_text("")
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path / "7.png",
                             "--save-input", tmp_path / "afile")
    assert code == 1
    assert err == (f"lenet5: error: --save-input {tmp_path / 'afile'} is a file, not a folder; "
                   "choose a folder.\n")


def test_save_input_keeps_the_longest_names(untrained_model, tmp_path, capsys):
    """Pictures named with 255 bytes: the saved PNGs' temporary names, and the -2 that tells
    a second picture of the same name from the first, must fit in 255 (cut on a character)."""
    name = "7" * 248 + "é.png"  # 254 bytes
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        drawing().save(tmp_path / folder / name)
    code, out, err = run_cli(capsys, "predict", untrained_model, tmp_path / "a" / name,
                             tmp_path / "b" / name, "--json", "--save-input", tmp_path / "seen")
    assert code == 0, err
    saved = [Path(r["saved_input"]).name for r in json.loads(out)]
    assert saved == [name, "7" * 248 + "-2.png"]  # 255 bytes would cut the é in two
    assert sorted(p.name for p in (tmp_path / "seen").iterdir()) == sorted(saved)


def test_pictures_given_as_paths_are_saved_too(untrained_model, tmp_path):
    from lenet5.model import load
    from lenet5.predict import predict_files

    drawing().save(tmp_path / "7.png")
    [result] = predict_files(load(untrained_model), [tmp_path / "7.png"],
                             save_input=tmp_path / "seen")
    assert result["saved_input"] == str(tmp_path / "seen" / "7.png")


def test_a_picture_named_like_an_option_is_told_how_to_name_it(untrained_model, tmp_path,
                                                               capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawing().save(tmp_path / "-7.png")
    for argv, said in ((["predict", str(untrained_model), "-7.png"],
                        "unrecognized arguments: -7.png"),
                       (["predict", "-7.png"], "the following arguments are required")):
        with pytest.raises(SystemExit) as usage:
            main(argv)
        assert usage.value.code == 2
        err = capsys.readouterr().err
        assert said in err and "(-7.png is a file or folder: write it as ./-7.png)" in err
    with pytest.raises(SystemExit):  # after --, a path is no option: the error is another's
        main(["predict", "--top-k", "x", "--", "-7.png"])
    assert "--top-k" in (err := capsys.readouterr().err) and "./-7.png" not in err
    with pytest.raises(SystemExit):  # a parser that was not told what it parses
        build_parser().parse_args(["predict", str(untrained_model), "-7.png"])
    assert "unrecognized" in (err := capsys.readouterr().err) and "./-7.png" not in err


def test_the_last_line_counts_images_and_folders_apart(untrained_model, tmp_path, capsys):
    Image.new("L", (100, 100), 240).save(tmp_path / "blank.png")
    drawing().save(tmp_path / "seven.png")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "predict", untrained_model, tmp_path / "seven.png",
                           tmp_path / "empty")
    assert code == 1 and err.endswith("lenet5: 1 folder gave no image.\n"), err
    code, _, err = run_cli(capsys, "predict", untrained_model, tmp_path / "seven.png",
                           tmp_path / "blank.png", tmp_path / "empty", tmp_path / "empty")
    assert code == 1 and err.endswith(
        "lenet5: 1 of 2 images could not be classified; 2 folders gave no image.\n"), err


def test_a_file_name_that_is_not_utf8_is_printed_escaped(untrained_model, tmp_path, monkeypatch):
    """Such a name comes in as lone surrogates, which a strict UTF-8 stdout (an ordinary
    UTF-8 locale's) refused with a traceback after the work was done."""
    import io

    picture = tmp_path / os.fsdecode(b"\xff7.png")
    drawing().save(picture)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["predict", str(untrained_model), str(picture)]) == 0
    stdout.flush()
    assert stdout.buffer.getvalue().startswith(os.fsencode(tmp_path) + b"/\\udcff7.png: ")
