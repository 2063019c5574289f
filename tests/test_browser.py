"""The draw-a-digit page in real headless Chromium: draw stroke by stroke, upload, undo, clear.

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
from browser import CHROMIUM, NO_CHROMIUM, chromium, draw
from PIL import Image

pytestmark = [pytest.mark.mnist, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("fastapi", reason="the web extra is not installed")

SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.44, 0.82)]]  # one stroke, 0-1 canvas coordinates
ONE = [[(0.52, 0.18), (0.48, 0.82)]]


@pytest.fixture(scope="module")
def base_url(trained_run, serve) -> str:
    from lenet5.server import create_app

    return serve(create_app(trained_run))


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def open_page(browser, base_url: str, **context_options):
    page = browser.new_context(**context_options).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.goto(base_url + "/")
    sync_api.expect(page.locator("#model-info")).to_contain_text("parameters")
    return page, errors


def keep(page, tmp_path: Path, name: str) -> Path:
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
