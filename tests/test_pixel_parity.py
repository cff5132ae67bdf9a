"""Parity of PSNR, MSE, MAE, SSIM and LPIPS with scikit-image, torchmetrics and the lpips package."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from foresight_eval.io.clips import open_clip
from foresight_eval.metrics.perceptual import LPIPS_BACKBONES, load_lpips, lpips_distance
from foresight_eval.metrics.pixel import mae, mse, psnr
from foresight_eval.metrics.structural import SSIM_MODES, ssim, wang_downsample
from tests.parity import assert_parity


def random_pairs(rng, n=4, height=48, width=64):
    ref = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    pred = np.clip(ref.astype(int) + rng.integers(-40, 41, size=ref.shape), 0, 255).astype(np.uint8)
    return pred, ref


def fixture_pairs(fixtures_dir, n=6):
    pred = np.stack(list(open_clip(fixtures_dir / "preds" / "blur_strong" / "clip01.mp4").frames())[4:4 + n])
    ref = np.stack(list(open_clip(fixtures_dir / "refs" / "clip01.mp4").frames())[4:4 + n])
    return pred, ref


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(params=["random", "fixture"])
def frame_pairs(request, rng, fixtures_dir):
    return random_pairs(rng) if request.param == "random" else fixture_pairs(fixtures_dir)


def test_psnr_mse_mae_match_scikit_image(frame_pairs):
    pred, ref = frame_pairs
    p, r = to_tensor(pred), to_tensor(ref)
    assert_parity("psnr vs skimage.peak_signal_noise_ratio", psnr(p, r),
                  [peak_signal_noise_ratio(b, a, data_range=255) for a, b in zip(pred, ref)], atol=1e-6)
    assert_parity("mse vs skimage.mean_squared_error", mse(p, r),
                  [mean_squared_error(b / 255.0, a / 255.0) for a, b in zip(pred, ref)], atol=1e-9)
    assert_parity("mae vs numpy", mae(p, r),
                  [np.abs(a / 255.0 - b / 255.0).mean() for a, b in zip(pred, ref)], atol=1e-9)


def test_psnr_of_identical_frames_is_infinite():
    frames = torch.rand(2, 3, 16, 16)
    assert torch.isinf(psnr(frames, frames)).all()


def test_ssim_torchmetrics_mode_matches_torchmetrics(frame_pairs):
    pred, ref = frame_pairs
    p, r = to_tensor(pred), to_tensor(ref)
    reference = [structural_similarity_index_measure(p[i:i + 1], r[i:i + 1], data_range=1.0) for i in range(len(p))]
    assert_parity("ssim mode=torchmetrics vs torchmetrics", ssim(p, r, **SSIM_MODES["torchmetrics"]), reference,
                  atol=1e-5)


def test_ssim_skimage_mode_matches_scikit_image(frame_pairs):
    pred, ref = frame_pairs
    reference = [structural_similarity(b, a, channel_axis=2, data_range=255) for a, b in zip(pred, ref)]
    ours = ssim(to_tensor(pred), to_tensor(ref), **SSIM_MODES["skimage"])
    assert_parity("ssim mode=skimage vs skimage.structural_similarity", ours, reference, atol=1e-4)


def _skimage_wang(a: np.ndarray, b: np.ndarray, **kwargs) -> float:
    """Wang et al.'s Gaussian SSIM over the valid region, as scikit-image documents it."""
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, **kwargs)


def test_ssim_wang_mode_matches_scikit_image_gaussian_weights(frame_pairs):
    pred, ref = frame_pairs
    reference = [_skimage_wang(b, a, channel_axis=2, data_range=255) for a, b in zip(pred, ref)]
    ours = ssim(to_tensor(pred), to_tensor(ref), **SSIM_MODES["wang"])
    assert_parity("ssim mode=wang vs skimage gaussian_weights, sigma 1.5, population covariance", ours, reference,
                  atol=1e-5)


