"""Loading the generation models through the code the full preset uses: save_pretrained folders and the
local Hugging Face cache layout (written here with seeded random tiny models), the adapter's safetensors
checkpoint, and the errors for missing weights and bad adapter files."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from foresight_eval.inference import (AdapterCheckpointError, AdapterConfig, GenerateOptions, ModelWeightsNotFound,
                                      QueryAdapter, generate, load_models)
from foresight_eval.inference.adapter import load_adapter_state, save_adapter
from foresight_eval.inference.models import PRESETS


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """The tiny preset's random models written in each library's standard layout, plus its adapter."""
    root = tmp_path_factory.mktemp("weights")
    models = load_models("tiny", device="cpu", seed=7)
    models.vlm.save_pretrained(root / "vlm")
    models.processor.save_pretrained(root / "vlm")
    models.pipeline.save_pretrained(root / "ltx")
    save_adapter(models.adapter, root / "adapter.safetensors")
    return root, models


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache, used by every offline lookup of this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out as the hub cache does: models--org--name/snapshots/<revision>/ and refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    b_state = b.state_dict()
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(tensor, b_state[name], rtol=0, atol=0, msg=name)


def test_loads_save_pretrained_folders(saved_models, fixtures_dir, tmp_path):
    root, original = saved_models
    loaded = load_models("tiny", vlm=str(root / "vlm"), decoder=str(root / "ltx"), adapter=root / "adapter.safetensors",
                         device="cpu", seed=99)  # another seed: nothing may come from random initialisation
    assert loaded.random_parts == [] and loaded.warnings() == []
    assert loaded.provenance["vlm"]["source"] == str(root / "vlm")
    assert type(loaded.processor).__name__ == "Qwen2_5_VLProcessor"
    assert loaded.pipeline.text_encoder is None  # the adapter replaces LTX-Video's T5 encoder
    for part in ("vlm", "adapter"):
        assert_same_weights(getattr(original, part), getattr(loaded, part))
    for part in ("transformer", "vae"):
        assert_same_weights(getattr(original.pipeline, part), getattr(loaded.pipeline, part))

    shutil.copy(fixtures_dir / "refs" / "clip00.mp4", tmp_path / "clip00.mp4")
    result = generate(tmp_path / "clip00.mp4", tmp_path / "out", loaded, GenerateOptions(frames=8))
    assert not result.failed
    assert result.manifest["trained"] is True and result.manifest["random_weights"] == []


def test_full_preset_finds_its_repositories_in_the_hub_cache(saved_models, hf_cache, monkeypatch):
    """The full preset's default sources are hub ids looked up offline in the cache; tiny models stand in
    for the real ones under those ids (same loading code, smaller files)."""
    root, original = saved_models
    put_in_hub_cache(hf_cache, "Qwen/Qwen2.5-VL-7B-Instruct", root / "vlm")
    put_in_hub_cache(hf_cache, "Lightricks/LTX-Video", root / "ltx")
    monkeypatch.setitem(PRESETS, "full", replace(PRESETS["full"], adapter=PRESETS["tiny"].adapter))
    loaded = load_models("full", device="cpu")
    assert "models--Qwen--Qwen2.5-VL-7B-Instruct" in loaded.provenance["vlm"]["source"]
    assert "models--Lightricks--LTX-Video" in loaded.provenance["decoder"]["source"]
    assert loaded.random_parts == ["adapter"]
    assert_same_weights(original.vlm, loaded.vlm)


def test_missing_weights_name_every_place_searched(hf_cache, tmp_path):
    with pytest.raises(ModelWeightsNotFound) as missing_vlm:
        load_models("full", device="cpu")
    message = str(missing_vlm.value)
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in message and str(hf_cache) in message and "--vlm" in message
    assert "never downloads" in message

    with pytest.raises(ModelWeightsNotFound, match="LTX-Video weights .*no-such-folder"):
        load_models("tiny", decoder=str(tmp_path / "no-such-folder"), device="cpu")
    with pytest.raises(ModelWeightsNotFound, match="query adapter weights .*absent.safetensors"):
        load_models("tiny", adapter=tmp_path / "absent.safetensors", device="cpu")


def test_full_adapter_is_about_ten_million_parameters():
    full = PRESETS["full"]
    adapter = QueryAdapter(AdapterConfig(vlm_dim=full.vlm_config["hidden_size"],
                                         out_dim=full.transformer_config["caption_channels"], **full.adapter))
    assert 9_000_000 < adapter.num_parameters() < 11_000_000
    embeds, mask = adapter(torch.randn(2, 7, 3584), torch.tensor([[1] * 7, [1] * 4 + [0] * 3]))
    assert embeds.shape == (2, 32, 4096) and mask.tolist() == [[1] * 32] * 2


def test_adapter_round_trip_and_wrong_shapes(tmp_path):
    config = AdapterConfig(vlm_dim=12, out_dim=20, num_queries=4, width=8, depth=1, heads=2)
    torch.manual_seed(0)
    adapter = QueryAdapter(config)
    save_adapter(adapter, tmp_path / "adapter.safetensors")
    torch.manual_seed(1)
    other = QueryAdapter(config)
    load_adapter_state(tmp_path / "adapter.safetensors", other)
    assert_same_weights(adapter, other)

    wider = QueryAdapter(replace(config, width=16))
    with pytest.raises(AdapterCheckpointError) as wrong:
        load_adapter_state(tmp_path / "adapter.safetensors", wider)
    message = str(wrong.value)
    assert "adapter.safetensors" in message and "blocks.0.mlp.0.weight: shape (32, 8) in the file, (64, 16) expected" in message
    assert '"width": 8' in message  # the config stored in the file is quoted

    deeper = QueryAdapter(replace(config, depth=2))
    with pytest.raises(AdapterCheckpointError, match="missing tensor 'blocks.1."):
        load_adapter_state(tmp_path / "adapter.safetensors", deeper)


class _Payload:
    """Unpickling this would create the marker file: the proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["adapter.safetensors", "adapter.pt"])
def test_pickled_adapter_is_refused_unopened(tmp_path, name):
    marker = tmp_path / "unpickled"
    config = AdapterConfig(vlm_dim=12, out_dim=20, num_queries=4, width=8, depth=1, heads=2)
    adapter = QueryAdapter(config)
    torch.save({**adapter.state_dict(), "payload": _Payload(marker)}, tmp_path / name)
    with pytest.raises(AdapterCheckpointError, match="not a readable .safetensors file.*pickled checkpoints"):
        load_adapter_state(tmp_path / name, adapter)
    assert not marker.exists()
    # Through the model loader too: a clear error, before any generation.
    with pytest.raises(AdapterCheckpointError, match=name):
        load_models("tiny", adapter=tmp_path / name, device="cpu")


def test_offline_processor_uses_the_vlm_config_token_ids(saved_models):
    _, models = saved_models
    config = models.vlm.config
    tokenizer = models.processor.tokenizer
    for token, key in (("<|image_pad|>", "image_token_id"), ("<|vision_start|>", "vision_start_token_id"),
                       ("<|vision_end|>", "vision_end_token_id"), ("<|video_pad|>", "video_token_id")):
        assert tokenizer.convert_tokens_to_ids(token) == getattr(config, key)
    frames = [np.zeros((96, 128, 3), dtype=np.uint8)] * 2
    text = models.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "next"}]}],
        tokenize=False)
    inputs = models.processor(text=[text], images=frames, return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == config.image_token_id).sum())
    # One token per 2x2 merged 14-pixel patch: 128x96 is resized to 140x84 (multiples of 28).
    assert image_tokens == 2 * (140 // 28) * (84 // 28)
