"""Screenshots of the page of `lenet5 serve` reading a number written on it with the mouse (a
desktop) and with a finger (a phone): serve_numbers.png and serve_numbers_phone.png.

    PYTHONPATH=src python scripts/serve_screenshots.py RUN_OR_MODEL [--number 2024]
                                                       [--out benchmarks/results]

The model is served as `lenet5 serve` serves it, on 127.0.0.1, and the page opened in Debian's
chromium (headless, as the browser tests drive it); the second digit is chosen, so that its
box and its probabilities are the ones shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser kit
from browser import chromium, draw, number_strokes, serve_app, touch_draw  # noqa: E402

from lenet5.server import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCREENS = {  # file: the browser context's options
    "serve_numbers.png": {"viewport": {"width": 1280, "height": 900}},
    "serve_numbers_phone.png": {"viewport": {"width": 390, "height": 844},
                                "device_scale_factor": 2, "is_mobile": True, "has_touch": True},
}


def shoot(browser, base_url: str, number: str, out: Path, name: str, options: dict) -> str:
    """Write the number on the page, choose its second digit, save the screen; what it read."""
    from playwright.sync_api import expect

    page = browser.new_context(**options).new_page()
    page.goto(base_url + "/")
    expect(page.locator("#model-info")).to_contain_text("parameters")
    aspect = page.evaluate("(b => b.width / b.height)(canvas.getBoundingClientRect())")
    strokes = number_strokes(number, aspect)
    if options.get("has_touch"):
        for line in strokes:
            touch_draw(page, line)
    else:
        draw(page, strokes)
    expect(page.locator("#result")).to_have_attribute("aria-busy", "false")  # the last answer
    page.locator("#digits button").nth(1).click()
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)  # the bars grow (a CSS transition)
    page.screenshot(path=str(out / name))
    read = page.locator("#label").text_content()
    page.context.close()
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="run directory or model.safetensors to serve")
    parser.add_argument("--number", default="2024", help="digits to write (0, 1, 2, 4, 7)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with serve_app(create_app(args.model)) as base_url, chromium() as browser:
        for name, options in SCREENS.items():
            read = shoot(browser, base_url, args.number, args.out, name, options)
            print(f"{args.out / name}: wrote {args.number}, the page read {read}")


if __name__ == "__main__":
    main()
