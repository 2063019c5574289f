"""The draw-a-digit page in real headless Chromium: draw stroke by stroke, upload, undo, clear;
numbers read with a box per digit, and marks refused as not digits.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install chromium`) and Playwright's
Python package; Playwright's own browser download is not used. Set LENET5_SCREENSHOT_DIR to
keep the screenshots (serve_screenshot.png, serve_screenshot_phone.png) there as well.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from browser import (
    CHROMIUM,
    DIGIT_STROKES,
    NO_CHROMIUM,
    chromium,
    draw,
    each_map_shows_its_part_of_the_strip,
    number_strokes,
    settled,
    touch_draw,
    write_row,
)
from nondigit_photos import STROKE_LETTERS, make_nondigit_set, missing_fonts
from number_photos import make_number_set
from PIL import Image

pytestmark = [pytest.mark.mnist, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("fastapi", reason="the web extra is not installed")

SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.44, 0.82)]]  # one stroke, 0-1 canvas coordinates
ONE = [[(0.52, 0.18), (0.48, 0.82)]]
HATCHING = [[(0.18 + 0.13 * i, 0.15), (0.18 + 0.13 * i, 0.85)] for i in range(6)]
"""Six parallel strokes, closer than digits are ever written side by side, that the fixture's
weak model reads as crowded 1s. (It read eight strokes 0.08 apart as 188: two or three
strokes as one 8, whose centres stand farther apart.)"""


@pytest.fixture(scope="module")
def base_url(trained_run, serve) -> str:
    from lenet5.server import create_app

    return serve(create_app(trained_run))


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def open_page(browser, base_url: str, script: str | None = None, **context_options):
    """The page, loaded, with `script` run before its own; and the errors it logs."""
    page = browser.new_context(**context_options).new_page()
    if script:
        page.add_init_script(script)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(base_url + "/")
    sync_api.expect(page.locator("#model-info")).to_contain_text("parameters")
    return page, errors


def keep(page, tmp_path: Path, name: str) -> Path:
    settled(page)
    page.wait_for_timeout(300)  # the bars' transition
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("LENET5_SCREENSHOT_DIR"):
        target = Path(os.environ["LENET5_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def test_draw_undo_clear_on_the_page(browser, base_url, tmp_path):
    page, errors = open_page(browser, base_url, viewport={"width": 1280, "height": 900})
    label = page.locator("#label")
    sync_api.expect(label).to_have_text("?")
    sync_api.expect(page.locator("#undo")).to_be_disabled()

    draw(page, SEVEN)
    sync_api.expect(label).to_have_text("7")
    sync_api.expect(page.locator("#bars li.best .name")).to_have_text("7")
    assert page.locator("#input").get_attribute("src").startswith("data:image/png;base64,")
    maps = page.locator("#layers img[src^='data:image/png']")
    sync_api.expect(maps).to_have_count(6 + 6 + 16 + 16)
    assert page.locator("#layers figure figcaption strong").all_text_contents() == \
        ["C1", "S2", "C3", "S4"]
    shown = page.locator("#input").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert shown == [28, 28]
    keep(page, tmp_path, "serve_screenshot.png")
    each_map_shows_its_part_of_the_strip(page)

    page.keyboard.press("Control+z")  # undo the only stroke: back to an empty pad
    sync_api.expect(label).to_have_text("?")
    sync_api.expect(page.locator("#pad-hint")).to_be_visible()

    draw(page, ONE)
    sync_api.expect(label).to_have_text("1")
    page.keyboard.press("Escape")  # clear
    sync_api.expect(label).to_have_text("?")
    assert page.locator("#layers img[src]").count() == 0

    draw(page, SEVEN)
    sync_api.expect(label).to_have_text("7")
    page.locator("#clear").click()
    sync_api.expect(label).to_have_text("?")
    assert errors == []


RECORD_EXCHANGES = """
window.exchanges = [];  // [bytes posted, answer] of every POST: Playwright sees no Blob bodies
const pageFetch = window.fetch;
window.fetch = async (url, options = {}) => {
  if (options.method !== "POST") return pageFetch(url, options);
  const posted = Array.from(new Uint8Array(await new Response(options.body).arrayBuffer()));
  const response = await pageFetch(url, options);
  window.exchanges.push([posted, await response.clone().json()]);
  return response;
};
"""


@pytest.mark.parametrize("deflate", [True, False], ids=["grey", "no-CompressionStream"])
def test_what_the_page_posts_and_shows(browser, base_url, deflate):
    """The page POSTs its drawing as Pillow would see the canvas: a PNG of one 8-bit grey
    channel (cheaper for the server to decode), or the canvas's own RGBA PNG in a browser that
    cannot deflate; each layer's maps show the strip of the answer to the last drawing."""
    script = RECORD_EXCHANGES + ("" if deflate else "delete window.CompressionStream;")
    page, errors = open_page(browser, base_url, script)
    draw(page, SEVEN)
    settled(page)
    sync_api.expect(page.locator("#label")).to_have_text("7")
    posted, answer = page.evaluate("window.exchanges.at(-1)")  # what the page shows
    Image.open(io.BytesIO(bytes(posted))).verify()  # every chunk's CRC
    sent = Image.open(io.BytesIO(bytes(posted)))
    assert (sent.format, sent.mode, sent.size) == ("PNG", "L" if deflate else "RGBA", (240, 160))
    width, height, rgba = page.evaluate(
        "() => [sendCanvas.width, sendCanvas.height,"
        " Array.from(sendCtx.getImageData(0, 0, sendCanvas.width, sendCanvas.height).data)]")
    canvas = Image.frombytes("RGBA", (width, height), bytes(rgba)).convert("L")
    assert sent.convert("L").tobytes() == canvas.tobytes()
    assert canvas.getextrema() == (17, 255)  # ink #111 on white, anti-aliased between
    for layer in answer["layers"]:
        shown = page.locator(f"#layers figure[data-name='{layer['name']}'] img")
        assert shown.evaluate_all("imgs => imgs.map((img) => img.src)") == \
            [layer["strip"]] * layer["count"]
    assert errors == []


