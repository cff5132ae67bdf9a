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


MEASURE_PAGE = """<!DOCTYPE html><html><body>
<iframe id="report" src="{report}" style="width: {width}px; height: 900px; border: 0"></iframe>
<pre id="out">pending</pre>
<script>
document.getElementById("report").addEventListener("load", () => {{
  const doc = document.getElementById("report").contentDocument;
  const rows = [...doc.querySelectorAll(".strip")].map((strip) => {{
    const box = strip.getBoundingClientRect();
    const right = Math.max(...[...strip.querySelectorAll("img")].map((img) => img.getBoundingClientRect().right));
    return [Math.round(box.width), Math.round(right - box.right), strip.scrollWidth - strip.clientWidth];
  }});
  const run = doc.querySelector("td.run");
  document.getElementById("out").textContent = JSON.stringify({{strips: rows, page: doc.documentElement.scrollWidth,
    sticky: run ? getComputedStyle(run).position : null}});
}});
</script></body></html>"""


def measure(browser: str, tmp_path, html) -> dict:
    """Lay ``html`` out at 1280 px in headless Chromium and read the measurements MEASURE_PAGE takes."""
    import json

    page = tmp_path / "measure.html"
    page.write_text(MEASURE_PAGE.format(report=html.resolve().as_uri(), width=1280))
    dom = run_chromium(browser, tmp_path, "--allow-file-access-from-files", "--virtual-time-budget=10000",
                       "--window-size=1320,1000", "--dump-dom", page.resolve().as_uri()).stdout
    return json.loads(dom[dom.index('<pre id="out">') + len('<pre id="out">'):dom.index("</pre>")])


def test_a_wide_leaderboard_fits_1280_px(browser, tmp_path):
    from foresight_eval.report import leaderboard
    from tests.fake_runs import write_run

    metrics = {f"metric_with_a_rather_long_name_{i}": [0.1 * i + 0.01 * j for j in range(6)] for i in range(14)}
    runs = [str(write_run(tmp_path / f"a_long_run_folder_name_number_{k}", metrics)) for k in range(3)]
    board = leaderboard(runs, tmp_path / "board")
    measured = measure(browser, tmp_path, tmp_path / "board" / "leaderboard.html")
    assert measured["page"] <= 1280 and measured["sticky"] == "sticky", measured  # scrolls inside its frame
    assert len(board.tables[0].entries) == 3


def test_wide_clips_stay_inside_their_strip_cards(browser, tmp_path):
    """640x360 clips: every frame strip scales its images down to its card at a 1280 px window."""
    from foresight_eval import ScoreOptions, score
    from fixtures.synthetic import make_scene, render_clip, to_uint8

    for side, shift in (("refs", 0), ("preds", 5)):
        (tmp_path / side).mkdir()
        for index in range(2):
            frames, _ = render_clip(make_scene(index, height=360, width=640, n_objects=2), 5)
            np.save(tmp_path / side / f"wide{index}.npy", to_uint8(np.roll(frames, shift, axis=2)), allow_pickle=False)
    run = score(tmp_path / "preds", tmp_path / "refs", ["mae"], options=ScoreOptions(context=1), device="cpu")
    files = report([str(run.write(tmp_path / "run"))], tmp_path / "out", worst_k=2, horizons=4)
    page = tmp_path / "measure.html"
    measured = measure(browser, tmp_path, files.html)
    assert len(measured["strips"]) == 2
    for width, overflow, scroll in measured["strips"]:
        assert width >= 300 and overflow <= 1 and scroll <= 0, measured  # images end inside the card
    assert measured["page"] <= 1280  # nothing widens the page beyond the window
