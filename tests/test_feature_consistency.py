"""DINOv2 feature consistency: a tiny, seeded, random-initialised DINOv2 written in the standard
`save_pretrained` layout (a --weights-dir folder and a Hugging Face hub cache) and loaded through the
real loading path; parity with per-frame Hugging Face inference and VBench's subject-consistency loop.
The numbers here come from random weights: they test the plumbing, not DINOv2's judgement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from foresight_eval import RunContext, create, score
from foresight_eval.cli import main
from foresight_eval.metrics.registry import prepare_metrics
from foresight_eval.errors import MetricUnavailable
from foresight_eval.io.files import sha256_file
from foresight_eval.metrics.base import FrameBatch
from foresight_eval.weights import weights_status
from tests.parity import assert_parity

MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def write_tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer DINOv2 with 32-dim features and its image processor, as `save_pretrained` writes them."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=8,
                          image_size=32)
    Dinov2Model(config).save_pretrained(folder)
    # DINOv2's own processor settings (bicubic resize of the short side, centre crop, ImageNet statistics),
    # scaled down from 256 / 224 to 36 / 32.
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    write_tiny_dinov2(root / "dinov2-small")
    return root


@pytest.fixture
def hf_cache(weights_dir, tmp_path, monkeypatch) -> Path:
    """A temporary HF_HOME whose hub cache holds the model as huggingface_hub lays it out: content-addressed
    blobs, a snapshot folder of links to them, and refs/main naming the snapshot."""
    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf_home" / "hub" / "models--facebook--dinov2-small"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in MODEL_FILES:
        blob = repo / "blobs" / sha256_file(weights_dir / "dinov2-small" / name)
        shutil.copy(weights_dir / "dinov2-small" / name, blob)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))  # read at import time
    monkeypatch.delenv("FORESIGHT_WEIGHTS", raising=False)
    return snapshot


@pytest.fixture
def no_weights(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.delenv("FORESIGHT_WEIGHTS", raising=False)
    (tmp_path / "empty_weights").mkdir()
    return tmp_path / "empty_weights"


def video(n_frames: int = 7, seed: int = 0) -> torch.Tensor:
    """A bright square drifting over a smooth gradient, (T, 3, 40, 48) in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 48), indexing="ij")
    frames = torch.stack([torch.stack([xx, yy, 0.5 * (xx + yy)]) * 0.6 for _ in range(n_frames)])
    for t in range(n_frames):
        frames[t, :, 10 : 22, 4 + 3 * t : 16 + 3 * t] = torch.tensor([0.9, 0.2, 0.3]).view(3, 1, 1)
    noise = torch.rand(frames.shape, generator=torch.Generator().manual_seed(seed))
    return (frames + 0.02 * noise).clamp(0, 1)


def run(metric, pred: torch.Tensor, ref: torch.Tensor, batch_size: int):
    metric.reset()
    values = []
    for start in range(0, len(pred), batch_size):
        index = torch.arange(start, min(start + batch_size, len(pred)))
        values.append(metric.update(FrameBatch("clip", pred[index], ref[index], index + 1, index)))
    return metric.compute(), torch.cat(values).double()


def vbench_subject_consistency(folder: Path, frames: torch.Tensor) -> tuple[float, list[float]]:
    """The reference: Hugging Face inference one frame at a time, then VBench's subject-consistency loop."""
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        features = [model(**processor(images=frame.permute(1, 2, 0).numpy(), do_rescale=False,
                                      return_tensors="pt")).pooler_output for frame in frames]
    return vbench_consistency_loop(features)


def vbench_consistency_loop(features: list[torch.Tensor]) -> tuple[float, list[float]]:
    """VBench's subject-consistency loop over one clip's per-frame features, as its code writes it: each
    frame after the first scores the mean of max(0, cosine) to the previous and to the first frame."""
    per_frame, total = [], 0.0
    for i, feature in enumerate(features):
        feature = F.normalize(feature, dim=-1, p=2)
        if i == 0:
            first = feature
        else:
            sim_pre = max(0.0, F.cosine_similarity(former, feature).item())
            sim_fir = max(0.0, F.cosine_similarity(first, feature).item())
            per_frame.append((sim_pre + sim_fir) / 2)
            total += per_frame[-1]
        former = feature
    return total / (len(features) - 1), per_frame


