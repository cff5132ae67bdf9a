"""VBench subject consistency (DINO v1 ViT-B/16): a small, seeded, random DINO state dict written under
DINO's released file name in torch hub's checkpoint cache (where `torch.hub.load('facebookresearch/dino:main',
'dino_vitb16')` puts it) and loaded through the real path. Parity: the network against Hugging Face's
ViTModel with the same weights, the whole metric against VBench's preprocessing (torchvision) and loop.
Random weights test the plumbing, not DINO's judgement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from foresight_eval import score
from foresight_eval.cli import main
from foresight_eval.errors import MetricUnavailable
from foresight_eval.metrics.base import RunContext
from foresight_eval.metrics.features import DinoViT, load_dino
from foresight_eval.metrics.registry import create
from foresight_eval.stats import BootstrapConfig
from tests.parity import assert_parity
from tests.test_feature_consistency import vbench_consistency_loop

DIM, DEPTH, PATCH, GRID = 128, 2, 16, 14  # heads = DIM / 64 = 2, as in every DINO ViT; 224 / 16 = 14
FILENAME = "dino_vitbase16_pretrain.pth"


def random_dino_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A DINO ViT state dict with the released file's key names, seeded random values."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.05, offset=0.0):
        return torch.randn(*shape, generator=generator) * scale + offset

    state = {"cls_token": rand(1, 1, DIM), "pos_embed": rand(1, GRID * GRID + 1, DIM),
             "patch_embed.proj.weight": rand(DIM, 3, PATCH, PATCH), "patch_embed.proj.bias": rand(DIM),
             "norm.weight": rand(DIM, offset=1.0), "norm.bias": rand(DIM)}
    for i in range(DEPTH):
        block = f"blocks.{i}."
        state.update({
            block + "norm1.weight": rand(DIM, offset=1.0), block + "norm1.bias": rand(DIM),
            block + "attn.qkv.weight": rand(3 * DIM, DIM), block + "attn.qkv.bias": rand(3 * DIM),
            block + "attn.proj.weight": rand(DIM, DIM), block + "attn.proj.bias": rand(DIM),
            block + "norm2.weight": rand(DIM, offset=1.0), block + "norm2.bias": rand(DIM),
            block + "mlp.fc1.weight": rand(4 * DIM, DIM), block + "mlp.fc1.bias": rand(4 * DIM),
            block + "mlp.fc2.weight": rand(DIM, 4 * DIM), block + "mlp.fc2.bias": rand(DIM),
        })
    return state


@pytest.fixture(scope="module")
def dino_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(random_dino_state(), home / "hub" / "checkpoints" / FILENAME)
    return home


@pytest.fixture
def dino_weights(dino_home, monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(dino_home))
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "no_vbench_cache"))
    monkeypatch.delenv("FORESIGHT_WEIGHTS", raising=False)
    return dino_home / "hub" / "checkpoints" / FILENAME


def hf_vit(state: dict[str, torch.Tensor]):
    """The same weights in transformers' ViTModel (DINO's keys mapped onto its names)."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=DIM // 64,
                       intermediate_size=4 * DIM, patch_size=PATCH, image_size=GRID * PATCH, layer_norm_eps=1e-6,
                       qkv_bias=True, hidden_act="gelu")
    model = ViTModel(config, add_pooling_layer=False).eval()
    mapped = {"embeddings.cls_token": state["cls_token"], "embeddings.position_embeddings": state["pos_embed"],
              "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
              "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
              "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}
    for i in range(DEPTH):
        ours, theirs = f"blocks.{i}.", f"layers.{i}."  # transformers 5 names
        for part in ("weight", "bias"):
            q, k, v = state[ours + f"attn.qkv.{part}"].chunk(3)
            mapped.update({
                theirs + f"attention.q_proj.{part}": q, theirs + f"attention.k_proj.{part}": k,
                theirs + f"attention.v_proj.{part}": v,
                theirs + f"attention.o_proj.{part}": state[ours + f"attn.proj.{part}"],
                theirs + f"layernorm_before.{part}": state[ours + f"norm1.{part}"],
                theirs + f"layernorm_after.{part}": state[ours + f"norm2.{part}"],
                theirs + f"mlp.fc1.{part}": state[ours + f"mlp.fc1.{part}"],
                theirs + f"mlp.fc2.{part}": state[ours + f"mlp.fc2.{part}"],
            })
    if "encoder.layer.0.layernorm_before.weight" in model.state_dict():  # transformers 4 names
        renames = {"layers.": "encoder.layer.", "attention.q_proj": "attention.attention.query",
                   "attention.k_proj": "attention.attention.key", "attention.v_proj": "attention.attention.value",
                   "attention.o_proj": "attention.output.dense", "mlp.fc1": "intermediate.dense",
                   "mlp.fc2": "output.dense"}
        for old, new in renames.items():
            mapped = {key.replace(old, new): value for key, value in mapped.items()}
    model.load_state_dict(mapped, strict=True)
    return model


def test_dino_network_matches_transformers_vit():
    state = random_dino_state()
    images = torch.randn(3, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = DinoViT(state)(images)
        reference = hf_vit(state)(pixel_values=images).last_hidden_state[:, 0]
    assert_parity("DINO ViT CLS feature vs transformers ViTModel (same weights)", ours, reference, atol=1e-5)


def test_position_embeddings_follow_the_frame_grid():
    model = DinoViT(random_dino_state())
    assert model.interpolate_pos_encoding(224, 224) is model.pos_embed
    assert model.interpolate_pos_encoding(224, 298).shape == (1, 1 + 14 * 18, DIM)  # 96x128 frames in VBench
    assert model(torch.zeros(1, 3, 224, 298)).shape == (1, DIM)


def clip_frames(height: int, width: int, n: int = 6, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a square drifting over a gradient, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(n):
        frame = np.stack([xx * 200 / width, yy * 200 / height, np.full_like(xx, 90)], axis=-1).astype(float)
        frame[8:24, 4 + 4 * t:20 + 4 * t] = (230, 40, 40)
        frames.append(np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255))
    return np.stack(frames).round().astype(np.uint8)


def vbench_loop(frames: np.ndarray, network) -> tuple[float, list[float]]:
    """VBench's subject_consistency for one video: dino_transform(224) on the (T, C, H, W) uint8 video,
    the model one frame at a time, the clipped cosines to the previous and the first frame."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(size=224, antialias=False),
                                    transforms.Lambda(lambda x: x.float().div(255.0)),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    images = transform(torch.from_numpy(frames).permute(0, 3, 1, 2))
    with torch.no_grad():
        return vbench_consistency_loop([network(image.unsqueeze(0)) for image in images])


# 64x64 is upsampled to 224x224; 240x320 is downsampled to 224x298, where Resize(antialias=False) matters
@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (240, 320)])
def test_subject_consistency_matches_vbench(dino_weights, tmp_path, size):
    frames = clip_frames(*size)
    for side in ("preds", "refs"):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "clip.npy", frames)
    run = score(tmp_path / "preds", tmp_path / "refs", ["subject_consistency"], device="cpu",
                bootstrap=BootstrapConfig(n_resamples=10))
    pair = run.pairs[0]
    assert pair.ok, pair.error
    state = torch.load(dino_weights, weights_only=True)
    # square frames stay square after the resize: transformers' ViT is an independent reference network;
    # other shapes need DINO's own position-embedding interpolation, which transformers does differently
    network = (lambda x: hf_vit(state)(pixel_values=x).last_hidden_state[:, 0]) if size[0] == size[1] \
        else DinoViT(state).eval()
    reference, reference_frames = vbench_loop(frames, network)
    ours = [value for _, _, value in pair.per_frame["subject_consistency"]]
    label = "square, transformers ViT" if size[0] == size[1] else "non-square, DINO ViT"
    assert_parity(f"subject_consistency per frame vs VBench loop ({label})", ours, reference_frames, atol=1e-5)
    assert_parity(f"subject_consistency per clip vs VBench loop ({label})", pair.values["subject_consistency"],
                  reference, atol=1e-5)
    assert 0 < pair.values["subject_consistency"] < 1
    weights = run.metrics["subject_consistency"].definition["weights"]
    assert weights["file"] == FILENAME and len(weights["sha256"]) == 64


def test_missing_or_foreign_weights_explain_themselves(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "vbench"))
    monkeypatch.delenv("FORESIGHT_WEIGHTS", raising=False)
    with pytest.raises(MetricUnavailable) as caught:
        create("subject_consistency").setup(RunContext())
    message = str(caught.value)
    assert FILENAME in message and "weights fetch dino-vitb16" in message and str(tmp_path / "vbench") in message
    foreign = tmp_path / "vbench" / "dino_model" / FILENAME
    foreign.parent.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(3)}, foreign)
    with pytest.raises(MetricUnavailable, match="is not a DINO ViT state dict"):
        load_dino(foreign, torch.device("cpu"))


def test_vbench_profile_scores_both_dimensions(dino_weights, tmp_path):
    for side in ("preds", "refs"):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "clip.npy", clip_frames(48, 64))
    result = CliRunner().invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"),
                                       "--profile", "vbench", "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["metrics"]) == {"flicker_score", "subject_consistency"}
