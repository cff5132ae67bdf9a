"""Structural similarity (SSIM).

The published SSIM conventions, selected by name with the ``mode`` parameter (all use K1 = 0.01,
K2 = 0.03 and, on [0, 1] frames, data range 1 unless ``data_range`` says otherwise):

* ``torchmetrics`` (default): Wang et al. 2004 as torchmetrics computes it: 11x11 Gaussian window,
  sigma 1.5, population (co)variances, the frame reflect-padded by 5 pixels so that the SSIM map covers
  every pixel. Run folders written before the modes had these names recorded this one as ``wang``
  (with ``border: reflect``); :func:`canonical_ssim_params` reads them as ``torchmetrics``.
* ``wang``: the same Gaussian window, only the window positions fully inside the frame (no padding):
  scikit-image with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, and
  common_metrics_on_video_quality's ``calculate_ssim``.
* ``wang-downsample``: Wang's own ``ssim.m`` (2011 version): the frames are first low-pass filtered by an
  f x f box (MATLAB ``imfilter(..., 'symmetric', 'same')``) and subsampled by f = max(1, round(min(H, W) / 256)),
  then ``wang``. Identical to ``wang`` for frames whose short side is below 384 pixels.
* ``skimage``: scikit-image's ``structural_similarity`` defaults: 7x7 uniform window, sample
  (co)variances (N / (N - 1)), only the window positions fully inside the frame.

The SSIM map is averaged over pixels and channels. ``channels=y`` scores the BT.601 luma only
(Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255, MATLAB's ``rgb2ycbcr``, scikit-image's
``rgb2ycbcr`` / 255), as most image-restoration papers report SSIM. The modes give different numbers on
the same frames, so the mode and its expanded definition are part of the result's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.errors import InputError
from foresight_eval.metrics.base import FrameBatch, FrameMetric, MetricInfo, device_constant, over_threads
from foresight_eval.metrics.graphs import GraphedFunction
from foresight_eval.metrics.registry import register

_GAUSSIAN = {"window": "gaussian", "window_size": 11, "sigma": 1.5, "sample_covariance": False}
SSIM_MODES = {
    "torchmetrics": {**_GAUSSIAN, "border": "reflect", "downsample": False},
    "wang": {**_GAUSSIAN, "border": "valid", "downsample": False},
    "wang-downsample": {**_GAUSSIAN, "border": "valid", "downsample": True},
    "skimage": {"window": "uniform", "window_size": 7, "sigma": None, "sample_covariance": True, "border": "valid",
                "downsample": False},
}
DEFAULT_SSIM_MODE = "torchmetrics"
SSIM_CHANNELS = ("rgb", "y")
# The parameters of every SSIM-based metric (ssim, tc, tc_delta), and their allowed values.
SSIM_DEFAULTS = {"mode": DEFAULT_SSIM_MODE, "channels": "rgb", "k1": 0.01, "k2": 0.03, "data_range": 1.0}
SSIM_CHOICES = {"mode": tuple(SSIM_MODES), "channels": SSIM_CHANNELS}
# ITU-R BT.601 luma of [0, 1] RGB, offset and scaled to [16, 235] / 255 as MATLAB's rgb2ycbcr.
BT601_LUMA = (65.481 / 255, 128.553 / 255, 24.966 / 255)
BT601_OFFSET = 16 / 255


def canonical_ssim_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded SSIM parameter set under today's mode names: before the modes were named after their
    references, ``mode: wang`` meant the reflect-padded window that is now ``torchmetrics`` (its
    record says ``border: reflect``, which today's ``wang`` never has)."""
    params = dict(params)
    if params.get("mode") == "wang" and params.get("border") == "reflect":
        params["mode"] = "torchmetrics"
    if "border" in params:  # an expanded SSIM record from before downsampling existed
        params.setdefault("downsample", False)
    return params


def ssim_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`ssim` for an SSIM metric's parameters."""
    return {**SSIM_MODES[params["mode"]], "channels": params["channels"], "k1": params["k1"], "k2": params["k2"],
            "data_range": params["data_range"]}


