"""`generate --encoder hybrid` (research log P2: DINOv2 patch tokens cross-attending to Qwen2.5-VL's hidden
states) with the tiny preset on the CPU: deterministic per seed for both encoders, the fusion module's
safetensors checkpoint, DINOv2 loaded from save_pretrained folders and the hub cache layout, the latent
dumps recomputed from the models, and the latency overhead carried from the manifest into a gated run."""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from foresight_eval.cli import main
from foresight_eval.errors import UsageError
from foresight_eval.gates import evaluate_gates, load_gates
from foresight_eval.inference import GenerateOptions, ModelWeightsNotFound, generate, load_models
from foresight_eval.inference.fusion import (FusionCheckpointError, FusionConfig, FusionModule, load_fusion_state,
                                             save_fusion)
from foresight_eval.inference.models import PRESETS
from foresight_eval.inference.pipeline import LATENCY_DEFINITION, MANIFEST_FILE, dino_pixels, encoder_latency
from foresight_eval.io.clips import open_clip
from tests.test_inference_loading import assert_same_weights, hf_cache, put_in_hub_cache  # noqa: F401 (fixture)

CONTEXT, FRAMES = 4, 8
OPTIONS = GenerateOptions(context=CONTEXT, frames=FRAMES)
KEYS = ["clip00", "clip01"]


def decoded(path: Path) -> np.ndarray:
    return np.stack(list(open_clip(path).frames()))


@pytest.fixture(scope="module")
def hybrid_models():
    return load_models("tiny", device="cpu", seed=0, encoder="hybrid")


