"""`physics-iq --config`: the config.yaml written into --out replays the run (same score, same runs)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from foresight_eval.config import CONFIG_FILE, PhysicsIQConfig


@pytest.mark.slow
def test_physics_iq_config_replays_the_run(fixtures_dir, tmp_path):
    for folder, source in (("preds", "preds/blur_mild"), ("refs", "refs"), ("take2", "preds/noise_mild")):
        (tmp_path / folder).mkdir()
        for clip in ("clip00.mp4", "clip01.mp4"):
            shutil.copy(fixtures_dir / source / clip, tmp_path / folder / clip)
    runner = CliRunner()
    first = runner.invoke(main, ["physics-iq", str(tmp_path / "preds"), str(tmp_path / "refs"), "--ref-take2",
                                 str(tmp_path / "take2"), "--context", "2", "--fps", "8", "--device", "cpu",
                                 "--out", str(tmp_path / "run"), "--json"])
    assert first.exit_code == 0, first.output
    config = PhysicsIQConfig.from_yaml(tmp_path / "run" / CONFIG_FILE)
    assert (config.ref_take2, config.context, config.fps) == (tmp_path / "take2", 2, 8.0)
    replay = runner.invoke(main, ["physics-iq", "--config", str(tmp_path / "run" / CONFIG_FILE),
                                  "--out", str(tmp_path / "replay"), "--json"])
    assert replay.exit_code == 0, replay.output
    assert json.loads(replay.stdout) == json.loads(first.stdout)
    for run in ("model", "variance"):
        means = [{name: m["mean"] for name, m in json.loads((tmp_path / folder / run / "summary.json").read_text())
                  ["metrics"].items()} for folder in ("run", "replay")]
        assert means[0] == means[1] and len(means[0]) == 4
    missing = runner.invoke(main, ["physics-iq", str(tmp_path / "preds"), str(tmp_path / "refs")])
    assert missing.exit_code == 2 and "give PREDS, REFS and --ref-take2" in missing.output