def luma(frames: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of [0, 1] RGB frames: (B, 3, H, W) in, (B, 1, H, W) out, in [16/255, 235/255]."""
    weights = device_constant(BT601_LUMA, frames.dtype, frames.device).view(1, 3, 1, 1)
    return (frames * weights).sum(dim=1, keepdim=True).add_(BT601_OFFSET)


def wang_downsample(frames: torch.Tensor) -> torch.Tensor:
    """The automatic downsampling of Wang's ``ssim.m``: f = max(1, round(min(H, W) / 256)) (MATLAB rounds
    halves away from zero); an f x f box filter with symmetric padding, MATLAB's kernel centre
    floor((f + 1) / 2), then every f-th pixel from the first. (B, C, H, W) in, (B, C, ceil(H/f), ceil(W/f)) out."""
    factor = max(1, math.floor(min(frames.shape[-2:]) / 256 + 0.5))
    if factor == 1:
        return frames
    before = (factor + 1) // 2 - 1
    after = factor - 1 - before

    def symmetric(x: torch.Tensor, dim: int) -> torch.Tensor:  # MATLAB 'symmetric': mirrored, edge included
        size = x.shape[dim]
        parts = [x.narrow(dim, 0, before).flip(dim), x, x.narrow(dim, size - after, after).flip(dim)]
        return torch.cat([part for part in parts if part.shape[dim]], dim=dim)

    padded = symmetric(symmetric(frames, -2), -1)
    # Box filter evaluated only where it is kept: windows starting every f pixels of the padded frame.
    return F.avg_pool2d(padded, kernel_size=factor, stride=factor)


def _window_1d(window: str, size: int, sigma: float | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if window == "uniform":
        return torch.full((size,), 1.0 / size, dtype=dtype, device=device)
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _separable_filter(images: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Each channel of (B, C, H, W) filtered by the separable window ``w`` (1-D), valid positions only:
    (B, C, H - k + 1, W - k + 1) out. float64 on the CPU goes through OpenCV's ``sepFilter2D`` (PyTorch has
    no vectorised float64 depthwise convolution on the CPU: 15-25x slower; the results agree to 1e-15);
    everything else is one grouped convolution per direction, in the input's memory layout."""
    size = w.numel()
    if images.device.type == "cpu" and images.dtype == torch.float64:
        batch, channels, height, width = images.shape
        kernel, images = w.numpy(), images.contiguous()
        out = torch.empty((batch, channels, height - size + 1, width - size + 1), dtype=images.dtype)
        source, target = images.numpy(), out.numpy()
        lo, hi_y, hi_x = (size - 1) // 2, height - size // 2, width - size // 2

        def filter_image(index: int) -> None:  # the border pixels OpenCV adds are cropped: only valid positions remain
            b, c = divmod(index, channels)
            target[b, c] = cv2.sepFilter2D(source[b, c], -1, kernel, kernel)[lo:hi_y, lo:hi_x]

        over_threads(filter_image, range(batch * channels))  # one image per thread at a time (OpenCV frees the GIL)
        return out
    groups = images.shape[1]
    images = F.conv2d(images, w.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    return F.conv2d(images, w.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)


def _ssim_mean(mu_x: torch.Tensor, mu_y: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor, xy: torch.Tensor, *,
               window_size: int, sample_covariance: bool, k1: float, k2: float, data_range: float) -> torch.Tensor:
    """The SSIM map from the filtered moments (means, means of squares and of the product), averaged per
    frame: (B,) out. Overwrites ``xy`` and its own temporaries."""
    scale = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # In-place arithmetic: these maps are the largest temporaries of a scoring run.
    mu_xy, mu_x2, mu_y2 = mu_x * mu_y, mu_x.square(), mu_y.square()
    # Rounding can make E[x^2] - E[x]^2 slightly negative on flat regions; a variance is never negative.
    variances = (xx - mu_x2).clamp_(min=0).add_((yy - mu_y2).clamp_(min=0)).mul_(scale)
    covariance = xy.sub_(mu_xy).mul_(scale)
    numerator = mu_xy.mul_(2).add_(c1).mul_(covariance.mul_(2).add_(c2))
    ssim_map = numerator.div_(mu_x2.add_(mu_y2).add_(c1).mul_(variances.add_(c2)))
    return ssim_map.flatten(1).mean(dim=1)


def _prepare(frames: torch.Tensor, *, window_size: int, border: str, downsample: bool,
             channels: str) -> torch.Tensor:
    """The images SSIM's windows run over: luma (``channels="y"``), downsampled, reflect-padded."""
    if channels == "y":
        frames = luma(frames)
    if downsample:
        frames = wang_downsample(frames)
    height, width = frames.shape[-2:]
    if height < window_size or width < window_size:
        raise InputError(f"frames of {height}x{width} are smaller than the {window_size}x{window_size} SSIM window")
    if border == "reflect":
        pad = (window_size - 1) // 2
        frames = F.pad(frames, (pad, pad, pad, pad), mode="reflect")
    return frames


def ssim(
    pred: torch.Tensor,
    ref: torch.Tensor,
    *,
    window: str = "gaussian",
    window_size: int = 11,
    sigma: float | None = 1.5,
    sample_covariance: bool = False,
    border: str = "reflect",
    downsample: bool = False,
    channels: str = "rgb",
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> torch.Tensor:
    """SSIM per frame: (B, C, H, W) pairs in, (B,) out, the mean of the SSIM map over channels and pixels.

    ``border="reflect"`` pads the frames (reflection) so the map covers every pixel; ``"valid"`` keeps
    only window positions fully inside the frame. ``downsample`` applies :func:`wang_downsample` first;
    ``channels="y"`` scores the BT.601 luma only. Float32 and float64 frames on the CPU go through
    OpenCV frame by frame (:func:`_ssim_opencv`), anything else through PyTorch (:func:`_ssim_torch`):
    the two agree to float rounding (``tests/test_pixel_cpu.py``).
    """
    kwargs = {"window": window, "window_size": window_size, "sigma": sigma, "sample_covariance": sample_covariance,
              "border": border, "downsample": downsample, "channels": channels, "k1": k1, "k2": k2,
              "data_range": data_range}
    return (_ssim_opencv if ssim_takes_opencv(pred, window_size=window_size) else _ssim_torch_graphed)(pred, ref, **kwargs)


def ssim_takes_opencv(frames: torch.Tensor, *, window_size: int = 11) -> bool:
    """Whether :func:`ssim` of these frames goes through OpenCV frame by frame (float32/float64 on the CPU).
    OpenCV centres an even window one pixel off PyTorch's padding (every SSIM mode's window is odd), and its
    sums hold at most 4 channels."""
    return (frames.device.type == "cpu" and frames.dtype in (torch.float32, torch.float64)
            and bool(window_size % 2) and frames.shape[1] <= 4)


def _ssim_torch(pred: torch.Tensor, ref: torch.Tensor, *, window: str, window_size: int, sigma: float | None,
                sample_covariance: bool, border: str, downsample: bool, channels: str, k1: float, k2: float,
                data_range: float) -> torch.Tensor:
    """:func:`ssim` as batch-wide PyTorch operations (the GPU path)."""
    pred, ref = (_prepare(x, window_size=window_size, border=border, downsample=downsample, channels=channels)
                 for x in (pred, ref))
    batch, n_channels = pred.shape[:2]
    w = _window_1d(window, window_size, sigma, pred.dtype, pred.device)
    # One separable, grouped convolution over all five moment images at once, written straight into its input
    # buffer: channels-last on the CPU, where that layout takes oneDNN's depthwise kernels, several times
    # faster. On a GPU, contiguous takes PyTorch's own depthwise kernels instead of cuDNN's channels-last ones:
    # the ssim metric's kernels per default-suite run on an H200 (3 x 32 frame pairs of 640x360), 50 -> 18 ms.
    layout = torch.channels_last if pred.device.type == "cpu" else torch.contiguous_format
    stacked = torch.empty((batch, 5 * n_channels, *pred.shape[-2:]), dtype=pred.dtype, device=pred.device,
                          memory_format=layout)
    moments = stacked.split(n_channels, dim=1)
    moments[0].copy_(pred)
    moments[1].copy_(ref)
    torch.mul(pred, pred, out=moments[2])
    torch.mul(ref, ref, out=moments[3])
    torch.mul(pred, ref, out=moments[4])
    mu_x, mu_y, xx, yy, xy = _separable_filter(stacked, w).split(n_channels, dim=1)
    return _ssim_mean(mu_x, mu_y, xx, yy, xy, window_size=window_size, sample_covariance=sample_covariance,
                      k1=k1, k2=k2, data_range=data_range)


# About 25 operations a batch (window, padding, moments, one grouped convolution each way, the map's formula),
# each costing the scoring thread more than its kernel costs the GPU on small frames: on a GPU replayed from a
# CUDA graph once a shape repeats (benchmarks/RESULTS.md, issue 17's fifteenth session).
_ssim_torch_graphed = GraphedFunction(_ssim_torch)


def _ssim_opencv(pred: torch.Tensor, ref: torch.Tensor, *, window: str, window_size: int, sigma: float | None,
                 sample_covariance: bool, border: str, downsample: bool, channels: str, k1: float, k2: float,
                 data_range: float) -> torch.Tensor:
    """:func:`ssim` on the CPU, one frame at a time, with OpenCV: the formula of :func:`_ssim_mean`, with the
    variances filtered and clamped at 0 as their sum (the only way the formula uses them).

    Why OpenCV: its separable filter (SIMD) on a frame's (H, W, C) images costs a fraction of PyTorch's
    depthwise ``conv2d`` on the CPU, and its elementwise kernels, run on one frame's maps while they are still
    in cache and written into reused buffers, about half of PyTorch's batch-wide passes over (B, C, H, W) maps
    (``benchmarks/RESULTS.md``, "Pixel metrics on the CPU"). ``border="reflect"`` is OpenCV's
    ``BORDER_REFLECT_101`` (PyTorch's "reflect" padding), so the frames are not padded here. The frames are
    split over PyTorch's number of threads: OpenCV releases the GIL, and one frame's work is too small for
    OpenCV's own threads to pay (the same time on one thread as on two)."""
    dtype = pred.dtype
    kernel = _window_1d(window, window_size, sigma, dtype, pred.device).numpy()
    # (B, H, W, C) arrays (no copy for channels-last frames, as the engine's), (B, H, W) for one channel.
    pred, ref = (_prepare(x, window_size=window_size, border="valid", downsample=downsample, channels=channels)
                 .permute(0, 2, 3, 1).squeeze(3).contiguous().numpy() for x in (pred, ref))
    scale = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    crop = (window_size - 1) // 2 if border == "valid" else 0  # "valid": the map's pixels whose window fits

    def frame_means(frames: slice) -> np.ndarray:
        return _opencv_ssim_means(pred[frames], ref[frames], kernel=kernel, crop=crop, scale=scale, c1=c1, c2=c2)

    # One contiguous run of frames per thread (the buffers are reused within a run).
    bounds = np.linspace(0, len(pred), max(1, min(torch.get_num_threads(), len(pred))) + 1).astype(int)
    parts = over_threads(frame_means, [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    return torch.from_numpy(np.concatenate(parts)).to(dtype)


def _opencv_ssim_means(pred: np.ndarray, ref: np.ndarray, *, kernel: np.ndarray, crop: int, scale: float,
                       c1: float, c2: float) -> np.ndarray:
    """The mean SSIM map of each (H, W[, C]) frame pair of ``pred`` and ``ref``, filtered by the separable
    ``kernel`` with reflected borders, the map cropped by ``crop`` pixels on each side: (B,) float64."""
    height, width = pred.shape[1:3]
    rows, cols = slice(crop, height - crop), slice(crop, width - crop)
    # Reused for every frame: the four filtered moments, the product of the means and one product image.
    buffers = np.empty((6, *pred.shape[1:]), dtype=pred.dtype)
    product = buffers[5]

    def filtered(image: np.ndarray, slot: int) -> np.ndarray:
        return cv2.sepFilter2D(image, -1, kernel, kernel, dst=buffers[slot],
                               borderType=cv2.BORDER_REFLECT_101)[rows, cols]

    values = np.empty(len(pred))
    for index, (x, y) in enumerate(zip(pred, ref)):
        mu_x, mu_y = filtered(x, 0), filtered(y, 1)
        # The formula needs the variances only as their sum: E[x^2 + y^2] is one filter instead of two.
        cv2.multiply(x, x, dst=product)
        squares = filtered(cv2.accumulateSquare(y, product), 2)
        xy = filtered(cv2.multiply(x, y, dst=product), 3)
        mu_xy = cv2.multiply(mu_x, mu_y, dst=buffers[4][rows, cols])
        means_squared = cv2.add(cv2.multiply(mu_x, mu_x, dst=mu_x), cv2.multiply(mu_y, mu_y, dst=mu_y), dst=mu_x)
        # Rounding can make E[x^2 + y^2] - mu_x^2 - mu_y^2 slightly negative on flat regions; variances never are.
        variances = cv2.max(cv2.subtract(squares, means_squared, dst=squares), 0, dst=squares)
        # The covariance is a difference of near-equal numbers: subtracted on its own, as addWeighted would
        # add C2 to one of them first (rounding at their magnitude: 2x the float32 error of the PyTorch path).
        covariance = cv2.subtract(xy, mu_xy, dst=xy)
        contrast_num = cv2.addWeighted(covariance, 2 * scale, covariance, 0, c2, dst=covariance)
        contrast_den = cv2.addWeighted(variances, scale, variances, 0, c2, dst=variances)
        luminance_num = cv2.addWeighted(mu_xy, 2, mu_xy, 0, c1, dst=mu_xy)
        luminance_den = cv2.addWeighted(means_squared, 1, means_squared, 0, c1, dst=means_squared)
        numerator = cv2.multiply(luminance_num, contrast_num, dst=luminance_num)
        denominator = cv2.multiply(luminance_den, contrast_den, dst=luminance_den)
        # NumPy's division: 0 / 0 is NaN as in PyTorch (k1 = k2 = 0 on black frames), where OpenCV's gives 0.
        with np.errstate(divide="ignore", invalid="ignore"):
            ssim_map = np.divide(numerator, denominator, out=numerator)
        values[index] = sum(cv2.sumElems(ssim_map)) / ssim_map.size
    return values


@dataclass(frozen=True)
class SSIMMoments:
    """What SSIM needs of each frame on its own, for frames compared with several others (consecutive frames
    in ``tc``): the prepared images (luma, downsampled, padded as the mode says) and their windowed means and
    means of squares. Indexing selects frames (views)."""

    images: torch.Tensor  # (B, C, H', W')
    mean: torch.Tensor  # (B, C, H, W): the SSIM map's grid
    mean_square: torch.Tensor

    def __getitem__(self, index: slice) -> SSIMMoments:
        return SSIMMoments(self.images[index], self.mean[index], self.mean_square[index])

    def clone(self) -> SSIMMoments:
        """A copy that keeps none of the tensors it was sliced from alive."""
        return SSIMMoments(self.images.clone(), self.mean.clone(), self.mean_square.clone())


def ssim_moments(frames: torch.Tensor, *, window: str = "gaussian", window_size: int = 11,
                 sigma: float | None = 1.5, border: str = "reflect", downsample: bool = False,
                 channels: str = "rgb", **_formula: Any) -> SSIMMoments:
    """The per-frame part of :func:`ssim` (takes its keyword arguments; those of the formula are ignored here)."""
    images = _prepare(frames, window_size=window_size, border=border, downsample=downsample, channels=channels)
    w = _window_1d(window, window_size, sigma, images.dtype, images.device)
    return SSIMMoments(images, _separable_filter(images, w), _separable_filter(images * images, w))


def ssim_of_moments(x: SSIMMoments, y: SSIMMoments, *, window: str = "gaussian", window_size: int = 11,
                    sigma: float | None = 1.5, sample_covariance: bool = False, k1: float = 0.01, k2: float = 0.03,
                    data_range: float = 1.0, **_preparation: Any) -> torch.Tensor:
    """:func:`ssim` of frames from their :func:`ssim_moments` (same keyword arguments): only the product
    moment is filtered here. (B,) out; equal to :func:`ssim` of the frames up to float rounding."""
    w = _window_1d(window, window_size, sigma, x.images.dtype, x.images.device)
    xy = _separable_filter(x.images * y.images, w)
    return _ssim_mean(x.mean, y.mean, x.mean_square, y.mean_square, xy, window_size=window_size,
                      sample_covariance=sample_covariance, k1=k1, k2=k2, data_range=data_range)


@register
class SSIM(FrameMetric):
    info = MetricInfo(
        name="ssim",
        description="Structural similarity per frame, mean over frames (mode torchmetrics: Gaussian 11x11, "
        "sigma 1.5, reflect-padded; wang: the same, valid region; wang-downsample: Wang's ssim.m; "
        "skimage: scikit-image defaults, uniform 7x7)",
        direction="higher",
    )
    defaults = SSIM_DEFAULTS
    choices = SSIM_CHOICES

    def describe(self) -> dict:
        described = super().describe()
        described["params"].update(SSIM_MODES[self.params["mode"]])
        return described

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        return ssim(batch.pred, batch.ref, **ssim_kwargs(self.params))
