"""The draw-a-digit page in a real headless Chromium: digits drawn with the mouse are classified.

The app runs under uvicorn on a free loopback port; Playwright drives Debian's Chromium. The
test is skipped when Playwright or Chromium is missing, unless MNIST_LAB_REQUIRE_BROWSER is set
(as in CI), where it fails instead.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAD = 280  # the drawing canvas's own width and height, in canvas pixels
STROKES = {  # in canvas pixels; each stroke is one press, moves, release
    "1": [[(140, 45), (140, 235)]],
    "0": [[(140 + 58 * math.sin(t / 24 * math.pi), 140 - 88 * math.cos(t / 24 * math.pi))
           for t in range(49)]],
    "7": [[(75, 55), (205, 55)], [(205, 55), (115, 235)]],
}
DONE = ("() => document.getElementById('digit').dataset.version"
        " === document.getElementById('pad').dataset.version")
# pixels of the saliency canvas tinted red (evidence for the digit): red well above green
RED_PIXELS = ("() => { const d = document.getElementById('saliency').getContext('2d')"
              ".getImageData(0, 0, 28, 28).data; let n = 0;"
              " for (let i = 0; i < d.length; i += 4) n += d[i] > d[i + 1] + 60; return n; }")


MISSING = ("playwright is not installed" if importlib.util.find_spec("playwright") is None
           else None if CHROMIUM.exists() else f"{CHROMIUM} is missing")
# a mark, not a skip inside a fixture: the session's training would run before the skip
pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("MNIST_LAB_REQUIRE_BROWSER"), reason=str(MISSING))


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (a failure when it is missing under MNIST_LAB_REQUIRE_BROWSER)."""
    if MISSING:
        pytest.fail(f"{MISSING}, and MNIST_LAB_REQUIRE_BROWSER is set", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(stored_runs) -> str:
    """The app served by uvicorn from a background thread; yields its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    from mnist_lab.serve import create_app

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(stored_runs.root), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def page(browser, server):
    """The draw page with its model list loaded; fails the test on any script error or any
    request to another origin (the page must work offline)."""
    page = browser.new_page()
    errors, elsewhere = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(server) else elsewhere.append(r.url))
    page.goto(server + "/")
    page.wait_for_selector("#model option", state="attached")
    yield page
    assert not errors, errors
    assert not elsewhere, elsewhere
    page.close()


def draw(page, strokes) -> str:
    """Draw strokes on the pad with the mouse; return the prediction shown for the drawing."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / PAD
    for stroke in strokes:
        at = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in stroke]
        page.mouse.move(*at[0])
        page.mouse.down()
        for x, y in at[1:]:
            page.mouse.move(x, y, steps=6)
        page.mouse.up()
    page.wait_for_function(DONE)
    return page.inner_text("#digit")


@pytest.mark.parametrize("digit", STROKES)
def test_drawn_digit_is_recognised(page, digit):
    assert draw(page, STROKES[digit]) == digit


def test_bars_preview_and_picker(page, stored_runs):
    predicted = int(draw(page, STROKES["7"]))
    bars = page.locator("#bars li")
    assert bars.count() == 10
    assert page.locator("#bars li.top").count() == 1
    assert bars.nth(predicted).get_attribute("class") == "top"
    widths = page.eval_on_selector_all(
        "#bars .bar", "bars => bars.map(b => parseFloat(b.style.width))")
    assert sum(widths) == pytest.approx(100, abs=1)
    ink = page.evaluate("() => document.getElementById('seen').getContext('2d')"
                        ".getImageData(0, 0, 28, 28).data.reduce((a, b) => a + b, 0)")
    assert ink > 28 * 28 * 255  # more than the opaque alpha channel: the digit is shown
    options = page.locator("#model option")
    assert options.count() == 2
    assert "(default)" in options.nth(0).inner_text()
    assert stored_runs.best.id in options.nth(0).inner_text()
    page.select_option("#model", stored_runs.small.id)
    page.wait_for_function(f"() => document.getElementById('status').textContent"
                           f" === 'model {stored_runs.small.id}'")


def test_saliency_beside_the_bars(page):
    """The map of what the model looked at shows beside its input, red on the strokes."""
    digit = draw(page, STROKES["7"])
    assert page.locator("#saliency").is_visible()
    assert page.evaluate(RED_PIXELS) >= 10
    caption = page.inner_text("#why-caption")
    assert "integrated gradients" in caption and f"class {digit}" in caption
    seen, heat = (page.locator(s).bounding_box() for s in ("#seen", "#saliency"))
    assert heat["x"] >= seen["x"] + seen["width"] and heat["y"] == pytest.approx(seen["y"])
    page.click("#clear")
    assert not page.locator("#why").is_visible()


def test_no_saliency_is_explained(page):
    """A model without gradients answers saliency: null: the page says so, with no map."""
    def without_saliency(route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "saliency": None})

    page.route("**/predict*", without_saliency)
    assert draw(page, STROKES["1"]) == "1"
    assert not page.locator("#saliency").is_visible()
    assert "no gradients" in page.inner_text("#why-caption")


def test_clear_then_redraw(page):
    assert draw(page, STROKES["7"]) == "7"
    page.click("#clear")
    assert page.inner_text("#digit") == "–"
    assert draw(page, STROKES["1"]) == "1"


def test_runs_page_lists_runs(browser, server, stored_runs):
    page = browser.new_page()
    page.goto(server + "/runs")
    page.wait_for_selector(f"tr[data-id='{stored_runs.best.id}']")
    row = page.inner_text(f"tr[data-id='{stored_runs.small.id}']")
    assert "compact_step3" in row and "smoke" in row and "complete" in row
    assert "2 run(s)" in page.inner_text("#status")
    page.close()
