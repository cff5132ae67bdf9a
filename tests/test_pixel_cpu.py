"""The CPU paths of the pixel metrics against the paths they replace on the CPU and keep on the GPU: SSIM through
OpenCV frame by frame (``structural._ssim_opencv``) against the batch-wide PyTorch one (``_ssim_torch``),
and PSNR / MSE / MAE from the decoded 8-bit frames (exact integer sums) against exact NumPy integer arithmetic,
scikit-image and the float path. Parity with the references users trust is in ``test_pixel_parity.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from foresight_eval.engine import score
from foresight_eval.metrics.base import FrameBatch
from foresight_eval.metrics.pixel import MAE, MSE, PSNR, batch_error, mae, mae_u8, mse, mse_u8
from foresight_eval.metrics.structural import SSIM_MODES, _ssim_opencv, _ssim_torch, ssim
from tests.parity import assert_parity
from tests.test_pixel_parity import fixture_pairs

FORMULA = {"k1": 0.01, "k2": 0.03, "data_range": 1.0}


def _pairs(rng, n: int, height: int, width: int, flat: bool) -> tuple[np.ndarray, np.ndarray]:
    ref = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    pred = np.clip(ref.astype(int) + rng.integers(-30, 31, size=ref.shape), 0, 255).astype(np.uint8)
    if flat:  # identical flat regions: zero variances, where E[x^2] - E[x]^2 rounds to either side of 0
        pred[:, : height // 2] = ref[:, : height // 2] = 17
    return pred, ref


def _frames(frames: np.ndarray, dtype: torch.dtype, layout: str) -> torch.Tensor:
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).to(dtype).div_(255)  # channels-last, as the engine's
    return tensor.contiguous() if layout == "contiguous" else tensor


# float32: the paths round differently (OpenCV's separable filter, the sum of the variances from one filtered
# E[x^2 + y^2]); the worst case is a flat region, where the variances are differences of near-equal numbers
# and the PyTorch path's own error reaches 1e-6 of the float64 value (8.3e-7 apart measured). float64: both
# filter with OpenCV, the arithmetic differs in order only.
TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-13}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", list(SSIM_MODES))
def test_opencv_ssim_equals_the_torch_path(rng, fixtures_dir, mode, dtype):
    frame_sets = [_pairs(rng, 3, height, width, flat) for height, width, flat in
                  ((48, 64, False), (120, 160, True), (41, 37, False))] + [fixture_pairs(fixtures_dir, n=3)]
    for pred, ref in frame_sets:
        height, width = pred.shape[1:3]
        for layout in ("channels_last", "contiguous"):
            p, r = _frames(pred, dtype, layout), _frames(ref, dtype, layout)
            for channels in ("rgb", "y"):
                kwargs = {**SSIM_MODES[mode], "channels": channels, **FORMULA}
                ours = ssim(p, r, **kwargs)
                assert ours.dtype == dtype and ours.shape == (len(pred),)
                assert_parity(f"ssim mode={mode} {channels} {dtype} {layout} {height}x{width}: OpenCV vs PyTorch",
                              ours, _ssim_torch(p, r, **kwargs), atol=TOLERANCE[dtype])


@pytest.mark.parametrize("mode", ["torchmetrics", "wang", "skimage"])
def test_opencv_ssim_is_as_close_to_float64_as_float32_torch(rng, fixtures_dir, mode):
    """Nothing is lost by the change of path: the float32 OpenCV values are as near the float64 ones as the float32
    PyTorch values, on blurred fixture frames (smooth, small variances) and on frames with flat regions."""
    kwargs = {**SSIM_MODES[mode], "channels": "rgb", **FORMULA}
    for pred, ref in (fixture_pairs(fixtures_dir), _pairs(rng, 3, 150, 200, flat=True)):
        exact = _ssim_torch(_frames(pred, torch.float64, "contiguous"), _frames(ref, torch.float64, "contiguous"),
                            **kwargs)
        p, r = _frames(pred, torch.float32, "channels_last"), _frames(ref, torch.float32, "channels_last")
        opencv_error = (_ssim_opencv(p, r, **kwargs).double() - exact).abs().max()
        torch_error = (_ssim_torch(p, r, **kwargs).double() - exact).abs().max()
        assert opencv_error <= 1.25 * torch_error, (opencv_error, torch_error)


def test_opencv_ssim_keeps_nan_of_zero_constants():
    """k1 = k2 = 0 on black frames is 0 / 0 everywhere: NaN in both paths (OpenCV's own division gives 0)."""
    black = torch.zeros((2, 3, 32, 32)).contiguous(memory_format=torch.channels_last)
    kwargs = {**SSIM_MODES["wang"], "channels": "rgb", "k1": 0.0, "k2": 0.0, "data_range": 1.0}
    assert torch.isnan(ssim(black, black, **kwargs)).all() and torch.isnan(_ssim_torch(black, black, **kwargs)).all()


def assert_relative(name: str, ours, reference, rtol: float) -> None:
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert_parity(f"{name} (relative error)", ours / reference, np.ones_like(reference), atol=rtol)


def _exact(pred: np.ndarray, ref: np.ndarray, power: int, reduction: str) -> np.ndarray:
    diff = np.abs(pred.astype(np.int64) - ref.astype(np.int64)) ** power
    sums = diff.reshape(len(pred), -1).sum(axis=1)  # exact integers
    return sums / 255.0**power / (1 if reduction == "sum" else diff[0].size)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_8bit_errors_are_exact(rng, reduction):
    pred, ref = _pairs(rng, 3, 90, 160, flat=False)
    # The largest error at 1280x720: sums of 255^2 over 2.8e6 values, past any 32-bit accumulator.
    extreme_pred, extreme_ref = np.zeros((1, 720, 1280, 3), np.uint8), np.full((1, 720, 1280, 3), 255, np.uint8)
    for p, r in ((pred, ref), (extreme_pred, extreme_ref)):
        tp, tr = torch.from_numpy(p), torch.from_numpy(r)
        assert_relative(f"mse_u8 {reduction} vs exact integers", mse_u8(tp, tr, reduction), _exact(p, r, 2, reduction),
                        rtol=1e-15)
        assert_relative(f"mae_u8 {reduction} vs exact integers", mae_u8(tp, tr, reduction), _exact(p, r, 1, reduction),
                        rtol=1e-15)
        # the float path of the same frames agrees to float32 rounding of the frames (x / 255)
        fp, fr = _frames(p, torch.float32, "channels_last"), _frames(r, torch.float32, "channels_last")
        assert_relative(f"mse_u8 {reduction} vs the float32 path", mse_u8(tp, tr, reduction), mse(fp, fr, reduction),
                        rtol=1e-6)
        assert_relative(f"mae_u8 {reduction} vs the float32 path", mae_u8(tp, tr, reduction), mae(fp, fr, reduction),
                        rtol=1e-6)


def _batch(pred: np.ndarray, ref: np.ndarray, decoded: bool) -> FrameBatch:
    n = len(pred)
    return FrameBatch("clip", _frames(pred, torch.float32, "channels_last"), _frames(ref, torch.float32, "channels_last"),
                      torch.arange(1, n + 1), torch.arange(n), ref_decoded=torch.from_numpy(ref),
                      pred_decoded=torch.from_numpy(pred) if decoded else None)


def test_metrics_take_the_exact_path_when_the_batch_has_8bit_frames(rng):
    pred, ref = _pairs(rng, 4, 48, 64, flat=False)
    pred[1] = ref[1]  # identical frames: +inf on both paths
    reference = [peak_signal_noise_ratio(b, a, data_range=255) for a, b in zip(pred, ref)]
    batch = _batch(pred, ref, decoded=True)
    psnr_metric, mse_metric, mae_metric = PSNR(), MSE(), MAE(reduction="sum")
    for metric in (psnr_metric, mse_metric, mae_metric):
        metric.reset()
    values = psnr_metric.update(batch)
    assert values[1] == float("inf")
    finite = np.isfinite(reference)
    assert_parity("psnr (decoded 8-bit frames) vs scikit-image", values[finite], np.array(reference)[finite],
                  atol=1e-12)
    # psnr and mse share one computation of the batch's squared errors
    assert mse_metric.update(batch) is batch_error(batch, squared=True)
    assert_parity("mae reduction=sum (decoded 8-bit frames) vs exact integers", mae_metric.update(batch),
                  _exact(pred, ref, 1, "sum"), atol=1e-12)  # sums of about 500
    # Without the prediction's 8-bit frames (a resized prediction), the float path: the same values to 1e-6.
    float_values = PSNR().per_frame(_batch(pred, ref, decoded=False))
    assert_parity("psnr float path vs exact path", float_values[finite], values[finite], atol=1e-5)
    assert not torch.equal(float_values[finite], values[finite])  # the two paths were both taken


def test_scoring_a_video_uses_the_decoded_frames(fixtures_dir):
    """Through the engine on the CPU, PSNR equals scikit-image's on the decoded frames to float64 rounding:
    the exact path (the float32 path is off by the float32 rounding of the frames, 1e-8 dB and more)."""
    from foresight_eval.io.clips import open_clip

    pred_path, ref_path = fixtures_dir / "preds" / "blur_strong" / "clip01.mp4", fixtures_dir / "refs" / "clip01.mp4"
    run = score(pred_path, ref_path, ["psnr"], device="cpu")
    (pair,) = run.pairs
    assert pair.ok, pair.error
    frames = [list(open_clip(path).frames()) for path in (pred_path, ref_path)]
    reference = {index: peak_signal_noise_ratio(b, a, data_range=255) for index, (a, b) in enumerate(zip(*frames))}
    ours = {frame_index: value for _, frame_index, value in pair.per_frame["psnr"]}
    assert_parity("psnr through the engine vs scikit-image on the decoded frames",
                  np.array(list(ours.values())), np.array([reference[index] for index in ours]), atol=1e-10)


def test_cpu_frame_conversion_equals_pytorchs(rng):
    """The engine's one-pass NumPy conversion of 8-bit frames on the CPU gives PyTorch's float32 x / 255, bit for
    bit, for every 8-bit value, in the same (channels-last) layout."""
    from foresight_eval.engine import _to_device

    frames = torch.from_numpy(rng.permutation(np.repeat(np.arange(256, dtype=np.uint8), 9)).reshape(2, 16, 24, 3))
    ours = _to_device(frames, torch.device("cpu"))
    expected = frames.permute(0, 3, 1, 2).float().div_(255.0)
    assert ours.dtype == torch.float32 and torch.equal(ours, expected) and ours.stride() == expected.stride()
