"""Temporal metrics (tc, flicker, warp_error, their deltas, frozen): known videos, parity with the
reference implementations, state across batches, and the graded fixtures."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from fixtures.generate import CONTEXT, PREDICTION_SETS
from foresight_eval import ScoreOptions, create, score
from foresight_eval.errors import UsageError
from foresight_eval.metrics.base import FrameBatch
from foresight_eval.metrics.temporal import FARNEBACK_PARAMS, backward_warp, optical_flow, to_gray_uint8, warp_error
from tests.parity import assert_parity

PAIR_METRICS = ("tc", "tc_delta", "flicker", "flicker_delta", "flicker_score", "warp_error", "warp_error_delta")


def run_metric(name: str, pred: torch.Tensor, ref: torch.Tensor | None = None, batch_size: int = 4, **params):
    """Drive a metric over one clip as the engine does; returns (clip value, per-frame values or None)."""
    ref = pred if ref is None else ref
    metric = create(name, **params)
    metric.reset()
    per_frame = []
    for start in range(0, len(pred), batch_size):
        index = torch.arange(start, min(start + batch_size, len(pred)))
        values = metric.update(FrameBatch("clip", pred[index], ref[index], index + 1, index))
        if values is not None:
            assert values.shape == index.shape
            per_frame.append(values)
    return metric.compute(), (torch.cat(per_frame).double() if per_frame else None)


def smooth_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture in [0, 1], (H, W, 3) float32: something optical flow can follow."""
    texture = ndimage.gaussian_filter(np.random.default_rng(seed).random((height, width, 3)), sigma=(2, 2, 0))
    return ((texture - texture.min()) / np.ptp(texture)).astype(np.float32)


def translating_video(n_frames: int = 10, height: int = 48, width: int = 64, step=(2, 1)) -> torch.Tensor:
    """A window sliding over a larger texture by ``step`` = (dx, dy) pixels per frame: content moves by -step."""
    dx, dy = step
    texture = smooth_texture(height + n_frames * dy + 1, width + n_frames * dx + 1)
    frames = np.stack([texture[t * dy : t * dy + height, t * dx : t * dx + width] for t in range(n_frames)])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def moving() -> torch.Tensor:
    return translating_video()


def test_static_video_is_consistent_unflickering_and_flagged_frozen(moving):
    static = moving[:1].expand(len(moving), -1, -1, -1).contiguous()
    tc, per_frame = run_metric("tc", static)
    assert tc == pytest.approx(1.0, abs=1e-6)
    assert torch.isnan(per_frame[0]) and torch.allclose(per_frame[1:], torch.ones(len(moving) - 1, dtype=torch.float64))
    assert run_metric("flicker", static)[0] == 0.0
    assert run_metric("flicker_score", static)[0] == 1.0
    assert run_metric("warp_error", static)[0] < 1e-6  # Farneback leaves ~1e-3 px of flow on identical frames
    assert run_metric("frozen", static, moving)[0] == 1.0
    assert run_metric("tc_delta", static, moving)[0] > 0.1  # steadier than the moving reference
    # A static reference is not "reality moving": a static prediction of it is not frozen.
    assert run_metric("frozen", static, static)[0] == 0.0
    assert run_metric("frozen", moving, moving)[0] == 0.0