def _matlab_ssim_m_downsample(image: np.ndarray) -> np.ndarray:
    """Wang's ssim.m downsampling, from its MATLAB text, with SciPy: f = round(min(H, W) / 256), MATLAB's
    round (halves away from zero); imfilter(img, ones(f) / f^2, 'symmetric', 'same') is a correlation with
    the kernel centre at floor((f + 1) / 2) (1-based) and mirrored borders (SciPy's 'reflect'); then
    img(1:f:end, 1:f:end)."""
    from scipy.ndimage import correlate

    factor = max(1, int(np.floor(min(image.shape[:2]) / 256 + 0.5)))
    origin = ((factor + 1) // 2 - 1) - factor // 2  # SciPy centres a kernel at size // 2 + origin
    kernel = np.ones((factor, factor, 1)) / factor**2
    filtered = correlate(image.astype(np.float64), kernel, mode="reflect", origin=(origin, origin, 0))
    return filtered[::factor, ::factor]


@pytest.mark.parametrize("size, factor", [((400, 384), 2), ((640, 660), 3)])  # 1.5 -> 2; 2.5 -> 3 (MATLAB's round)
def test_ssim_wang_downsample_mode_matches_ssim_m(rng, size, factor):
    height, width = size
    ref = rng.integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
    pred = np.clip(ref.astype(int) + rng.integers(-60, 61, size=ref.shape), 0, 255).astype(np.uint8)
    reference = [_skimage_wang(_matlab_ssim_m_downsample(b / 255.0), _matlab_ssim_m_downsample(a / 255.0),
                               channel_axis=2, data_range=1.0) for a, b in zip(pred, ref)]
    ours = ssim(to_tensor(pred), to_tensor(ref), **SSIM_MODES["wang-downsample"])
    assert_parity("ssim mode=wang-downsample vs ssim.m downsampling (SciPy) + skimage Gaussian SSIM", ours, reference,
                  atol=1e-5)
    assert wang_downsample(to_tensor(pred)).shape[-2:] == (-(-height // factor), -(-width // factor))


def test_ssim_luma_channel_matches_scikit_image_rgb2ycbcr(frame_pairs):
    from skimage.color import rgb2ycbcr

    pred, ref = frame_pairs
    reference = [_skimage_wang(rgb2ycbcr(b)[..., 0], rgb2ycbcr(a)[..., 0], data_range=255) for a, b in zip(pred, ref)]
    ours = ssim(to_tensor(pred), to_tensor(ref), **SSIM_MODES["wang"], channels="y")
    assert_parity("ssim channels=y (BT.601 luma) vs skimage rgb2ycbcr + SSIM", ours, reference, atol=1e-5)


def test_ssim_modes_differ_on_the_same_frames(rng):
    pred, ref = random_pairs(rng)
    values = {mode: ssim(to_tensor(pred), to_tensor(ref), **SSIM_MODES[mode]) for mode in ("torchmetrics", "wang", "skimage")}
    # torchmetrics and wang differ only in the 5-pixel border (reflect-padded or left out)
    for a, b, gap in (("torchmetrics", "wang", 1e-5), ("torchmetrics", "skimage", 1e-4), ("wang", "skimage", 1e-4)):
        assert (values[a] - values[b]).abs().min() > gap, (a, b)


def test_summed_errors_and_capped_psnr(frame_pairs):
    pred, ref = frame_pairs
    p, r = to_tensor(pred), to_tensor(ref)
    diff = pred / 255.0 - ref / 255.0
    assert_parity("mse reduction=sum vs numpy", mse(p, r, "sum"), np.square(diff).sum(axis=(1, 2, 3)), atol=1e-5)
    assert_parity("mae reduction=sum vs numpy", mae(p, r, "sum"), np.abs(diff).sum(axis=(1, 2, 3)), atol=1e-5)
    assert torch.equal(psnr(p, r, cap=100.0), psnr(p, r))  # a cap above every value changes nothing
    same = torch.rand(3, 3, 16, 16)
    assert psnr(same, same, cap=100.0).tolist() == [100.0] * 3
    assert psnr(same, (same + 1e-6).clamp(max=1), cap=100.0).max() == 100.0  # mse < 1e-10 -> 100, as common_metrics


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_lpips_matches_the_lpips_package_on_the_same_backbone_file(net, lpips_weights, frame_pairs):
    """Both load the seeded random backbone from the temporary $TORCH_HOME: the package through
    torchvision's own cache lookup, ours through foresight_eval.weights."""
    import lpips

    pred, ref = frame_pairs
    p, r = to_tensor(pred), to_tensor(ref)
    reference_model = lpips.LPIPS(net=net, verbose=False)
    ours_model = load_lpips(net, LPIPS_BACKBONES[net].locate())
    assert LPIPS_BACKBONES[net].locate().parent == lpips_weights / "hub" / "checkpoints"
    with torch.inference_mode():
        reference = reference_model(p * 2 - 1, r * 2 - 1).flatten()
        ours = lpips_distance(ours_model, p, r)
    assert_parity(f"lpips net={net} vs lpips package", ours, reference, atol=1e-5)
    assert (ours > 0).all()


def test_lpips_refuses_a_backbone_file_of_another_architecture(lpips_weights, tmp_path):
    from foresight_eval.errors import MetricUnavailable

    wrong = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(MetricUnavailable, match="does not hold torchvision alex weights"):
        load_lpips("alex", wrong)