@pytest.mark.parametrize("batch_size", [3, 7])
def test_parity_with_per_frame_inference_and_vbench_loop(weights_dir, batch_size):
    frames = video()
    metric = create("feature_consistency")
    metric.setup(RunContext(weights_dir=weights_dir))
    with torch.inference_mode():
        clip, per_frame = run(metric, frames, frames, batch_size)
    reference, reference_frames = vbench_subject_consistency(weights_dir / "dinov2-small", frames)
    assert torch.isnan(per_frame[0])
    assert_parity("feature_consistency vs per-frame HF DINOv2 + VBench subject consistency", per_frame[1:],
                  reference_frames, atol=1e-5)
    assert_parity("feature_consistency clip value vs VBench subject consistency", clip, reference, atol=1e-5)


def test_static_video_scores_one_and_pairs_parameter(weights_dir):
    frames = video()
    static = frames[:1].expand(len(frames), -1, -1, -1).contiguous()
    context = RunContext(weights_dir=weights_dir)
    values = {}
    with torch.inference_mode():
        for pairs in ("both", "consecutive", "first"):
            metric = create("feature_consistency", pairs=pairs)
            metric.setup(context)
            values[pairs] = run(metric, frames, frames, 4)[0]
            assert run(metric, static, static, 4)[0] == pytest.approx(1.0, abs=1e-5)
        delta = create("feature_consistency_delta")
        delta.setup(context)
        assert run(delta, frames, frames, 4)[0] == 0.0
        assert run(delta, static, frames, 4)[0] == pytest.approx(1.0 - values["both"], abs=1e-5)
    # VBench's score is the mean of its two halves (random weights: no claim about which half is larger).
    assert values["both"] == pytest.approx((values["consecutive"] + values["first"]) / 2, abs=1e-6)
    assert values["first"] != values["consecutive"] and max(values.values()) < 1.0


def test_loads_from_the_hugging_face_cache(hf_cache):
    metric = create("feature_consistency")
    metric.setup(RunContext(weights_dir=None))
    assert metric.model_folder == hf_cache
    assert metric.describe()["weights"]["model"] == "facebook/dinov2-small"
    status = {row.name: row for row in weights_status(None)}
    assert status["dinov2-small"].found_at == hf_cache / "model.safetensors"
    assert status["dinov2-base"].found_at is None


def test_missing_weights_explain_themselves(no_weights):
    with pytest.raises(MetricUnavailable) as caught:
        create("feature_consistency", model="base").setup(RunContext(weights_dir=no_weights))
    message = str(caught.value)
    assert "model.safetensors" in message and "foresight-eval weights fetch dinov2-base" in message
    assert str(no_weights / "dinov2-base") in message and "models--facebook--dinov2-base" in message


def test_incomplete_model_folder_names_the_missing_file(weights_dir, tmp_path, no_weights):
    folder = tmp_path / "partial" / "dinov2-small"
    shutil.copytree(weights_dir / "dinov2-small", folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(MetricUnavailable, match="preprocessor_config.json"):
        create("feature_consistency").setup(RunContext(weights_dir=folder.parent))


def write_clips(root: Path) -> tuple[Path, Path]:
    frames = (video(6).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for side in ("preds", "refs"):
        (root / side).mkdir(parents=True)
        np.save(root / side / "clip.npy", frames)
    return root / "preds", root / "refs"


def test_default_run_skips_it_and_asking_by_name_is_a_usage_error(no_weights, tmp_path):
    _, skipped = prepare_metrics(None, None, RunContext(weights_dir=no_weights))
    assert "feature_consistency" in skipped and "weights fetch dinov2-small" in skipped["feature_consistency"]
    preds, refs = write_clips(tmp_path / "clips")
    result = CliRunner().invoke(main, ["score", str(preds), str(refs), "--metrics", "feature_consistency",
                                       "--weights-dir", str(no_weights)])
    assert result.exit_code == 2, result.output
    assert "dinov2-small" in result.output


def test_scores_through_the_engine_and_records_the_weights(weights_dir, tmp_path):
    preds, refs = write_clips(tmp_path / "clips")
    run_result = score(preds, refs, ["feature_consistency", "feature_consistency_delta"], weights_dir=weights_dir,
                       device="cpu")
    summary = run_result.metrics["feature_consistency"]
    assert 0.0 < summary.mean <= 1.0 and run_result.metrics["feature_consistency_delta"].mean == 0.0
    assert [row["horizon"] for row in summary.per_horizon] == list(range(2, 7))
    assert len(summary.definition["weights"]["sha256"]) == 64


def test_weights_list_shows_every_variant(weights_dir):
    result = CliRunner().invoke(main, ["weights", "list", "--json", "--weights-dir", str(weights_dir)])
    assert result.exit_code == 0, result.output
    assert {"dinov2-small", "dinov2-base", "dinov2-large"} <= {row["name"] for row in json.loads(result.output)}