def test_independent_noise_frames_score_low():
    noise = torch.rand(8, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    assert run_metric("tc", noise)[0] < 0.05
    assert run_metric("flicker", noise)[0] == pytest.approx(1 / 3, abs=0.02)  # E|U - U'| for uniform U, U'
    assert run_metric("flicker_score", noise)[0] == pytest.approx(2 / 3, abs=0.02)
    assert run_metric("warp_error", noise)[0] > 0.05
    assert run_metric("frozen", noise)[0] == 0.0


def test_translating_pattern_warps_well_and_a_shuffled_one_does_not(moving):
    smooth = run_metric("warp_error", moving)[0]
    shuffled = moving[torch.from_numpy(np.random.default_rng(1).permutation(len(moving)))]
    scrambled = run_metric("warp_error", shuffled)[0]
    assert smooth < 1e-4
    assert scrambled > 1e-3 and scrambled > 100 * smooth
    assert run_metric("tc", moving)[0] > run_metric("tc", shuffled)[0]
    assert run_metric("warp_error", moving, flow="dis")[0] < 1e-4


def test_farneback_recovers_a_known_translation_and_warps_the_frame_back():
    dx, dy = 2, 1
    earlier, later = translating_video(2, 64, 80, step=(dx, dy))  # later(p) = earlier(p + (dx, dy))
    gray = to_gray_uint8(torch.stack([earlier, later]))
    backward = optical_flow(gray[1], gray[0])  # on the later frame's grid, pointing into the earlier frame
    interior = (slice(16, -16), slice(16, -16))
    assert np.median(backward[interior][..., 0]) == pytest.approx(dx, abs=0.1)
    assert np.median(backward[interior][..., 1]) == pytest.approx(dy, abs=0.1)
    known = np.broadcast_to(np.array([dx, dy], dtype=np.float32), backward.shape).copy()
    warped = backward_warp(earlier.permute(1, 2, 0).numpy(), known)
    assert np.abs(warped[:-dy, :-dx] - later.permute(1, 2, 0).numpy()[:-dy, :-dx]).max() < 1e-6
    assert float(warp_error(earlier[None], later[None])[0]) < 1e-4


def test_flow_parity_with_opencv_farneback(moving):
    gray = [cv2.cvtColor(np.rint(f.permute(1, 2, 0).numpy() * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
            for f in moving[:3]]
    p = FARNEBACK_PARAMS
    for earlier, later in zip(gray, gray[1:]):
        reference = cv2.calcOpticalFlowFarneback(later, earlier, None, p["pyr_scale"], p["levels"], p["winsize"],
                                                 p["iterations"], p["poly_n"], p["poly_sigma"], 0)
        ours = optical_flow(later, earlier)
        assert_parity("warp_error: Farneback flow vs cv2.calcOpticalFlowFarneback", ours, reference, atol=0.0)
    ours_gray = to_gray_uint8(moving[:3])
    assert_parity("warp_error: grayscale vs cv2.cvtColor(RGB2GRAY)", ours_gray, np.stack(gray), atol=0.0)


def test_backward_warp_parity_with_scipy_map_coordinates():
    rng = np.random.default_rng(3)
    image = smooth_texture(40, 50, seed=3)
    flow = rng.uniform(-3, 3, size=(40, 50, 2)).astype(np.float32)
    ours = backward_warp(image, flow)
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float64)
    coords = [yy + flow[..., 1], xx + flow[..., 0]]
    reference = np.stack([ndimage.map_coordinates(image[..., c], coords, order=1) for c in range(3)], axis=-1)
    inside = (coords[0] >= 0) & (coords[0] <= 39) & (coords[1] >= 0) & (coords[1] <= 49)
    assert_parity("warp_error: cv2.remap backward warp vs scipy map_coordinates", ours[inside], reference[inside],
                  atol=1e-5)


@pytest.mark.parametrize("batch_size", [3, 16])
def test_consecutive_ssim_parity(moving, batch_size):
    video = moving + 0.05 * torch.rand(moving.shape, generator=torch.Generator().manual_seed(2))
    video = video.clamp(0, 1)
    earlier, later = video[:-1], video[1:]
    _, wang = run_metric("tc", video, batch_size=batch_size)
    reference = structural_similarity_index_measure(later, earlier, data_range=1.0, reduction="none")
    assert_parity("tc (mode=wang) vs torchmetrics SSIM of consecutive frames", wang[1:], reference, atol=1e-5)
    _, sk = run_metric("tc", video, batch_size=batch_size, mode="skimage")
    reference = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=-1,
                                       data_range=1.0) for a, b in zip(earlier, later)]
    assert_parity("tc (mode=skimage) vs skimage SSIM of consecutive frames", sk[1:], reference, atol=1e-4)


