"""`report`: the page's structure, self-containment, escaping, gate badges, and robustness to missing clips."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from foresight_eval.report import build_report_context, load_runs, report
from foresight_eval.report.render import render
from tests.report_runs import CLIPS, EVIL_CLIP, METRICS, escaped, make_report_runs, parse_page

MODEL = "<b>model</b> & co"  # a model label with markup, given as LABEL=DIR


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_report_runs(tmp_path_factory.mktemp("report_runs"))


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    files = report([str(runs.mild), f"{MODEL}={runs.strong}"], out, title="Noise <levels>", worst_k=2)
    return files, files.html.read_text(encoding="utf-8"), files.markdown.read_text(encoding="utf-8")


def test_html_parses_and_holds_every_run_and_metric(written):
    _, page, _ = written
    parsed = parse_page(page)
    tags = [tag for tag, _ in parsed.tags]
    assert tags[0] == "html" and "table" in tags and "details" in tags
    text = " ".join(parsed.text)
    for label in ("mild", MODEL):
        assert label in text
    for metric in METRICS:
        assert re.search(rf"<code>{metric}</code>", page)
    assert "Noise <levels>" in text  # the title, escaped in the source and shown as typed


def test_html_is_self_contained(written):
    _, page, _ = written
    parsed = parse_page(page)
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    # 2 metrics x (curve + distribution) + frame strips (2 runs x at least 2 clips x 3 horizons x 3 rows;
    # a clip worst on both metrics has one strip)
    assert len(images) >= 4 + 2 * 2 * 3 * 3
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in images)
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for name in ("src", "href"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, attrs)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page), "a stylesheet fetches something"
    assert "@import" not in page and "@font-face" not in page


def test_summary_highlights_best_and_shows_cis(written):
    _, page, _ = written
    start = page.index("<tbody>", page.index('id="summary-table"'))
    rows = re.findall(r"<tr>(.*?)</tr>", page[start:page.index("</tbody>", start)], flags=re.S)
    assert len(rows) == len(METRICS)
    for row in rows:  # the mild run (first column) is best on both metrics
        cells = re.findall(r'<td class="([^"]*)"', row)
        assert cells[2:] == ["num best", "num"], cells
        assert re.search(r'<span class="ci">\[[-\d.]+, [-\d.]+\]</span>', row)
    assert "↑" in rows[0] and "↓" in rows[1]  # psnr higher, mae lower


def test_user_strings_render_as_text(written):
    _, page, markdown = written
    parsed = parse_page(page)
    assert not [tag for tag, _ in parsed.tags if tag in ("script", "b")]
    assert "<script>" not in page and "<b>model" not in page
    assert escaped(EVIL_CLIP) in page and escaped(MODEL) in page
    assert any(EVIL_CLIP in text for text in parsed.text)  # what a reader sees is the name as typed
    assert "<script>" not in markdown and "<b>" not in markdown
    assert "&lt;script&gt;" in markdown and "&lt;b&gt;model&lt;/b&gt; &amp; co" in markdown


def test_markdown_twin_lists_the_summary_table(written):
    _, _, markdown = written
    header = next(line for line in markdown.splitlines() if line.startswith("| metric | better |"))
    assert header.endswith("| mild | &lt;b&gt;model&lt;/b&gt; &amp; co |")
    for metric in METRICS:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {metric}"))
        assert row.count("|") == len(header.split("|")) - 1 and "**" in row and "[" in row
    assert "## Worst 2 clips per run and metric" in markdown
    worst = markdown[markdown.index("## Worst 2 clips"):].split("\n\n")[1].splitlines()[2:]
    clips = [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in worst]
    assert len(clips) == len(set(clips)) and 2 <= len(clips) <= 8  # each clip once per run, all its metrics
    assert all("psnr" in row and "mae" in row for row in worst)
    assert "clip\\_d" in markdown  # the error row, listed under Problems


def test_problems_and_manifests_are_shown(written, runs):
    _, page, _ = written
    assert "clip_d</strong> failed: prediction has 7 frames, reference has 8" in page
    manifest = page[page.index('id="manifests"'):]
    assert manifest.count("<details>") >= 2 and "sha256" not in manifest.split("Input hashes")[0].lower()
    assert str(runs.mild) in manifest and "Input hashes: predictions" in manifest


def test_missing_clip_files_are_reported_not_fatal(runs, tmp_path):
    preds = tmp_path / "moved"
    shutil.copytree(runs.root / "strong", preds)
    moved_run = tmp_path / "run"
    shutil.copytree(runs.strong, moved_run)
    per_video = moved_run / "per_video.csv"
    per_video.write_text(per_video.read_text(encoding="utf-8").replace(str(runs.root / "strong"), str(preds)),
                         encoding="utf-8")
    (preds / "clip_a.npy").unlink()
    (preds / "clip_b.npy").write_bytes(b"not an array")
    files = report([str(moved_run)], tmp_path / "out", worst_k=len(CLIPS))
    page = files.html.read_text(encoding="utf-8")
    assert f"prediction {preds / 'clip_a.npy'}: {preds / 'clip_a.npy'}: does not exist" in page
    assert re.search(r"prediction [^<]*clip_b\.npy: ", page)
    assert page.count('class="problem"') >= 2
    assert "data:image/jpeg" in page  # the other clips still have their strips


def test_gate_badges_from_a_gate_report(runs):
    entry = SimpleNamespace(gate="G1", metric="psnr", label="PSNR", value=21.5, threshold=22.0, direction="higher",
                            status="accepted", required=True, note="within <2%> of the threshold")
    missing = SimpleNamespace(gate="G1", metric="lpips", label="lpips", value=None, threshold=0.35,
                              direction="lower", status="missing", required=False, note="")
    gate_report = SimpleNamespace(decision="fail", entries=[entry, missing])
    loaded = load_runs([str(runs.mild)])
    page = render("report.html", **build_report_context(loaded, "t", {"mild": [("my<gates>.yaml", gate_report)]},
                                                        worst_k=0))
    gates = page[page.index('id="gates"'):page.index('id="summary"')]
    assert '<span class="badge fail">fail</span>' in gates
    assert '<span class="badge accepted">accepted</span> 21.5000' in gates
    assert '<span class="badge missing">missing</span> –' in gates
    assert "my&lt;gates&gt;.yaml" in gates and "within &lt;2%&gt; of the threshold" in gates
    assert "informational" in gates


def test_gates_for_real(runs, tmp_path):
    gate_file = tmp_path / "gates.yaml"
    gate_file.write_text(
        "name: tiny\ngates:\n  - name: fidelity\n    metrics:\n"
        "      - {metric: psnr, threshold: 1000, direction: higher}\n"
        "      - {metric: mae, threshold: 0.5, direction: lower}\n", encoding="utf-8")
    files = report([str(runs.mild)], tmp_path / "out", gates=[str(gate_file)], worst_k=0)
    page, markdown = files.html.read_text(encoding="utf-8"), files.markdown.read_text(encoding="utf-8")
    assert '<span class="badge fail">fail</span>' in page and '<span class="badge pass">pass</span>' in page
    assert "mild **FAIL**" in markdown


def test_cli(runs, tmp_path):
    result = CliRunner().invoke(main, ["report", str(runs.mild), str(runs.strong), "-o", str(tmp_path / "r"),
                                       "--worst", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.html").is_file() and '"markdown"' in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "not a finished run folder" in result.output
    # Runs named alike are numbered (foresight_eval.runs.load_runs: one rule for every command).
    result = CliRunner().invoke(main, ["report", str(runs.mild), f"mild={runs.strong}", "-o", str(tmp_path / "r3"),
                                       "--worst", "0"])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "r3" / "report.md").read_text()
    assert "1:mild" in markdown and "2:mild" in markdown


def test_report_from_another_folder_finds_frames_through_the_manifest(tmp_path, monkeypatch):
    """Runs scored with relative paths; the report is written from elsewhere: frames are found through the
    run's recorded cwd. Where they cannot be found, the command says so, and --strict exits 1."""
    from foresight_eval import ScoreOptions, score
    from fixtures.synthetic import make_scene, render_clip, to_uint8

    project = tmp_path / "project"
    for side, shift in (("refs", 0), ("preds", 3)):
        (project / side).mkdir(parents=True)
        for index in range(2):
            frames, _ = render_clip(make_scene(index, height=32, width=48, n_objects=1), 5)
            np.save(project / side / f"c{index}.npy", to_uint8(np.roll(frames, shift, axis=2)), allow_pickle=False)
    monkeypatch.chdir(project)
    run = score(Path("preds"), Path("refs"), ["mae"], options=ScoreOptions(context=1), device="cpu").write(
        project / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = report([str(run)], elsewhere / "out", worst_k=2)
    assert found.strip_problems == () and "data:image/jpeg" in found.html.read_text(encoding="utf-8")
    (project / "preds" / "c0.npy").unlink()
    result = CliRunner().invoke(main, ["report", str(run), "-o", str(elsewhere / "out2"), "--strict"])
    assert result.exit_code == 1 and "frame strip incomplete" in result.stderr and "c0.npy" in result.stderr
    assert CliRunner().invoke(main, ["report", str(run), "-o", str(elsewhere / "out3")]).exit_code == 0
