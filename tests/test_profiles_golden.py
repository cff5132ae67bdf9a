"""Compatibility profiles against the numbers each upstream tool's own code produced on the golden clips
(``../shared/golden``, see its README): OpenSTL's ``metric()``, common_metrics_on_video_quality's
``calculate_ssim`` / ``calculate_psnr`` and VBench's ``temporal_flickering``, per clip and per frame.

The upstream code computes in float32; ours accumulates in float64, so the stated tolerance is a relative
one, about 1e-6 (the golden README's figure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from foresight_eval.engine import score
from foresight_eval.stats import BootstrapConfig
from tests.parity import assert_parity

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
CLIPS = ("ball_lag", "late_motion", "static", "two_objects")
RTOL = 1e-6

pytestmark = [pytest.mark.skipif(not (GOLDEN / "expected.json").is_file(),
                                 reason=f"golden reference outputs not found at {GOLDEN}"),
              pytest.mark.slow]  # scores the 4 golden clip pairs (390 frames) under each profile


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((GOLDEN / "expected.json").read_text(encoding="utf-8"))


# The golden set has VBench's temporal flickering only (subject consistency needs DINO weights).
GOLDEN_METRICS = {"vbench": ["flicker_score"]}


def _run(profile: str, preds: str = "preds"):
    return score(GOLDEN / "clips" / preds, GOLDEN / "clips" / "refs", GOLDEN_METRICS.get(profile), profile=profile,
                 device="cpu", bootstrap=BootstrapConfig(n_resamples=10))


@pytest.fixture(scope="module")
def runs() -> dict:
    cache: dict = {}

    def get(profile: str, preds: str = "preds"):
        if (profile, preds) not in cache:
            cache[profile, preds] = _run(profile, preds)
        return cache[profile, preds]

    return get


def _clip(run, clip: str):
    (pair,) = [pair for pair in run.pairs if pair.video == clip]
    assert pair.ok, pair.error
    return pair


def _per_frame(pair, metric: str) -> np.ndarray:
    return np.array([value for _, _, value in pair.per_frame[metric]])


def assert_relative(name: str, ours, reference, rtol: float = RTOL) -> None:
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert_parity(f"{name} (relative error)", ours / reference, np.ones_like(reference), atol=rtol)


@pytest.mark.parametrize("metric", ["mse", "mae", "ssim", "psnr"])
def test_openstl_profile_matches_openstl_metric(runs, expected, metric):
    run = runs("openstl")
    for clip in CLIPS:
        pair, golden = _clip(run, clip), expected["openstl"][clip]
        assert_relative(f"openstl {metric} per clip vs OpenSTL metric()", pair.values[metric], golden[metric])
        assert_relative(f"openstl {metric} per frame vs OpenSTL metric()", _per_frame(pair, metric),
                        golden["per_frame"][metric])
    assert run.summary_dict()["profile"]["name"] == "openstl"


@pytest.mark.parametrize("metric", ["ssim", "psnr"])
def test_common_metrics_profile_matches_calculate_ssim_and_psnr(runs, expected, metric):
    run = runs("common-metrics")
    for clip in CLIPS:
        pair, golden = _clip(run, clip), expected["common-metrics"][clip]
        per_frame = _per_frame(pair, metric)
        assert_relative(f"common-metrics {metric} per clip vs calculate_{metric}", pair.values[metric], golden[metric])
        assert_relative(f"common-metrics {metric} per frame vs calculate_{metric}", per_frame,
                        golden["per_frame"][metric])
        # its value_std is NumPy's population std over the frames; we keep the per-frame values it is made of
        assert_parity(f"common-metrics {metric}_std (std of our per-frame values) vs calculate_{metric}",
                      per_frame.std(), golden[f"{metric}_std"], atol=1e-6)


@pytest.mark.parametrize("preds, key", [("preds", None), ("refs", "reference_clip")])
def test_vbench_profile_matches_temporal_flickering(runs, expected, preds, key):
    run = runs("vbench", preds)
    for clip in CLIPS:
        pair = _clip(run, clip)
        golden = expected["vbench-flicker"][clip]
        golden = golden[key] if key else golden
        assert_relative("vbench temporal_flickering per clip", pair.values["flicker_score"],
                        golden["temporal_flickering"])
        # per frame pair: VBench's mae_seq on uint8 frames = 255 (1 - flicker_score); the first frame has no pair
        assert_parity("vbench mae_seq per frame pair (grey levels)", 255 * (1 - _per_frame(pair, "flicker_score")),
                      golden["per_frame"]["frame_pair_mae"], atol=1e-5)
    mean_key = "_mean_over_refs" if key else "_mean_over_preds"
    assert_relative("vbench avg_score (mean over clips)", run.metrics["flicker_score"].mean,
                    expected["vbench-flicker"][mean_key])
