"""The command line, through click's test runner: score, metrics, weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from tests.clipmaker import gradient_clip

FIXTURE_ARGS = ["--context", "4", "--metrics", "psnr,ssim,mae"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv("FORESIGHT_WEIGHTS", raising=False)


def test_score_prints_the_table_and_writes_the_run_folder(runner, fixtures_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(main, ["score", str(fixtures_dir / "preds" / "blur_mild"), str(fixtures_dir / "refs"),
                                  *FIXTURE_ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("psnr", "ssim", "mae", "95% CI", "clip pairs scored"):
        assert text in result.output
    assert {p.name for p in out.iterdir()} == {"summary.json", "per_video.csv", "per_frame.csv", "config.yaml", "partial"}


def test_json_output_is_machine_readable(runner, fixtures_dir):
    result = runner.invoke(main, ["score", str(fixtures_dir / "preds" / "noise_mild"), str(fixtures_dir / "refs"),
                                  *FIXTURE_ARGS, "--json"])
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert set(summary["metrics"]) == {"psnr", "ssim", "mae"}
    assert summary["metrics"]["ssim"]["ci_low"] <= summary["metrics"]["ssim"]["mean"] <= summary["metrics"]["ssim"]["ci_high"]


def test_default_run_skips_lpips_without_weights_and_says_why(runner, tmp_path, no_weights):
    for side in ("preds", "refs"):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "a.npy", gradient_clip(n_frames=4, height=24, width=24))
    result = runner.invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    reason = summary["skipped_metrics"]["lpips"]
    assert "alexnet-owt-7be5be79.pth" in reason and "weights fetch lpips-alex" in reason
    assert "psnr" in summary["metrics"]


def test_asking_for_lpips_without_weights_is_a_usage_error(runner, fixtures_dir, no_weights):
    result = runner.invoke(main, ["score", str(fixtures_dir / "preds" / "blur_mild"), str(fixtures_dir / "refs"),
                                  "--metrics", "lpips"])
    assert result.exit_code == 2
    assert "alexnet-owt-7be5be79.pth" in result.output and "torch hub cache" in result.output


def test_lpips_from_weights_dir(runner, fixtures_dir, no_weights, tmp_path):
    from tests.conftest import write_random_torchvision_checkpoint

    checkpoint = write_random_torchvision_checkpoint(tmp_path / "home", "alex")
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    checkpoint.rename(weights_dir / checkpoint.name)
    result = runner.invoke(main, ["score", str(fixtures_dir / "preds" / "blur_mild"), str(fixtures_dir / "refs"),
                                  "--context", "16", "--metrics", "lpips", "--weights-dir", str(weights_dir), "--json"])
    assert result.exit_code == 0, result.output
    lpips_result = json.loads(result.stdout)["metrics"]["lpips"]
    assert lpips_result["mean"] > 0 and lpips_result["params"]["net"] == "alex"
    assert len(lpips_result["weights"]["sha256"]) == 64


def test_exit_code_1_when_a_pair_fails(runner, tmp_path):
    for side in ("preds", "refs"):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "good.npy", gradient_clip())
    (tmp_path / "preds" / "bad.mp4").write_text("not a video")
    np.save(tmp_path / "refs" / "bad.npy", gradient_clip())
    result = runner.invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), "-m", "mse"])
    assert result.exit_code == 1
    assert "bad" in result.output and "not a readable video" in result.output


@pytest.mark.parametrize("args, message", [
    (["-m", "nope"], "unknown metric"),
    (["-p", "ssim.mode=fast", "-m", "ssim"], "must be one of"),
    (["-p", "ssim=3"], "METRIC.KEY=VALUE"),
    (["--strict"], "unmatched"),
    (["--context", "-1"], "--context"),
    (["--frames", "max"], "Invalid value"),
])
def test_usage_errors_exit_2(runner, tmp_path, args, message):
    for side in ("preds", "refs"):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "a.npy", gradient_clip())
    np.save(tmp_path / "refs" / "extra.npy", gradient_clip())
    result = runner.invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_metrics_lists_availability(runner, no_weights):
    result = runner.invoke(main, ["metrics", "--json"])
    assert result.exit_code == 0
    catalog = json.loads(result.stdout)["metrics"]
    assert catalog["psnr"]["available"] and catalog["psnr"]["direction"] == "higher"
    assert not catalog["lpips"]["available"] and "weights fetch" in catalog["lpips"]["reason"]
    assert "weights" in catalog["lpips"]["needs"]
    assert runner.invoke(main, ["metrics"]).exit_code == 0


def test_weights_list_shows_places_searched(runner, no_weights, tmp_path):
    result = runner.invoke(main, ["weights", "list", "--json", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["lpips-alex"]["found_at"] is None
    assert any(str(tmp_path) in place for place in rows["lpips-alex"]["searched"])


def test_weights_fetch_of_unknown_name_is_a_usage_error(runner):
    result = runner.invoke(main, ["weights", "fetch", "nope"])
    assert result.exit_code == 2 and "unknown weights" in result.output


def test_help_explains_every_option(runner):
    result = runner.invoke(main, ["score", "--help"])
    assert result.exit_code == 0
    for option in ("--context", "--frame-mismatch", "--frames", "--resize", "--strict", "--metrics", "--out", "--json", "--weights-dir"):
        assert option in result.output
