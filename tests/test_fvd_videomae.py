"""fvd_videomae with a seeded random VideoMAE written by save_pretrained into the standard folder
(--weights-dir/videomae-base/): the features the run uses are the model's on the resized, normalised
windows; a window length other than the model's is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foresight_eval import score
from foresight_eval.errors import UsageError
from tests.clipmaker import gradient_clip


@pytest.fixture
def videomae_dir(tmp_path):
    return write_tiny_videomae(tmp_path / "weights" / "videomae-base")


def write_tiny_videomae(folder):
    """A seeded random 2-layer VideoMAE (32x32, 4 frames) and its processor, as save_pretrained writes them."""
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    torch.manual_seed(0)
    config = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=16,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    VideoMAEModel(config).save_pretrained(folder, safe_serialization=True)
    VideoMAEImageProcessor().save_pretrained(folder)
    return folder


def test_fvd_videomae_features_and_value(videomae_dir, tmp_path):
    from transformers import VideoMAEModel

    for side, offset in (("preds", 4), ("refs", 0)):
        (tmp_path / side).mkdir()
        for index in range(3):
            np.save(tmp_path / side / f"c{index}.npy", gradient_clip(5, 24, 40, seed=index + offset))
    run = score(tmp_path / "preds", tmp_path / "refs", ["fvd_videomae"], device="cpu",
                weights_dir=videomae_dir.parent, params={"fvd_videomae": {"frames": 4, "resamples": 10}},
                resources={"cache_dir": tmp_path / "cache"})
    assert not run.failed
    figures = run.metrics["fvd_videomae"].set_values
    assert figures["value"] > 0 and figures["protocol"]["resolution"] == 32
    frames = torch.from_numpy(np.load(tmp_path / "refs" / "c0.npy")[:4]).permute(0, 3, 1, 2).float() / 255
    frames = F.interpolate(frames, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    processor = json.loads((videomae_dir / "preprocessor_config.json").read_text())
    mean, std = (torch.tensor(processor[key]).view(1, 3, 1, 1) for key in ("image_mean", "image_std"))
    model = VideoMAEModel.from_pretrained(videomae_dir).eval()
    with torch.no_grad():
        expected = model(pixel_values=((frames - mean) / std)[None]).last_hidden_state.mean(dim=1)[0]
    torch.testing.assert_close(torch.tensor(run.pairs[0].set_parts["fvd_videomae"]["ref"][0]), expected,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="4-frame model"):
        score(tmp_path / "preds", tmp_path / "refs", ["fvd_videomae"], device="cpu", weights_dir=videomae_dir.parent)


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_single_process_value(videomae_dir, tmp_path):
    """Features are gathered from the ranks before the Fréchet distance: same value, CI and protocol."""
    import os
    import subprocess
    import sys

    for side, offset in (("preds", 4), ("refs", 0)):
        (tmp_path / side).mkdir()
        for index in range(4):
            np.save(tmp_path / side / f"c{index}.npy", gradient_clip(5, 24, 40, seed=index + offset))
    args = ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), "-m", "fvd_videomae", "-p", "fvd_videomae.frames=4",
            "-p", "fvd_videomae.resamples=10", "--device", "cpu", "--weights-dir", str(videomae_dir.parent)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "foresight_eval", *args, "--cache-dir", str(tmp_path / "c1"),
                    "--out", str(tmp_path / "single")], check=True, capture_output=True, env=env, timeout=300)
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "foresight_eval", *args, "--cache-dir", str(tmp_path / "c2"), "--out",
                            str(tmp_path / "dist")], capture_output=True, text=True, env=env, timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-4000:]
    single, dist = (json.loads((tmp_path / name / "summary.json").read_text())["metrics"]["fvd_videomae"]
                    for name in ("single", "dist"))
    for summary in (single, dist):
        summary["set"].pop("cache")  # each rank counts its own cache hits
    assert single["mean"] > 0 and single == dist