def test_a_drawing_cleared_while_it_is_encoded_is_not_posted(browser, base_url):
    """Encoding is asynchronous: a drawing cleared before its PNG is ready is dropped, not
    posted, and its answer never replaces the empty pad."""
    page, errors = open_page(browser, base_url, RECORD_EXCHANGES)
    page.evaluate("""() => {
      const encode = greyPng;
      greyPng = async (pixels) => {
        await new Promise((resolve) => setTimeout(resolve, 600));
        return encode(pixels);
      };
    }""")
    draw(page, SEVEN)
    page.wait_for_timeout(200)  # predicted (150 ms after the stroke), still encoding
    page.keyboard.press("Escape")
    page.wait_for_timeout(1000)
    sync_api.expect(page.locator("#label")).to_have_text("?")
    assert page.evaluate("window.exchanges.length") == 0
    assert errors == []


def test_keyboard_reaches_every_control(browser, base_url):
    page, _ = open_page(browser, base_url)
    draw(page, ONE)  # undo and clear are enabled once there is something to undo
    sync_api.expect(page.locator("#undo")).to_be_enabled()
    focused = []
    for _ in range(6):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || "
                                     "document.activeElement.tagName.toLowerCase()"))
    assert focused[:3] == ["undo", "clear", "upload"]
    assert "summary" in focused
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.locator("#clear").focus()
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#label")).to_have_text("?")
    # Clear is disabled now: the focus goes on to Upload, not back to the page's start
    assert page.evaluate("document.activeElement.id") == "upload"


