"""`score --latents`: the latents stored beside the clips join each clip's row and the run's table."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from foresight_eval.cli import main
from foresight_eval.metrics.latent import linear_cka
from tests.clipmaker import gradient_clip


def make_tree(tmp_path, with_sidecars=("a", "b")):
    generator = torch.Generator().manual_seed(0)
    truth = {}
    for side in ("preds", "refs"):
        (tmp_path / side).mkdir()
    for name in ("a", "b"):
        frames = gradient_clip(seed=ord(name))
        np.save(tmp_path / "preds" / f"{name}.npy", frames)
        np.save(tmp_path / "refs" / f"{name}.npy", frames)
        ref_latents = torch.randn(12, 6, generator=generator, dtype=torch.float64)
        pred_latents = ref_latents + 0.3 * torch.randn(12, 6, generator=generator, dtype=torch.float64)
        truth[name] = float(linear_cka(pred_latents, ref_latents, debiased=True))  # `cka` is the debiased estimate
        if name in with_sidecars:
            save_file({"latents": pred_latents}, tmp_path / "preds" / f"{name}.latents.safetensors")
            save_file({"latents": ref_latents}, tmp_path / "refs" / f"{name}.latents.safetensors")
    return truth


def test_latent_metrics_join_the_clip_rows(tmp_path):
    truth = make_tree(tmp_path)
    result = CliRunner().invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), "--latents",
                                       "-m", "mae,cka", "--json", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["metrics"]) == {"mae", "cka"}
    assert abs(summary["metrics"]["cka"]["mean"] - np.mean(list(truth.values()))) < 1e-9
    assert summary["videos"]["ok"] == 2 and not summary["unmatched"]["predictions"]  # sidecars are not clips
    per_video = (tmp_path / "run" / "per_video.csv").read_text()
    assert per_video.splitlines()[0].endswith("mae,cka")


def test_a_clip_without_latents_is_an_error_row(tmp_path):
    make_tree(tmp_path, with_sidecars=("a",))
    result = CliRunner().invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), "--latents",
                                       "-m", "mae,cka", "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert "no b.latents.* file" in summary["videos"]["errors"]["b"]
    assert summary["metrics"]["cka"]["n"] == 1


def test_latent_metrics_need_the_latents_flag(tmp_path):
    make_tree(tmp_path)
    result = CliRunner().invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), "-m", "cka"])
    assert result.exit_code == 2 and "need --latents" in result.output
