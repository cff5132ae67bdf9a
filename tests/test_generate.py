"""`foresight-eval generate` end to end with the tiny preset on the CPU: fixture contexts in, clips that
`score` pairs with the references out, deterministic per seed, error rows for unusable clips, latent dumps
that the latent metrics read."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from foresight_eval.cli import main
from foresight_eval.engine import score
from foresight_eval.options import ScoreOptions
from foresight_eval.inference import GenerateOptions, generate, load_models
from foresight_eval.inference.pipeline import MANIFEST_FILE
from foresight_eval.io.clips import open_clip

# Fixture references have 20 frames of 128x96: 4 context frames, 16 to predict.
CONTEXT, FRAMES, WIDTH, HEIGHT = 4, 16, 128, 96
# The fixtures are 10 fps: score refuses a prediction written at another rate (--fps-mismatch).
OPTIONS = GenerateOptions(context=CONTEXT, frames=FRAMES, fps=10)
KEYS = ["clip00", "clip01"]


def decoded(path: Path) -> np.ndarray:
    return np.stack(list(open_clip(path).frames()))


@pytest.fixture(scope="module")
def tiny_models():
    return load_models("tiny", device="cpu", seed=0)


@pytest.fixture(scope="module")
def contexts(fixtures_dir, tmp_path_factory) -> Path:
    """Two contexts read by different readers: a whole fixture video (its first 4 frames are the context)
    and a folder holding just the 4 context frames of another as png files."""
    root = tmp_path_factory.mktemp("contexts")
    shutil.copy(fixtures_dir / "refs" / "clip00.mp4", root / "clip00.mp4")
    (root / "clip01").mkdir()
    for index, frame in enumerate(decoded(fixtures_dir / "refs" / "clip01.mp4")[:CONTEXT]):
        Image.fromarray(frame).save(root / "clip01" / f"frame{index}.png")
    return root


@pytest.fixture(scope="module")
def references(fixtures_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("references")
    for key in KEYS:
        shutil.copy(fixtures_dir / "refs" / f"{key}.mp4", root / f"{key}.mp4")
    return root


@pytest.fixture(scope="module")
def generated(tiny_models, contexts, references, tmp_path_factory):
    out = tmp_path_factory.mktemp("preds")
    latents = tmp_path_factory.mktemp("latents")
    steps = []
    result = generate(contexts, out, tiny_models, replace(OPTIONS, batch_size=2), refs=references, latents_dir=latents,
                      on_step=lambda step, total: steps.append((step, total)))
    return result, out, latents, steps


def test_writes_one_clip_per_context_under_the_same_name(generated, fixtures_dir):
    result, out, _, steps = generated
    assert [row.video for row in result.rows] == KEYS
    assert not result.failed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == ["clip00.mp4", "clip01.mp4"]
    for key in KEYS:
        frames = decoded(out / f"{key}.mp4")
        assert frames.shape == (CONTEXT + FRAMES, HEIGHT, WIDTH, 3)
    # The context frames come first and are the input's (up to H.264 re-encoding).
    reference = decoded(fixtures_dir / "refs" / "clip00.mp4")[:CONTEXT].astype(float)
    assert np.abs(decoded(out / "clip00.mp4")[:CONTEXT] - reference).mean() < 3.0
    # One batch of two clips, two denoising steps (the tiny preset's default), each reported.
    assert steps == [(1, 2), (2, 2)]


def test_score_pairs_the_output_with_the_references(generated, references):
    _, out, _, _ = generated
    run = score(out, references, ["psnr", "mae"], options=ScoreOptions(context=CONTEXT), strict=True, device="cpu")
    assert not run.failed and len(run.pairs) == 2
    assert [h["horizon"] for h in run.metrics["psnr"].per_horizon] == list(range(1, FRAMES + 1))
    assert np.isfinite(run.metrics["mae"].mean)


def test_manifest_records_random_weights_and_rows(generated):
    result, out, _, _ = generated
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["trained"] is False
    assert manifest["random_weights"] == ["vlm", "decoder", "adapter"]
    assert any("RANDOM" in note for note in manifest["warnings"])
    assert manifest["models"]["adapter"]["random"] is True
    assert manifest["videos"] == {"total": 2, "ok": 2, "error": 0}
    assert manifest["options"]["steps"] == 2 and manifest["options"]["seed"] == 0
    assert set(manifest["manifest"]["inputs"]["contexts"]["sha256"]) == {"clip00.mp4", "clip01/frame0.png", "clip01/frame1.png", "clip01/frame2.png", "clip01/frame3.png"}
    assert result.manifest == manifest


def test_same_seed_same_output_other_seed_other_output(tiny_models, contexts, tmp_path):
    options = replace(OPTIONS, frames=8, batch_size=2)
    first = tmp_path / "first"
    for folder, run_options in ((first, options), (tmp_path / "again", options),
                                (tmp_path / "batch1", replace(options, batch_size=1)),
                                (tmp_path / "seed1", replace(options, seed=1))):
        generate(contexts, folder, tiny_models, run_options)
    for key in KEYS:
        original = decoded(first / f"{key}.mp4")
        np.testing.assert_array_equal(decoded(tmp_path / "again" / f"{key}.mp4"), original)
        # A clip's noise depends on the seed and its name, not on its batch: batch size 1 differs from
        # batch size 2 by floating-point rounding only, another seed by a whole different sample.
        rounding = np.abs(decoded(tmp_path / "batch1" / f"{key}.mp4").astype(float) - original).mean()
        other_seed = np.abs(decoded(tmp_path / "seed1" / f"{key}.mp4")[CONTEXT:].astype(float)
                            - original[CONTEXT:]).mean()
        assert rounding < 0.5 and other_seed > 5.0, (rounding, other_seed)


def test_predictions_only_and_other_generated_size(tiny_models, contexts, tmp_path):
    options = replace(OPTIONS, frames=5, include_context=False, resolution=(64, 64))
    result = generate(contexts, tmp_path, tiny_models, options)
    assert not result.failed and result.rows[0].generated_size == (64, 64)
    # Generated at 64x64, written at the context's size; 5 frames although LTX makes 8k+1.
    assert decoded(tmp_path / "clip00.mp4").shape == (5, HEIGHT, WIDTH, 3)


def test_too_short_or_broken_clip_is_an_error_row_and_the_others_go_on(tiny_models, contexts, tmp_path):
    inputs = tmp_path / "inputs"
    shutil.copytree(contexts, inputs)
    np.save(inputs / "short.npy", np.zeros((2, HEIGHT, WIDTH, 3), dtype=np.uint8))
    (inputs / "broken.mp4").write_bytes(b"not a video")
    result = generate(inputs, tmp_path / "out", tiny_models, replace(OPTIONS, frames=8))
    rows = {row.video: row for row in result.rows}
    assert rows["short"].status == "error" and "only 2 frames" in rows["short"].error
    assert rows["broken"].status == "error" and "broken.mp4" in rows["broken"].error
    assert rows["clip00"].ok and rows["clip01"].ok
    assert not (tmp_path / "out" / "short.mp4").exists()
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["videos"] == {"total": 4, "ok": 2, "error": 2}


def test_latents_have_the_layout_the_latent_metrics_read(generated):
    from foresight_eval.latents import latents
    from safetensors.torch import load_file

    _, _, root, _ = generated
    for folder in ("pred", "ref", "vlm"):
        assert sorted(p.relative_to(root / folder).as_posix() for p in (root / folder).rglob("*.safetensors")) \
            == ["clip00.safetensors", "clip01.safetensors"]
    pred = load_file(root / "pred" / "clip00.safetensors")["latents"]
    ref = load_file(root / "ref" / "clip00.safetensors")["latents"]
    vlm = load_file(root / "vlm" / "clip00.safetensors")["latents"]
    assert pred.shape == ref.shape and pred.shape[:2] == (1, FRAMES)
    assert vlm.ndim == 3 and vlm.shape[0] == 1 and vlm.shape[2] == 32  # the tiny VLM's width
    run = latents(root / "pred", root / "ref", ["latent_cosine"], device="cpu")
    assert not run.failed
    assert -1.0 <= run.metrics["latent_cosine"].mean <= 1.0
    assert run.metrics["latent_cosine"].definition["params"]["k"] == 5


def test_cli_generates_and_announces_random_weights(contexts, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["generate", "--inputs", str(contexts), "--out", str(out), "--preset", "tiny",
                                       "--device", "cpu", "--frames", "8", "--json"])
    assert result.exit_code == 0, result.output
    assert "NOT A TRAINED MODEL" in result.stderr and "RANDOM weights" in result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["videos"]["ok"] == 2 and manifest["trained"] is False
    assert (out / "clip01.mp4").is_file()


def test_cli_usage_errors(contexts, tmp_path):
    runner = CliRunner()
    bad_size = runner.invoke(main, ["generate", "-i", str(contexts), "-o", str(tmp_path), "--preset", "tiny",
                                    "--resolution", "100x64"])
    assert bad_size.exit_code == 2 and "multiples of 32" in bad_size.stderr
    missing = runner.invoke(main, ["generate", "-i", str(contexts), "-o", str(tmp_path), "--preset", "tiny",
                                   "--vlm", str(tmp_path / "no-such-vlm")])
    assert missing.exit_code == 2 and "Qwen2.5-VL weights" in missing.stderr and "no-such-vlm" in missing.stderr


def test_generated_clips_take_the_context_clips_frame_rate_by_default(tmp_path):
    """score refuses pairs whose frame rates differ, so by default generate writes at the context's rate."""
    from foresight_eval.inference.pipeline import DEFAULT_FPS, GenerateOptions, _resolve_fps
    from foresight_eval.io.clips import discover_clips
    from tests.conftest import FIXTURES

    videos = discover_clips(FIXTURES / "refs")
    assert _resolve_fps(GenerateOptions(), videos).fps == 10  # the fixtures are 10 fps
    assert _resolve_fps(replace(GenerateOptions(), fps=24), videos).fps == 24
    np.save(tmp_path / "clip.npy", np.zeros((3, 8, 8, 3), np.uint8))
    assert _resolve_fps(GenerateOptions(), discover_clips(tmp_path)).fps == DEFAULT_FPS
