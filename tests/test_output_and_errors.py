"""What people see: tables readable in CI logs and in every --format, and usage errors instead of
tracebacks."""

from __future__ import annotations

import csv
import io
import json
import urllib.error

import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from foresight_eval.formatting import decimals_for, estimate
from foresight_eval.io.annotations import load_spatial_resources
from foresight_eval.io.files import sha256_file
from tests.fake_runs import write_run

LONG = "feature_consistency_delta_with_a_long_name"


def invoke(*args):
    # CliRunner's stdout is not a terminal: exactly what a CI log is.
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture
def two_runs(tmp_path):
    values = [0.2 + 0.01 * i for i in range(8)]
    a = write_run(tmp_path / "model_a_with_a_long_run_name", {LONG: values, "psnr": [30.0 + i for i in range(8)]})
    b = write_run(tmp_path / "model_b_with_a_long_run_name", {LONG: [v + 0.013 for v in values],
                                                                "psnr": [30.5 + i for i in range(8)]})
    return a, b


def test_tables_off_a_terminal_are_never_cut(two_runs):
    result = invoke("compare", *two_runs)
    assert result.exit_code == 0
    assert "…" not in result.stdout and LONG in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.lstrip().startswith(LONG))
    assert "0.0078" in row and "neither" not in row  # p and the winner, in full on one line
    assert "Holm-corrected over 2 tests" in result.stdout


def test_formats(two_runs):
    table = csv.DictReader(io.StringIO(invoke("compare", *two_runs, "--format", "csv").stdout))
    rows = list(table)
    assert [row["metric"] for row in rows] == [LONG, "psnr"] and rows[0]["p min"] == "0.0078"
    markdown = invoke("compare", *two_runs, "--format", "markdown").stdout
    assert f"| {LONG} |" in markdown and "|:---|---:|" in markdown
    payload = json.loads(invoke("compare", *two_runs, "--format", "json").stdout)
    assert payload == json.loads(invoke("compare", *two_runs, "--json").stdout)
    assert payload["pairs"][0]["p_value"] == pytest.approx(2 / 2**8) and payload["correction"] == "holm"
    assert invoke("compare", *two_runs, "--json", "--format", "csv").exit_code == 2
    check = invoke("check", two_runs[1], "--baseline", two_runs[0], "--format", "markdown")
    assert check.exit_code == 0 and "| detectable |" in check.stdout


def test_decimals_follow_the_ci_width():
    assert estimate(32.71234, 31.7, 33.6) == ("32.7", "[31.7, 33.6]")
    assert estimate(0.975412, 0.9723, 0.9777) == ("0.9754", "[0.9723, 0.9777]")
    assert estimate(0.0000123, 0.0000101, 0.0000149) == ("0.0000123", "[0.0000101, 0.0000149]")  # never 1.2e-05
    assert estimate(float("inf"), None, None)[0] == "inf" and decimals_for(None, None) == 4


def test_usage_errors_not_tracebacks(two_runs, tmp_path, monkeypatch, fixtures_dir):
    device = invoke("score", fixtures_dir / "preds" / "blur_mild", fixtures_dir / "refs", "-m", "psnr",
                    "--device", "gpu")
    assert device.exit_code == 2 and "--device gpu: not a device" in device.stderr
    resamples = invoke("score", fixtures_dir / "preds" / "blur_mild", fixtures_dir / "refs", "--bootstrap-resamples", 0)
    assert resamples.exit_code == 2 and "--bootstrap-resamples" in resamples.stderr
    typo = invoke("check", two_runs[1], "--baseline", two_runs[0], "--max-regression", "psnrr=0.5")
    assert typo.exit_code == 2 and "did you mean 'psnr'" in typo.stderr
    gates = tmp_path / "typo.yaml"
    gates.write_text("metrics:\n  - {metric: lpisp, threshold: 0.3, direction: lower}\n")
    gate_typo = invoke("check", two_runs[0], "--gates", gates)
    assert gate_typo.exit_code == 2 and "did you mean 'lpips'" in gate_typo.stderr and "typo.yaml:2" in gate_typo.stderr
    gates.write_text("metrics:\n  - {metric: semantic_accuracy, threshold: 0.6, direction: higher}\n")
    assert invoke("check", two_runs[0], "--gates", gates).exit_code == 1  # not a typo: missing, fails

    from foresight_eval import weights

    def offline(self, weights_dir=None):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights.TorchvisionCheckpoint, "fetch", offline)
    fetch = invoke("weights", "fetch", "lpips-alex")
    assert fetch.exit_code == 2 and "looks offline" in fetch.stderr and "torch hub cache" in fetch.stderr


def test_manifest_hashes_annotation_inputs(fixtures_dir):
    refs = fixtures_dir / "coco" / "refs.json"
    detections = fixtures_dir / "coco" / "detections" / "blur_mild.json"
    resources = load_spatial_resources(refs, detections)
    assert resources["input_files"] == {
        "annotations": {"root": str(refs), "sha256": {"refs.json": sha256_file(refs)}},
        "detections": {"root": str(detections), "sha256": {"blur_mild.json": sha256_file(detections)}},
    }


@pytest.mark.parametrize("seeded", [False, True])
def test_per_frame_csv_written_in_blocks_equals_row_by_row(seeded):
    """per_frame.csv is written a (clip, metric) block at a time: byte for byte the row-by-row table, hostile
    names (a carriage return, a quote, a comma, a leading '=') quoted as there, empty and error rows left out."""
    from foresight_eval.results import PairResult, _cell, _csv, _per_frame_csv

    names = ["plain.mp4", "cr\rname.mp4", 'quote"d.mp4', "comma,name.mp4", "=formula.mp4"]
    pairs = [PairResult(video, "p", "r", seed=f"seed{i % 2}" if seeded else "",
                        per_frame={"psnr": [(h, h + 4, 30.0 + h / 7) for h in range(3)], "m\rx": [(0, 4, -0.1)],
                                   "empty": []})
             for i, video in enumerate(names)]
    pairs.append(PairResult("failed.mp4", "p", "r", status="error", error="bad", seed="seed0" if seeded else ""))
    seed = ["seed"] if seeded else []
    row_by_row = _csv(["video", *seed, "horizon", "frame", "metric", "value"],
                      ([p.video, *([p.seed] if seeded else []), h, f, name, _cell(v)]
                       for p in pairs for name, rows in p.per_frame.items() for h, f, v in rows))
    assert _per_frame_csv(pairs, seeded=seeded) == row_by_row
    assert len(list(csv.reader(io.StringIO(row_by_row)))) == 1 + 4 * len(names)
