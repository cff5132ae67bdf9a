"""LPIPS with the backbone under bfloat16 autocast (``-p lpips.precision=bf16``): within 1e-4 of float32 on
camera-like frames, and the precision is recorded with the metric's definition."""

from __future__ import annotations

import torch

from fixtures import synthetic
from foresight_eval import RunContext
from foresight_eval.metrics.registry import prepare_metrics
from foresight_eval.metrics.perceptual import LPIPS_BACKBONES, load_lpips, lpips_distance
from tests.parity import assert_parity


def test_bf16_autocast_stays_within_1e_4_of_float32(lpips_weights):
    truth = synthetic.camera_like_clip(5, 3, height=96, width=160)
    pred = synthetic.add_noise(synthetic.blur(truth, 1.5), 0.05, seed=5)
    ref_t, pred_t = (torch.from_numpy(x).permute(0, 3, 1, 2).contiguous() for x in (truth, pred))
    model = load_lpips("alex", LPIPS_BACKBONES["alex"].locate())
    with torch.inference_mode():
        full = lpips_distance(model, pred_t, ref_t)
        bf16 = lpips_distance(model, pred_t, ref_t, precision="bf16")
    assert (full > 0).all() and bf16.dtype == torch.float32
    assert_parity("lpips precision=bf16 vs float32 (random AlexNet weights)", bf16, full, atol=1e-4)


def test_precision_is_recorded(lpips_weights):
    (metric,), _ = prepare_metrics(["lpips"], {"lpips": {"precision": "bf16"}}, RunContext())
    assert metric.describe()["params"]["precision"] == "bf16"
