"""The app in a real browser: Debian's headless Chromium driven by playwright types a description, clicks
Generate, waits for the gallery and checks the page it sees. CI installs chromium (.ci/run); elsewhere the
test is skipped when /usr/bin/chromium is missing."""

from __future__ import annotations

import re
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_helpers import RunningApp, app  # noqa: F401 (app is a fixture)

from browser_helpers import CHROMIUM, FLAGS, require_chromium

require_chromium()

from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow  # drives headless Chromium against a launched app (the full run only)


@pytest.fixture(scope="module")
def page(app: RunningApp):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app.url, wait_until="domcontentloaded")
        page.locator("#description textarea").wait_for(timeout=60_000)
        yield page
        browser.close()


def test_typing_a_description_and_clicking_generate_shows_the_designs(page, tmp_path: Path) -> None:
    page.locator("#description textarea").fill("red floral summer dress")
    page.locator("#generate-button").click()
    status = page.locator("#status")
    status.filter(has_text=re.compile(r"images (by \S+ )?in ")).wait_for(timeout=60_000)
    thumbnails = page.locator("#gallery img")
    assert thumbnails.count() == 4
    captions = page.locator("#gallery").inner_text()
    assert captions.count("seed ") == 4 and "step" not in captions  # finished images, not previews
    assert "settings.json" in page.locator("#downloads").inner_text()
    shot = page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page
    gallery = np.asarray(Image.open(io.BytesIO(page.locator("#gallery").screenshot())).convert("RGB"), dtype=np.float32)
    assert gallery.std() > 10 and len(np.unique(gallery.reshape(-1, 3), axis=0)) > 50  # images, not an empty box


def test_an_empty_description_shows_a_message_in_the_page(page) -> None:
    page.locator("#description textarea").fill("")
    page.locator("#generate-button").click()
    page.get_by_text("describe the garment").first.wait_for(timeout=30_000)
