"""The same code on the GPU: a CUDA run equals the CPU run (runs only where CUDA is available; CI has
none, the device machine runs it)."""

from __future__ import annotations

import pytest
import torch

from foresight_eval import ScoreOptions, score
from tests.parity import assert_parity

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_scores_equal_cpu_scores(fixtures_dir, lpips_weights):
    runs = {
        device: score(fixtures_dir / "preds" / "noise_strong", fixtures_dir / "refs", ["psnr", "ssim", "mae", "lpips"],
                      options=ScoreOptions(context=4), device=device)
        for device in ("cpu", "cuda")
    }
    for metric in ("psnr", "ssim", "mae", "lpips"):
        cpu = [pair.values[metric] for pair in runs["cpu"].pairs]
        cuda = [pair.values[metric] for pair in runs["cuda"].pairs]
        assert_parity(f"{metric} cuda vs cpu", cuda, cpu, atol=1e-4)