def test_uploading_a_photo(browser, base_url, trained_run, mnist, tmp_path):
    """A test digit, enlarged and printed dark on light (as a photo of paper would be)."""
    from lenet5.images import preprocess_image
    from lenet5.model import load

    model = load(trained_run)
    for image, truth in zip(mnist.test_images, mnist.test_labels, strict=True):
        paper = Image.fromarray(255 - image).resize((168, 168), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        paper.save(buffer, "PNG")
        if model.predict(preprocess_image(buffer.getvalue()))[0] == truth:
            break
    photo = tmp_path / "digit.png"
    photo.write_bytes(buffer.getvalue())

    page, errors = open_page(browser, base_url)
    page.locator("#file").set_input_files(str(photo))
    sync_api.expect(page.locator("#label")).to_have_text(str(truth))
    sync_api.expect(page.locator("#pad-hint")).to_be_hidden()

    page.locator("#file").set_input_files({"name": "notes.txt", "mimeType": "text/plain",
                                          "buffer": b"not an image"})
    sync_api.expect(page.locator("#status")).to_contain_text("not an image")
    sync_api.expect(page.locator("#label")).to_have_text("?")
    inked = page.evaluate("""(() => {  // the pad names the file it cannot show: not blank
        const pad = document.getElementById("canvas");
        const { data } = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height);
        return data.filter((value, i) => i % 4 === 0 && value < 200).length;
    })()""")
    assert inked > 0
    assert [e for e in errors if "status of 415" not in e] == []  # the console logs the 415


def test_readable_on_a_phone(browser, base_url, tmp_path):
    page, errors = open_page(browser, base_url, viewport={"width": 390, "height": 844},
                             device_scale_factor=2, is_mobile=True, has_touch=True)
    draw(page, SEVEN)
    sync_api.expect(page.locator("#label")).to_have_text("7")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    canvas = page.locator("#canvas").bounding_box()
    assert 300 <= canvas["width"] <= 390
    keep(page, tmp_path, "serve_screenshot_phone.png")
    assert errors == []


@pytest.mark.parametrize("width", [1024, 390])
def test_the_empty_page_fits_its_window(browser, base_url, width):
    """Before anything is drawn, the empty feature maps had widened the page (1164 px at
    1024): no sideways scrolling."""
    page, errors = open_page(browser, base_url, viewport={"width": width, "height": 800})
    sync_api.expect(page.locator("#label")).to_have_text("?")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert errors == []


def test_the_server_s_error_about_a_drawing_is_the_page_s_sentence(browser, base_url):
    """The server calls what it was sent "the uploaded image"; the page says the drawing."""
    page, errors = open_page(browser, base_url, viewport={"width": 1280, "height": 900})
    page.route("**/api/predict", lambda route: route.fulfill(
        status=400, content_type="application/json",
        body='{"error": "the uploaded image contains no digit: nothing stands out."}'))
    draw(page, SEVEN)
    sync_api.expect(page.locator("#status")).to_have_text(
        "The drawing contains no digit: nothing stands out.")
    assert all("400" in error for error in errors)  # the answer's status, logged


# --- numbers and refusals -------------------------------------------------------------------

def aspect_of(page) -> float:
    box = page.locator("#canvas").bounding_box()
    return box["width"] / box["height"]


def boxes_on_screen(page) -> list[dict]:
    return [box.bounding_box() for box in page.locator("#boxes .box").all()]


def test_a_number_drawn_on_the_page(browser, base_url):
    """714 written on the pad: the number, a box around each digit, each digit's bars."""
    page, errors = open_page(browser, base_url, viewport={"width": 1280, "height": 900})
    strokes = number_strokes("714", aspect_of(page))
    draw(page, strokes)
    settled(page)
    sync_api.expect(page.locator("#label")).to_have_text("714")
    sync_api.expect(page.locator("#result")).to_have_attribute("data-state", "number")
    sync_api.expect(page.locator("#announce")).to_contain_text("Read the number 714")
    canvas = page.locator("#canvas").bounding_box()
    boxes = boxes_on_screen(page)
    assert len(boxes) == 3 and page.locator("#boxes .badge").all_text_contents() == \
        ["7", "1", "4"]
    starts = [0, len(DIGIT_STROKES["7"]), len(DIGIT_STROKES["7"]) + len(DIGIT_STROKES["1"])]
    for box, first in zip(boxes, starts, strict=True):  # each box holds its digit's strokes
        x, y = strokes[first][-1]
        x, y = canvas["x"] + x * canvas["width"], canvas["y"] + y * canvas["height"]
        assert box["x"] - 10 <= x <= box["x"] + box["width"] + 10
        assert box["y"] - 10 <= y <= box["y"] + box["height"] + 10

    chips = page.locator("#digits button")
    assert chips.all_text_contents() == ["7", "1", "4"]
    sync_api.expect(page.locator("#bars li.best .name")).to_have_text("7")
    first_input = page.locator("#input").get_attribute("src")
    chips.nth(2).click()  # the keyboard's way to choose a digit
    sync_api.expect(page.locator("#bars li.best .name")).to_have_text("4")
    chosen_input = page.locator("#input").get_attribute("src")  # the 4's 28x28
    assert chosen_input.startswith("data:image/png;base64,") and chosen_input != first_input
    sync_api.expect(chips.nth(2)).to_have_attribute("aria-pressed", "true")
    sync_api.expect(page.locator("#bars-for")).to_have_text("Digit 3 of 3, read as 4:")
    page.locator("#boxes .badge").nth(1).click()  # the pointer's: the badge over the pad
    sync_api.expect(page.locator("#bars li.best .name")).to_have_text("1")
    sync_api.expect(page.locator("#boxes .box").nth(1)).to_have_class("box selected")
    assert page.locator("#input").get_attribute("src") not in (first_input, chosen_input)
    chips.nth(0).focus()
    page.keyboard.press("Escape")  # the chips go with the drawing: the focus goes to Upload
    sync_api.expect(page.locator("#label")).to_have_text("?")
    assert page.evaluate("document.activeElement.id") == "upload"
    assert errors == []


def test_what_is_no_digit_is_refused_and_said_so(browser, base_url):
    """Hatching: the whole refused, in words and in its own look; a letter inside a number:
    its digits still shown, the letter's place marked as not a digit."""
    page, errors = open_page(browser, base_url, viewport={"width": 1280, "height": 900})
    label = page.locator("#label")
    draw(page, HATCHING)
    settled(page)
    sync_api.expect(label).to_have_text("Not a digit")
    sync_api.expect(label).to_have_class("label refused")
    sync_api.expect(page.locator("#result")).to_have_attribute("data-state", "refused")
    sync_api.expect(page.locator("#confidence")).to_have_text("Refused, not guessed")
    sync_api.expect(page.locator("#status")).to_contain_text("too close together")
    sync_api.expect(page.locator("#announce")).to_contain_text("Not a digit.")
    refused = page.locator("#boxes .box.refused")
    assert refused.count() == page.locator("#boxes .box").count() > 1
    assert set(page.locator("#boxes .badge").all_text_contents()) == {"✕"}

    page.keyboard.press("Escape")
    sync_api.expect(label).to_have_text("?")
    # an "E": the fixture's weak model, trained one way or another, has read a "K", an "m"
    # or an "x" and the 4 beside it as one wide mark
    draw(page, write_row([DIGIT_STROKES["7"], STROKE_LETTERS["E"], DIGIT_STROKES["4"]],
                         aspect_of(page)))
    settled(page)
    sync_api.expect(page.locator("#result")).to_have_attribute("data-state", "partial")
    sync_api.expect(label.locator(".slot")).to_have_count(1)
    badges = page.locator("#boxes .badge").all_text_contents()  # the 4 may be misread
    assert badges[:2] == ["7", "✕"] and len(badges) == 3
    assert label.evaluate("l => [...l.childNodes].map(n => n.nodeType === 3 ? n.data : "
                          "n.className)") == ["7", "slot", badges[2]]
    sync_api.expect(page.locator("#confidence")).to_have_text(
        "Partly read: 2 of 3 marks are digits")
    sync_api.expect(page.locator("#status")).to_contain_text("Mark 2 of 3 is not a digit: ")
    sync_api.expect(page.locator("#announce")).to_contain_text(
        f"Partly read: 7, not a digit, {badges[2]}.")
    assert page.locator("#boxes .box.refused").count() == 1
    chip = page.locator("#digits button").nth(1)
    assert "not a digit" in chip.get_attribute("aria-label")
    chip.click()
    sync_api.expect(page.locator("#bars-for")).to_contain_text("Mark 2 of 3: not a digit")
    assert errors == []


@pytest.mark.skipif(bool(missing_fonts()), reason=missing_fonts())
def test_uploading_a_number_and_a_non_digit(browser, base_url, trained_run, mnist, tmp_path):
    """A photographed number the model reads exactly, then a photo of something else that it
    refuses: the page shows what the server answered, boxes on the photo."""
    from lenet5.model import load

    model = load(trained_run)
    number = next((jpeg, text) for jpeg, text, _ in make_number_set(
        mnist.test_images, mnist.test_labels, 20, seed=31) if model.read(jpeg)["text"] == text)
    other = next(jpeg for jpeg, kind in make_nondigit_set(40, seed=32)
                 if kind != "empty" and (answer := model.read(jpeg))["digits"]
                 and answer["label"] is None and answer["text"] is None
                 and all(d["label"] is None for d in answer["digits"]))
    (tmp_path / "number.jpg").write_bytes(number[0])
    (tmp_path / "other.jpg").write_bytes(other)

    page, errors = open_page(browser, base_url, viewport={"width": 1280, "height": 900})
    page.locator("#file").set_input_files(str(tmp_path / "number.jpg"))
    sync_api.expect(page.locator("#label")).to_have_text(number[1])
    sync_api.expect(page.locator("#boxes .box")).to_have_count(len(number[1]))
    canvas = page.locator("#canvas").bounding_box()
    lefts = []
    for box in boxes_on_screen(page):
        assert canvas["x"] <= box["x"] <= box["x"] + box["width"] <= canvas["x"] + canvas["width"]
        lefts.append(box["x"])
    assert lefts == sorted(lefts)

    page.locator("#file").set_input_files(str(tmp_path / "other.jpg"))
    sync_api.expect(page.locator("#label")).to_have_text("Not a digit")
    sync_api.expect(page.locator("#status")).to_contain_text("not a digit")
    sync_api.expect(page.locator("#bars-for")).to_contain_text("none sure enough")
    assert errors == []


def test_a_number_written_with_a_finger_on_a_phone(browser, base_url):
    page, errors = open_page(browser, base_url, viewport={"width": 390, "height": 844},
                             device_scale_factor=2, is_mobile=True, has_touch=True)
    for line in number_strokes("714", aspect_of(page)):
        touch_draw(page, line)
    settled(page)
    sync_api.expect(page.locator("#label")).to_have_text("714")
    sync_api.expect(page.locator("#boxes .box")).to_have_count(3)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    badges = [badge.bounding_box() for badge in page.locator("#boxes .badge").all()]
    for box in [page.locator("#label").bounding_box(), *boxes_on_screen(page), *badges]:
        assert 0 <= box["x"] <= box["x"] + box["width"] <= 390
    sync_api.expect(page.locator("#label")).to_be_in_viewport()
    sync_api.expect(page.locator("#boxes .box").first).to_be_in_viewport()
    assert errors == []