@pytest.fixture(scope="module")
def contexts(fixtures_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contexts")
    for key in KEYS:
        shutil.copy(fixtures_dir / "refs" / f"{key}.mp4", root / f"{key}.mp4")
    return root


@pytest.fixture(scope="module")
def generated(hybrid_models, contexts, fixtures_dir, tmp_path_factory):
    out, latents = tmp_path_factory.mktemp("preds"), tmp_path_factory.mktemp("latents")
    result = generate(contexts, out, hybrid_models, replace(OPTIONS, batch_size=2), refs=contexts, latents_dir=latents)
    return result, out, latents


def test_manifest_records_the_hybrid_encoder_its_parameters_and_untrained_parts(generated, hybrid_models):
    result, out, _ = generated
    assert not result.failed
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["encoder"] == "hybrid" and manifest["trained"] is False
    assert manifest["random_weights"] == ["vlm", "decoder", "dino", "fusion", "adapter"]
    assert any("fusion module has RANDOM weights" in note for note in manifest["warnings"])
    assert manifest["models"]["fusion"]["source"] == "random initialisation (seeded)"
    # The adapter reads the fused sequence, so its input width is the fusion module's.
    assert manifest["models"]["adapter"]["config"]["vlm_dim"] == PRESETS["tiny"].fusion["width"]
    parameters = manifest["parameters"]
    assert set(parameters) == {"vlm", "dino", "fusion", "adapter", "decoder_transformer", "decoder_vae"}
    assert parameters["fusion"] == hybrid_models.fusion.num_parameters() == manifest["models"]["fusion"]["parameters"]
    assert parameters["dino"] == sum(p.numel() for p in hybrid_models.dino.parameters())


def test_latency_overhead_is_recorded_with_its_definition(generated):
    result, out, _ = generated
    latency = json.loads((out / MANIFEST_FILE).read_text())["latency"]
    assert latency["definition"] == LATENCY_DEFINITION and "median over clips" in latency["definition"]
    assert sorted(latency["per_clip"]) == KEYS
    for sample in latency["per_clip"].values():
        assert set(sample) == {"vlm_s", "dino_s", "fusion_s"} and all(v > 0 for v in sample.values())
    # The overhead is exactly what the definition says, recomputed from the per-clip seconds.
    vlm = statistics.median(s["vlm_s"] for s in latency["per_clip"].values())
    hybrid = statistics.median(sum(s.values()) for s in latency["per_clip"].values())
    assert latency["latency_overhead"] == pytest.approx(hybrid / vlm - 1, rel=1e-12)
    assert latency["latency_overhead"] > 0  # the hybrid encoder runs the VLM and more
    # Batch of two: each clip carries half of its batch's seconds, so the two samples are equal.
    assert latency["per_clip"]["clip00"] == latency["per_clip"]["clip01"]
    assert result.latency == latency


def test_encoder_latency_medians_and_overhead():
    samples = {"a": {"vlm_s": 1.0, "dino_s": 0.2, "fusion_s": 0.1}, "b": {"vlm_s": 2.0, "dino_s": 0.3, "fusion_s": 0.1},
               "c": {"vlm_s": 4.0, "dino_s": 0.5, "fusion_s": 0.1}}
    latency = encoder_latency("hybrid", samples)
    assert latency["median_vlm_encoder_s"] == 2.0 and latency["median_hybrid_encoder_s"] == pytest.approx(2.4)
    assert latency["latency_overhead"] == pytest.approx(0.2)
    vlm_only = encoder_latency("vlm", {key: {"vlm_s": s["vlm_s"]} for key, s in samples.items()})
    assert vlm_only["latency_overhead"] is None and vlm_only["median_vlm_encoder_s"] == 2.0
    assert encoder_latency("hybrid", {})["latency_overhead"] is None


def test_saved_dino_and_fused_latents_are_the_models_outputs(generated, hybrid_models, contexts):
    _, _, root = generated
    for folder in ("pred", "ref", "vlm", "dino", "fused"):
        assert sorted(p.name for p in (root / folder).glob("*.safetensors")) == [f"{k}.safetensors" for k in KEYS]
    frames = decoded(contexts / "clip00.mp4")[:CONTEXT]
    models = hybrid_models
    with torch.inference_mode():
        pixels = dino_pixels(frames, models.preset.dino_short_side, 14, models.device, models.dtype)
        # 128x96 frames, short side 56: 70x56 pixels, 5x4 patches of 14 per frame.
        assert pixels.shape == (CONTEXT, 3, 56, 70)
        tokens = models.dino(pixel_values=pixels).last_hidden_state[:, 1:]
    dino = load_file(root / "dino" / "clip00.safetensors")["latents"]
    assert dino.shape == (1, CONTEXT * 20, 16)
    torch.testing.assert_close(dino[0], tokens.flatten(0, 1), rtol=1e-5, atol=1e-5)
    vlm = load_file(root / "vlm" / "clip00.safetensors")["latents"]
    with torch.inference_mode():
        fused = models.fusion(tokens[None], vlm, torch.ones(vlm.shape[:2], dtype=torch.long))
    torch.testing.assert_close(load_file(root / "fused" / "clip00.safetensors")["latents"], fused, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["vlm", "hybrid"])
def test_both_encoders_are_deterministic_per_seed(encoder, contexts, tmp_path):
    """Same seed: same weights and same clips, bit for bit; another seed: other weights, other clips."""
    clip = tmp_path / "in" / "clip00.mp4"
    clip.parent.mkdir()
    shutil.copy(contexts / "clip00.mp4", clip)
    outputs = {}
    for label, seed in (("first", 0), ("again", 0), ("other", 1)):
        models = load_models("tiny", device="cpu", seed=seed, encoder=encoder)
        generate(clip.parent, tmp_path / label, models, replace(OPTIONS, seed=seed))
        outputs[label] = (models, decoded(tmp_path / label / "clip00.mp4")[CONTEXT:].astype(float))
    parts = ("adapter", "dino", "fusion") if encoder == "hybrid" else ("adapter",)
    for part in parts:
        assert_same_weights(getattr(outputs["first"][0], part), getattr(outputs["again"][0], part))
        first, other = (torch.cat([p.flatten() for p in getattr(outputs[label][0], part).parameters()])
                        for label in ("first", "other"))
        assert not torch.equal(first, other), part
    np.testing.assert_array_equal(outputs["again"][1], outputs["first"][1])
    assert np.abs(outputs["other"][1] - outputs["first"][1]).mean() > 5.0


def test_fusion_round_trip_and_every_mismatched_tensor_named(tmp_path):
    config = FusionConfig(dino_dim=12, vlm_dim=20, width=8, depth=1, heads=2)
    torch.manual_seed(0)
    fusion = FusionModule(config)
    save_fusion(fusion, tmp_path / "fusion.safetensors")
    torch.manual_seed(1)
    other = FusionModule(config)
    load_fusion_state(tmp_path / "fusion.safetensors", other)
    assert_same_weights(fusion, other)

    wider = FusionModule(replace(config, width=16))
    with pytest.raises(FusionCheckpointError) as wrong:
        load_fusion_state(tmp_path / "fusion.safetensors", wider)
    message = str(wrong.value)
    assert "fusion.safetensors" in message and '"width": 8' in message  # the config stored in the file
    mismatched = [name for name, tensor in wider.state_dict().items() if tensor.shape != fusion.state_dict()[name].shape]
    assert len(mismatched) > 6
    for name in mismatched:  # every one, not the first few
        assert f"{name}: shape {tuple(fusion.state_dict()[name].shape)} in the file, " \
               f"{tuple(wider.state_dict()[name].shape)} expected" in message
    deeper = FusionModule(replace(config, depth=2))
    with pytest.raises(FusionCheckpointError, match="missing tensor 'blocks.1.attention.in_proj_weight'"):
        load_fusion_state(tmp_path / "fusion.safetensors", deeper)
    torch.save(fusion.state_dict(), tmp_path / "fusion.pt")
    with pytest.raises(FusionCheckpointError, match="not a readable .safetensors file.*pickled checkpoints"):
        load_fusion_state(tmp_path / "fusion.pt", fusion)


def test_dino_and_fusion_load_from_local_files_and_the_hub_cache(hybrid_models, hf_cache, tmp_path, monkeypatch):
    from foresight_eval.inference.fusion import save_fusion as save

    hybrid_models.dino.save_pretrained(tmp_path / "dino")
    save(hybrid_models.fusion, tmp_path / "fusion.safetensors")
    loaded = load_models("tiny", device="cpu", seed=5, encoder="hybrid", dino=str(tmp_path / "dino"),
                         fusion=tmp_path / "fusion.safetensors")
    assert loaded.provenance["dino"]["source"] == str(tmp_path / "dino") and not loaded.provenance["fusion"]["random"]
    assert not any("fusion" in note for note in loaded.warnings())
    assert_same_weights(hybrid_models.dino, loaded.dino)
    assert_same_weights(hybrid_models.fusion, loaded.fusion)

    pickled = tmp_path / "dino-pickled"
    shutil.copytree(tmp_path / "dino", pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(UsageError, match="only model.safetensors is read"):
        load_models("tiny", device="cpu", encoder="hybrid", dino=str(pickled))

    # The full preset looks DINOv2 up as facebook/dinov2-large in the cache (tiny models stand in).
    hybrid_models.vlm.save_pretrained(tmp_path / "vlm")
    hybrid_models.processor.save_pretrained(tmp_path / "vlm")
    hybrid_models.pipeline.save_pretrained(tmp_path / "ltx")
    monkeypatch.setitem(PRESETS, "full", replace(PRESETS["full"], adapter=PRESETS["tiny"].adapter,
                                                 fusion=PRESETS["tiny"].fusion))
    with pytest.raises(ModelWeightsNotFound) as missing:
        load_models("full", device="cpu", encoder="hybrid", vlm=str(tmp_path / "vlm"), decoder=str(tmp_path / "ltx"))
    assert "DINOv2 weights 'facebook/dinov2-large'" in str(missing.value) and "--dino" in str(missing.value)
    put_in_hub_cache(hf_cache, "facebook/dinov2-large", tmp_path / "dino")
    full = load_models("full", device="cpu", encoder="hybrid", vlm=str(tmp_path / "vlm"), decoder=str(tmp_path / "ltx"))
    assert "models--facebook--dinov2-large" in full.provenance["dino"]["source"]
    assert_same_weights(hybrid_models.dino, full.dino)
    assert full.random_parts == ["fusion", "adapter"]


def test_full_preset_sizes():
    """ViT-L/14 as in facebook/dinov2-large (304M parameters), and the fusion module at its full widths."""
    from transformers import Dinov2Config, Dinov2Model

    full = PRESETS["full"]
    with torch.device("meta"):
        dino = Dinov2Model(Dinov2Config(**full.dino_config))
    assert 300e6 < sum(p.numel() for p in dino.parameters()) < 310e6
    fusion = FusionModule(FusionConfig(dino_dim=1024, vlm_dim=full.vlm_config["hidden_size"], **full.fusion))
    assert 25e6 < fusion.num_parameters() < 35e6


def test_latency_overhead_reaches_the_p2_gate(generated, contexts, tmp_path):
    """`score --extra-file PREDS/generate_manifest.json` records the figures generate measured; check judges them."""
    _, out, _ = generated
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(out), str(contexts), "--context", str(CONTEXT), "--frames", "min",
                                       "-m", "psnr", "--device", "cpu", "--extra-file", str(out / MANIFEST_FILE),
                                       "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    extra = json.loads((run_dir / "summary.json").read_text())["extra"]
    assert extra["latency_overhead"] == manifest["latency"]["latency_overhead"]
    assert extra["latency_overhead_definition"] == LATENCY_DEFINITION and extra["encoder"] == "hybrid"
    assert extra["generate_trained"] is False and "clips" not in extra  # the figures, not the whole manifest
    entry = next(e for e in evaluate_gates(run_dir, load_gates("p2")).entries if e.metric == "latency_overhead")
    assert entry.value == pytest.approx(manifest["latency"]["latency_overhead"])
    assert entry.status == ("pass" if entry.value <= 0.25 else "fail")


@pytest.mark.slow
def test_cli_hybrid_and_usage_errors(contexts, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "-i", str(contexts / "clip00.mp4"), "-o", str(tmp_path / "out"),
                                  "--preset", "tiny", "--device", "cpu", "--frames", "8", "--encoder", "hybrid", "--json"])
    assert result.exit_code == 0, result.output
    assert "fusion module has RANDOM weights" in result.stderr and "latency overhead" in result.stderr
    assert json.loads(result.stdout)["encoder"] == "hybrid"
    wrong = runner.invoke(main, ["generate", "-i", str(contexts), "-o", str(tmp_path / "x"), "--preset", "tiny",
                                 "--dino", str(tmp_path)])
    assert wrong.exit_code == 2 and "--encoder hybrid" in wrong.stderr


def test_extra_file_takes_a_manifests_figures_and_plain_objects_as_they_are(tmp_path):
    from foresight_eval.cli.common import parse_assignments
    from foresight_eval.config import read_extra_file

    def _load_extra(extra, extra_file):  # what the scoring commands record: the file's figures, then --extra
        return {**read_extra_file(extra_file), **parse_assignments(extra, "--extra")}

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"latency_overhead": 0.319, "schema": "mine"}))
    assert _load_extra(("param_efficiency=1.165",), plain) == {"latency_overhead": 0.319, "schema": "mine",
                                                               "param_efficiency": 1.165}
    manifest = tmp_path / MANIFEST_FILE
    manifest.write_text(json.dumps({"schema": "foresight-eval/generate/v1", "clips": [], "figures": {"encoder": "vlm"}}))
    assert _load_extra((), manifest) == {"encoder": "vlm"}
