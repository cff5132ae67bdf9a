"""`make seed-replay` (examples/seed_replay.py) end to end on the fixtures with the tiny preset: both encoders
generated, scored, checked against Gate 1 and Gate 2, reported and ranked, from one command."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "seed_replay.py"


def load_script():
    spec = importlib.util.spec_from_file_location("seed_replay", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seed_replay_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "replay"
    # Four clips: debiased CKA needs >= 4 items, RSA >= 3; eight frames keep it quick.
    summary = load_script().main(["--preset", "tiny", "--clips", "4", "--frames", "8", "--device", "cpu",
                                  "--out", str(out)])
    assert summary["trained"] is False and "fusion" in summary["random_weights"]
    assert summary["latency_overhead"] > 0
    # Untrained models: every verdict fails (or a required metric is missing), and the run says so.
    assert summary["verdicts"] == {encoder: {"gates": "fail", "q1": "fail"} for encoder in ("vlm", "hybrid")}
    for encoder in ("vlm", "hybrid"):
        frames = json.loads((out / encoder / "frames" / "summary.json").read_text())
        assert frames["extra"]["encoder"] == encoder and {"psnr", "ssim", "tc", "edge_f1"} <= set(frames["metrics"])
        q1 = json.loads((out / encoder / "q1" / "summary.json").read_text())
        assert set(q1["metrics"]) == {"cka", "rsa_spearman"}
        verdict = json.loads((out / encoder / "check-gates.json").read_text())
        assert verdict["decision"] == "fail"
    kept = json.loads((out / "hybrid" / "dino-vs-fused" / "summary.json").read_text())
    assert set(kept["metrics"]) == {"cka", "rsa_spearman"} and not (out / "vlm" / "dino-vs-fused").exists()
    hybrid = json.loads((out / "hybrid" / "frames" / "summary.json").read_text())
    assert hybrid["extra"]["latency_overhead"] == summary["latency_overhead"]
    report = (out / "report" / "report.md").read_text()
    assert "UNTRAINED models" in report and "gate1-reconstruction" in report and "gate2-bridging" in report
    assert "| vlm |" in report and "| hybrid |" in report
    leaderboard = (out / "leaderboard" / "leaderboard.md").read_text()
    assert "vlm" in leaderboard and "hybrid" in leaderboard
    assert json.loads((out / "seed_replay.json").read_text()) == summary
    assert "$ foresight-eval generate" in capsys.readouterr().out  # each step is printed as a command line