def test_flicker_score_parity_with_vbench_formula(moving):
    uint8 = np.rint(moving.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    # VBench temporal_flickering: (255 - mean over pairs of mean cv2.absdiff) / 255 on uint8 frames.
    maes = [np.mean(cv2.absdiff(a.astype(np.float32), b.astype(np.float32))) for a, b in zip(uint8, uint8[1:])]
    reference = (255.0 - np.mean(maes)) / 255.0
    video = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255.0
    assert_parity("flicker_score vs VBench temporal flickering", run_metric("flicker_score", video)[0], reference,
                  atol=1e-6)


@pytest.mark.parametrize("name", PAIR_METRICS)
def test_state_carries_across_batches(moving, name):
    ref = moving.flip(0)
    whole, whole_frames = run_metric(name, moving, ref, batch_size=len(moving))
    split, split_frames = run_metric(name, moving, ref, batch_size=3)
    single, _ = run_metric(name, moving, ref, batch_size=1)
    assert split == pytest.approx(whole, rel=1e-6, abs=1e-9) and single == pytest.approx(whole, rel=1e-6, abs=1e-9)
    assert torch.allclose(split_frames, whole_frames, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert math.isnan(run_metric(name, moving[:1])[0])  # one horizon frame: no pair, no value


def test_metrics_sharing_batches_match_separate_runs(moving):
    """The engine hands every metric the same batches; shared pair values must never leak across
    metrics or parameters that define them differently."""
    ref = moving.flip(0)
    specs = [("tc", {}), ("tc_delta", {}), ("tc", {"mode": "skimage"}), ("flicker", {}), ("flicker_score", {}),
             ("flicker_delta", {}), ("warp_error", {}), ("warp_error_delta", {}), ("warp_error", {"flow": "dis"})]
    metrics = [create(name, **params) for name, params in specs]
    for metric in metrics:
        metric.reset()
    for start in range(0, len(moving), 4):
        index = torch.arange(start, min(start + 4, len(moving)))
        batch = FrameBatch("clip", moving[index], ref[index], index + 1, index)
        for metric in metrics:
            metric.update(batch)
    for (name, params), metric in zip(specs, metrics):
        assert metric.compute() == pytest.approx(run_metric(name, moving, ref, **params)[0], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("base", ["tc", "flicker", "warp_error"])
def test_delta_is_prediction_minus_reference(moving, base):
    ref = translating_video(len(moving), step=(1, 0))
    delta, per_frame = run_metric(f"{base}_delta", moving, ref)
    _, pred_frames = run_metric(base, moving)
    _, ref_frames = run_metric(base, ref)
    assert delta == pytest.approx(run_metric(base, moving)[0] - run_metric(base, ref)[0], abs=1e-9)
    assert torch.allclose(per_frame[1:], pred_frames[1:] - ref_frames[1:], atol=1e-9)
    assert run_metric(f"{base}_delta", moving, moving)[0] == 0.0


def test_parameters_are_checked_and_recorded():
    with pytest.raises(UsageError, match="flow"):
        create("warp_error", flow="raft")
    described = create("warp_error").describe()
    assert described["params"]["flow"] == "farneback" and described["params"]["farneback"] == FARNEBACK_PARAMS
    assert create("tc", mode="skimage").describe()["params"]["window_size"] == 7


# ---- graded fixtures (fixtures/generate.py), scored through the engine with --context 4 ------------------

@pytest.fixture(scope="module")
def fixture_runs(fixtures_dir):
    metrics = ["tc", "tc_delta", "flicker_delta", "frozen"]
    return {name: score(fixtures_dir / "preds" / name, fixtures_dir / "refs", metrics,
                        options=ScoreOptions(context=CONTEXT), device="cpu")
            for name in ("frozen_frame", "dropped_frame", "blur_mild")}


def per_frame(pair, metric: str) -> dict[int, float]:
    return {horizon: value for horizon, _, value in pair.per_frame[metric]}


def test_fixtures_frozen_frame_is_flagged_and_others_are_not(fixture_runs):
    assert all(pair.ok for run in fixture_runs.values() for pair in run.pairs)
    frozen = fixture_runs["frozen_frame"]
    assert [pair.values["frozen"] for pair in frozen.pairs] == [1.0] * len(frozen.pairs)
    assert all(pair.values["tc_delta"] > 0.01 for pair in frozen.pairs)  # steadier than the reference
    for name in ("dropped_frame", "blur_mild"):
        assert fixture_runs[name].metrics["frozen"].mean == 0.0
    assert frozen.metrics["tc"].mean > fixture_runs["dropped_frame"].metrics["tc"].mean


def test_fixtures_dropped_frame_is_caught_at_its_horizon(fixture_runs):
    # generate.py removes future frame strength-1: the pair ending at horizon `strength` jumps two steps.
    drop_horizon = PREDICTION_SETS["dropped_frame"][1]
    for pair in fixture_runs["dropped_frame"].pairs:
        tc_delta, flicker_delta = per_frame(pair, "tc_delta"), per_frame(pair, "flicker_delta")
        assert min(tc_delta, key=tc_delta.get) == drop_horizon and tc_delta[drop_horizon] < -0.01
        assert max(flicker_delta, key=flicker_delta.get) == drop_horizon
    for pair in fixture_runs["blur_mild"].pairs:  # blur changes frames, not their timing
        assert min(per_frame(pair, "tc_delta").values()) > -0.01


def test_engine_records_no_value_for_the_first_horizon(fixture_runs):
    pair = fixture_runs["blur_mild"].pairs[0]
    assert min(per_frame(pair, "tc")) == 2 and len(pair.per_frame["tc"]) == pair.frames - 1
    horizons = [row["horizon"] for row in fixture_runs["blur_mild"].metrics["tc"].per_horizon]
    assert horizons == list(range(2, pair.frames + 1))


# ---- float64 tc, Lai et al.'s full occlusion mask, the no-valid-pixel rule ----------------------------

def test_tc_of_a_frozen_clip_is_one_in_float64(fixtures_dir):
    from foresight_eval.io.video import VideoReader

    frame = next(iter(VideoReader(fixtures_dir / "refs" / "clip00.mp4").frames()))
    frozen = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None].expand(6, -1, -1, -1)
    value, per_frame = run_metric("tc", frozen.contiguous())  # float32 SSIM gave 0.9999996 on this frame
    assert abs(value - 1.0) < 1e-9 and float((per_frame[1:] - 1).abs().max()) < 1e-9


def lai_detect_occlusion(fw_flow, bw_flow):
    """Lai et al. 2018's ``detect_occlusion`` (fast_blind_video_consistency, utils.py), transcribed to NumPy:
    occluded where the round trip fails Ruder's check or on a motion boundary of the backward flow. The
    forward flow is brought onto the later frame by the same bilinear resampling as ours (their Resample2d)."""
    height, width = bw_flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    fw_flow_w = cv2.remap(fw_flow, grid_x + bw_flow[..., 0], grid_y + bw_flow[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    magnitude = lambda flow: flow[:, :, 0] ** 2 + flow[:, :, 1] ** 2  # noqa: E731 - their compute_flow_magnitude
    mask1 = magnitude(fw_flow_w + bw_flow) > 0.01 * (magnitude(fw_flow_w) + magnitude(bw_flow)) + 0.5
    # their compute_flow_gradients: float32 differences into float64 arrays
    fx_du, fx_dv, fy_du, fy_dv = np.zeros((4, height, width))
    fx_du[:, :-1] = bw_flow[:, :-1, 0] - bw_flow[:, 1:, 0]
    fx_dv[:-1, :] = bw_flow[:-1, :, 0] - bw_flow[1:, :, 0]
    fy_du[:, :-1] = bw_flow[:, :-1, 1] - bw_flow[:, 1:, 1]
    fy_dv[:-1, :] = bw_flow[:-1, :, 1] - bw_flow[1:, :, 1]
    mask2 = (fx_du**2 + fx_dv**2) + (fy_du**2 + fy_dv**2) > 0.01 * magnitude(bw_flow) + 0.002
    return mask1 | mask2


def test_warp_error_uses_lai_et_al_full_occlusion_mask_on_a_real_clip(fixtures_dir):
    from foresight_eval.io.video import VideoReader

    frames = np.stack(list(VideoReader(fixtures_dir / "refs" / "clip00.mp4").frames())[:6]).astype(np.float32) / 255
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    gray = to_gray_uint8(video)
    ours_lai, ours_consistency, reference = [], [], []
    for i in range(len(video) - 1):
        backward, forward = optical_flow(gray[i + 1], gray[i]), optical_flow(gray[i], gray[i + 1])
        # the sampling positions cv2.remap takes (float32): out of the frame, nothing to compare with
        grid_x, grid_y = np.meshgrid(*(np.arange(size, dtype=np.float32) for size in (gray.shape[2], gray.shape[1])))
        inside = ((grid_x + backward[..., 0] >= 0) & (grid_x + backward[..., 0] <= gray.shape[2] - 1)
                  & (grid_y + backward[..., 1] >= 0) & (grid_y + backward[..., 1] <= gray.shape[1] - 1))
        valid = inside & ~lai_detect_occlusion(forward, backward)
        warped = backward_warp(frames[i], backward)
        squared = np.square(frames[i + 1] - warped).mean(axis=-1)
        reference.append(squared[valid].mean(dtype=np.float64))
        ours_lai.append(float(warp_error(video[i:i + 1], video[i + 1:i + 2])[0]))
        ours_consistency.append(float(warp_error(video[i:i + 1], video[i + 1:i + 2], occlusion="consistency")[0]))
    assert_parity("warp_error: Lai et al. occlusion mask vs transcription of detect_occlusion", ours_lai, reference,
                  1e-12)
    assert ours_lai != ours_consistency  # the motion boundaries matter on real motion
    assert run_metric("warp_error", video)[0] == pytest.approx(np.mean(reference), abs=1e-12)


def test_a_pair_with_no_valid_pixel_is_scored_over_all_pixels(monkeypatch):
    from foresight_eval.metrics import temporal

    rng = np.random.default_rng(0)
    earlier, later = (torch.from_numpy(rng.random((1, 3, 24, 32), dtype=np.float32)) for _ in range(2))
    monkeypatch.setattr(temporal, "valid_flow_mask",
                        lambda backward, forward, occlusion: np.zeros(backward.shape[:2], bool))
    value = float(warp_error(earlier, later)[0])
    backward = optical_flow(to_gray_uint8(later)[0], to_gray_uint8(earlier)[0])
    warped = backward_warp(earlier[0].permute(1, 2, 0).numpy(), backward)
    expected = np.square(later[0].permute(1, 2, 0).numpy() - warped).mean(dtype=np.float64)
    assert math.isfinite(value) and value == pytest.approx(expected, rel=1e-6)
    described = create("warp_error").describe()["params"]
    assert described["occlusion"] == "lai" and described["no_valid_pixel"].startswith("mean squared RGB")


# ---- tc: each frame's SSIM moments computed once, carried across batches ------------------------------

def _float64_ssim_reference(mode: str, earlier: torch.Tensor, later: torch.Tensor) -> list[float]:
    """SSIM of each pair in float64 by the library each mode is named after."""
    if mode == "torchmetrics":
        return structural_similarity_index_measure(later, earlier, data_range=1.0, reduction="none").tolist()
    window = {"skimage": {}, "wang": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}}[mode]
    return [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=-1,
                                  data_range=1.0, **window) for a, b in zip(earlier, later)]


def _force_the_gpu_path(monkeypatch) -> None:
    """tc's GPU path (each frame's moments shared by its two pairs) on the CPU, where ssim over the sequence
    through OpenCV is the faster one."""
    from foresight_eval.metrics import temporal

    monkeypatch.setattr(temporal, "ssim_takes_opencv", lambda frames, **kwargs: False)


@pytest.mark.parametrize("path", ["cpu", "gpu"])
@pytest.mark.parametrize("mode", ["torchmetrics", "wang", "skimage"])
@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_tc_matches_float64_ssim_on_both_paths(moving, mode, batch_size, path, monkeypatch):
    if path == "gpu":
        _force_the_gpu_path(monkeypatch)
    video = (moving[:7] + 0.05 * torch.rand(moving[:7].shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    _, per_frame = run_metric("tc", video, batch_size=batch_size, mode=mode)
    reference = _float64_ssim_reference(mode, video[:-1].double(), video[1:].double())
    assert_parity(f"tc (mode={mode}, {path} path) vs float64 SSIM of consecutive frames", per_frame[1:], reference,
                  atol=1e-9)


def test_tc_after_a_reference_cache_hit_recomputes_the_carried_moments(moving, tmp_path, monkeypatch):
    """A batch read from the cache carries no moments; the next batch, a miss, computes its predecessor's."""
    from foresight_eval.metrics import temporal
    from foresight_eval.metrics.base import RunContext

    _force_the_gpu_path(monkeypatch)
    ref = moving.flip(0)
    uncached, uncached_frames = run_metric("tc_delta", moving, ref, batch_size=4)
    moments_of = []  # frames per call of ssim_moments
    original = temporal.ssim_moments
    monkeypatch.setattr(temporal, "ssim_moments", lambda frames, **kw: moments_of.append(len(frames)) or
                        original(frames, **kw))
    metric = create("tc_delta")
    metric.setup(RunContext(resources={"cache_dir": tmp_path}))
    first_entry: set = set()
    for run in range(2):
        metric.reset()
        moments_of.clear()
        values = []
        for start in range(0, len(moving), 4):  # batches of 4, 4, 2 frames
            index = torch.arange(start, min(start + 4, len(moving)))
            values.append(metric.update(FrameBatch("clip", moving[index], ref[index], index + 1, index)))
            first_entry = first_entry or set(tmp_path.rglob("*.safetensors"))
        assert metric.compute() == pytest.approx(uncached, abs=1e-12)
        assert torch.allclose(torch.cat(values).double(), uncached_frames, atol=1e-12, equal_nan=True)
        for entry in set(tmp_path.rglob("*.safetensors")) - first_entry:  # the second run hits batch 1 only
            entry.unlink()
    assert len(first_entry) == 1
    # second run: the prediction's 3 batches, the reference's batches 2 and 3, and batch 1's last frame alone
    assert sorted(moments_of) == sorted([4, 4, 2, 4, 2, 1])


@pytest.mark.parametrize("components", [2, 3])
def test_short_axis_sums_equal_numpys_bit_for_bit(components):
    """warp_error's sums over a flow's 2 components and RGB's 3 (plane by plane) against NumPy's own
    ``sum(axis=-1)`` / ``mean(axis=-1)``, on values across nine orders of magnitude."""
    from foresight_eval.metrics.temporal import _sum_last

    rng = np.random.default_rng(components)
    shape = (61, 83, components)
    values = np.square(rng.standard_normal(shape) * 10.0 ** rng.integers(-4, 5, size=shape)).astype(np.float32)
    assert np.array_equal(_sum_last(values), values.sum(axis=-1))
    if components == 3:
        assert np.array_equal(_sum_last(values) / 3, values.mean(axis=-1))


@pytest.mark.parametrize("method, occlusion", [("farneback", "lai"), ("dis", "consistency")])
def test_consecutive_opencv_warp_error_equals_the_pairwise_one(moving, method, occlusion):
    """The metric's OpenCV path over a frame sequence (each frame's grayscale image made once) gives the
    pair-by-pair function's values exactly, and through the metric's batches as well."""
    from foresight_eval.metrics.temporal import consecutive_warp_error_opencv

    video = moving[:6]
    pairwise = warp_error(video[:-1], video[1:], method, occlusion)
    assert torch.equal(consecutive_warp_error_opencv(video, method, occlusion), pairwise)
    assert len(consecutive_warp_error_opencv(video[:1], method, occlusion)) == 0
    _, per_frame = run_metric("warp_error", video, batch_size=4, flow=method, occlusion=occlusion, backend="opencv")
    assert torch.equal(per_frame[1:], pairwise)
