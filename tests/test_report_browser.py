"""The report in a real browser: headless Chromium renders it, the DOM holds the table and the images,
the escaped clip name is text (not a script element), and the screenshot is not blank.

CI installs Debian's chromium and sets FORESIGHT_REQUIRE_BROWSER=1, so there a missing browser fails
the test; elsewhere it is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from foresight_eval.report import report
from tests.report_runs import EVIL_CLIP, make_report_runs, parse_page

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 90


@pytest.fixture(scope="module")
def browser() -> str:
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found is None:
        if os.environ.get("FORESIGHT_REQUIRE_BROWSER") == "1":
            pytest.fail("FORESIGHT_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH")
    return found


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    runs = make_report_runs(tmp_path_factory.mktemp("browser_runs"))
    files = report([str(runs.mild), str(runs.strong)], tmp_path_factory.mktemp("browser_report"), worst_k=5)
    return files.html.resolve().as_uri()


def run_chromium(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_rendered_dom_has_table_images_and_text_names(browser, page_url, tmp_path):
    dom = run_chromium(browser, tmp_path, "--dump-dom", page_url).stdout
    parsed = parse_page(dom)
    tags = [tag for tag, _ in parsed.tags]
    assert "table" in tags and 'id="summary-table"' in dom
    images = [attrs.get("src") or "" for tag, attrs in parsed.tags if tag == "img"]
    assert images and all(src.startswith("data:image/") for src in images)
    assert "script" not in tags  # the clip named <script>alert(1)</script> did not become an element
    assert any(EVIL_CLIP in text for text in parsed.text)


def test_screenshot_is_not_blank(browser, page_url, tmp_path):
    shot = tmp_path / "shot.png"
    run_chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars", page_url)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1200)
    assert pixels.std() > 10, "the screenshot is (nearly) one colour"
