"""The graded fixtures: a mildly degraded prediction set beats its strongly degraded twin on every
pixel and perceptual metric; and the fixture generator is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import synthetic
from foresight_eval import ScoreOptions, score

METRICS = ["psnr", "ssim", "mse", "mae", "lpips"]


@pytest.fixture(scope="module")
def fixture_means(fixtures_dir, torch_home):
    import os

    os.environ["TORCH_HOME"] = str(torch_home)  # seeded random LPIPS backbone
    try:
        means = {}
        for name in ("blur_mild", "blur_strong", "noise_mild", "noise_strong", "shift_mild", "shift_strong"):
            run = score(fixtures_dir / "preds" / name, fixtures_dir / "refs", METRICS, options=ScoreOptions(context=4))
            assert not run.failed
            means[name] = {metric: summary.mean for metric, summary in run.metrics.items()}
        return means
    finally:
        del os.environ["TORCH_HOME"]


@pytest.mark.parametrize("kind", ["blur", "noise", "shift"])
@pytest.mark.parametrize("metric", METRICS)
def test_mild_beats_strong(fixture_means, kind, metric):
    mild, strong = fixture_means[f"{kind}_mild"][metric], fixture_means[f"{kind}_strong"][metric]
    higher_is_better = metric in ("psnr", "ssim")
    assert (mild > strong) if higher_is_better else (mild < strong), f"{kind}: {metric} mild={mild} strong={strong}"


def test_synthetic_clips_are_deterministic():
    first, masks = synthetic.render_clip(synthetic.make_scene(seed=3), 5)
    second, _ = synthetic.render_clip(synthetic.make_scene(seed=3), 5)
    np.testing.assert_array_equal(first, second)
    assert masks.any(axis=(2, 3)).all(), "every object is visible in every frame"


def test_boxes_come_from_masks():
    masks = np.zeros((1, 2, 10, 10), dtype=bool)
    masks[0, 0, 2:5, 3:7] = True
    assert synthetic.boxes_from_masks(masks) == [[[3.0, 2.0, 4.0, 3.0], None]]
