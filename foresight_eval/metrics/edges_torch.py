"""Canny edges in torch ops, for frames already on a GPU: scikit-image's ``feature.canny`` step by step.

scikit-image's Canny (``skimage/feature/_canny.py``, after Canny 1986) on the ``rgb2gray`` luminance:

1. Gaussian smoothing with ``scipy.ndimage.gaussian_filter`` (kernel truncated at 4 sigma, zero padding),
   divided by the same smoothing of an all-ones image, so the border is not darkened;
2. Sobel gradients (``scipy.ndimage.sobel``: [-1, 0, 1] across, [1, 2, 1] along, the edge pixel repeated at
   the border) and their Euclidean magnitude;
3. non-maximum suppression along the gradient direction, with the two neighbours on each side linearly
   interpolated by the gradient's slope (its ``_nonmaximum_suppression_bilinear``), the one-pixel frame
   border excluded and the low threshold applied (in float32, as its Cython signature takes it);
4. hysteresis: 8-connected components of the surviving pixels that hold a pixel >= the high threshold.

Step 4 is a connected-component labelling in scikit-image; here (:func:`hysteresis`) it is iterated binary
dilation of the strong pixels inside the weak ones until nothing changes, which reaches exactly the same
components and runs as a handful of pooling ops per iteration on a GPU, but must ask the GPU whether it has
converged. ``edge_f1`` on a GPU therefore takes steps 1-3 only (:func:`canny_candidates`) and labels the
components on the CPU in its worker processes (``edge_matching.link_edges``), so that its host never waits;
the maps go to them as bits (:func:`pack_candidates`).
Everything runs in float64 by default, as scikit-image does, so the maps agree to the last pixel but for
magnitude ties at the thresholds; ``edge_f1`` asks for float32 (its ``canny_dtype``), 0.94 against 1.50 ms of
H200 time per batch of 16 frames of 640x360, whose maps differed from scikit-image's on up to 8.2e-5 of a dense
camera-like frame's pixels at sigma 2 and on none of the fixtures' (tests/test_edges_torch.py, tests/test_gpu.py).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.metrics.base import conv_per_image, device_constant
from foresight_eval.metrics.edge_matching import STRONG, WEAK

# The bit of each of 8 pixels in a packed byte, first pixel first (NumPy's packbits, bitorder "big").
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)
# skimage.color.rgb2gray: ITU-R BT.709 luma weights on linear values.
RGB2GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)
# Hysteresis checks for convergence after this many dilations, then after twice as many more, and so on up
# to _CHECK_AT_MOST: each check makes the host wait for the GPU, which costs more than a few dilations
# (extra dilations after convergence change nothing).
_CHECK_FIRST, _CHECK_AT_MOST = 8, 64


@functools.lru_cache(maxsize=64)
def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius int(4 sigma + 0.5), normalised to sum 1. Made once per device
    (a copy to the GPU per call would make the host wait for it); shared, never modified."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 / sigma**2 * x * x)
    return (kernel / kernel.sum()).to(device=device, dtype=dtype)


def _separable(image: torch.Tensor, along_rows: torch.Tensor, along_cols: torch.Tensor) -> torch.Tensor:
    """Correlate (B, 1, H, W) with a column kernel then a row kernel, 'valid' (the caller pads)."""
    return conv_per_image(conv_per_image(image, along_rows.view(1, 1, -1, 1)), along_cols.view(1, 1, 1, -1))


def smooth(gray: torch.Tensor, sigma: float) -> torch.Tensor:
    """scikit-image's Canny pre-smoothing of (B, 1, H, W): Gaussian with zero padding over the Gaussian of ones."""
    kernel = _gaussian_kernel(sigma, gray.dtype, gray.device)
    radius = (len(kernel) - 1) // 2
    blurred = _separable(F.pad(gray, (radius,) * 4), kernel, kernel)
    ones = torch.ones_like(gray[:1])
    bleed_over = _separable(F.pad(ones, (radius,) * 4), kernel, kernel) + torch.finfo(gray.dtype).eps
    return blurred / bleed_over


def sobel(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy.ndimage.sobel along rows (axis 0) and columns (axis 1) of (B, 1, H, W), edge pixel repeated."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")  # one pixel: scipy's 'reflect' repeats the edge
    derivative = device_constant((-1.0, 0.0, 1.0), image.dtype, image.device)
    smoothing = device_constant((1.0, 2.0, 1.0), image.dtype, image.device)
    return _separable(padded, derivative, smoothing), _separable(padded, smoothing, derivative)


def _non_maximum(isobel: torch.Tensor, jsobel: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Whether each pixel of (B, H, W) is a local maximum across its edge, with scikit-image's bilinear
    interpolation of the neighbours in the gradient's octant (the caller masks the border)."""
    padded = F.pad(magnitude, (1, 1, 1, 1))
    height, width = magnitude.shape[-2:]

    def at(dx: int, dy: int) -> torch.Tensor:  # magnitude[x + dx, y + dy]
        return padded[:, 1 + dx:1 + dx + height, 1 + dy:1 + dy + width]

    abs_i, abs_j = isobel.abs(), jsobel.abs()
    same_sign = ((isobel >= 0) & (jsobel >= 0)) | ((isobel <= 0) & (jsobel <= 0))
    # Four cases, each with its weight and the (near, diagonal) neighbour on either side.
    rows_major = torch.where(same_sign, abs_i > abs_j, abs_i >= abs_j)
    larger, smaller = torch.where(rows_major, abs_i, abs_j), torch.where(rows_major, abs_j, abs_i)
    w = smaller / torch.where(larger > 0, larger, torch.ones_like(larger))
    n1_1 = torch.where(rows_major, torch.where(same_sign, at(1, 0), at(-1, 0)), at(0, 1))
    n2_1 = torch.where(rows_major, torch.where(same_sign, at(-1, 0), at(1, 0)), at(0, -1))
    n1_2 = torch.where(same_sign, at(1, 1), at(-1, 1))
    n2_2 = torch.where(same_sign, at(-1, -1), at(1, -1))
    return ((n1_2 * w + n1_1 * (1.0 - w)) <= magnitude) & ((n2_2 * w + n2_1 * (1.0 - w)) <= magnitude)


def hysteresis(weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """The 8-connected components of ``weak`` (B, H, W) bool that contain a ``strong`` pixel, by
    iterated 3x3 dilation of ``strong`` inside ``weak`` until it stops growing."""
    grown, weak_f = (strong & weak).float().unsqueeze(1), weak.float().unsqueeze(1)
    dilations = _CHECK_FIRST
    while True:
        before = grown
        for _ in range(dilations):
            grown = F.max_pool2d(grown, 3, stride=1, padding=1) * weak_f
        if torch.equal(grown, before):
            return grown[:, 0] > 0
        dilations = min(2 * dilations, _CHECK_AT_MOST)


def gray(frames: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """skimage.color.rgb2gray of (B, 3, H, W) RGB in [0, 1]: (B, 1, H, W) in ``dtype``."""
    weights = device_constant(RGB2GRAY_WEIGHTS, dtype, frames.device).view(1, 3, 1, 1)
    return (frames.to(dtype) * weights).sum(dim=1, keepdim=True)


def canny(frames: torch.Tensor, *, sigma: float = 1.0, low_threshold: float = 0.1, high_threshold: float = 0.2,
          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Canny edges of (B, 3, H, W) RGB frames in [0, 1], as ``skimage.feature.canny(rgb2gray(frame), sigma,
    low_threshold, high_threshold)`` per frame: (B, H, W) bool on the frames' device."""
    candidates = canny_candidates(frames, sigma=sigma, low_threshold=low_threshold, high_threshold=high_threshold,
                                  dtype=dtype)
    return hysteresis(candidates >= WEAK, candidates == STRONG)


def canny_candidates(frames: torch.Tensor, *, sigma: float = 1.0, low_threshold: float = 0.1,
                     high_threshold: float = 0.2, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Canny's steps 1-3 of (B, 3, H, W) RGB frames in [0, 1]: (B, H, W) uint8 on the frames' device, ``WEAK``
    where a pixel survives non-maximum suppression and the low threshold, ``STRONG`` where it also reaches the
    high one, else 0. No step waits for the host, so a GPU's queue keeps running; step 4 (:func:`hysteresis`
    here, ``edge_matching.link_edges`` on the CPU) makes them edges."""
    if low_threshold > high_threshold:
        raise ValueError("low_threshold should be lower than high_threshold")
    smoothed = smooth(gray(frames, dtype), sigma)
    isobel, jsobel = (g[:, 0] for g in sobel(smoothed))
    magnitude = torch.sqrt(isobel * isobel + jsobel * jsobel)
    # scikit-image's Cython NMS takes the low threshold as a C float; the high one stays a double.
    low = float(np.float32(low_threshold)) or 1e-14
    interior = torch.zeros_like(magnitude, dtype=torch.bool)
    interior[:, 1:-1, 1:-1] = True
    weak = interior & (magnitude >= low) & _non_maximum(isobel, jsobel, magnitude)
    return weak.to(torch.uint8) + (weak & (magnitude >= high_threshold)).to(torch.uint8)


def pack_candidates(candidates: torch.Tensor) -> torch.Tensor:
    """:func:`canny_candidates` (B, H, W) as bits, on their device: (B, 2, H, ceil(W / 8)) uint8, plane 0 the
    candidates (``WEAK`` or ``STRONG``), plane 1 the strong ones, each row packed as ``np.packbits(row)``
    packs it (the row padded with zeros to whole bytes); ``edge_matching.unpack_candidates`` reverses it.

    A quarter of the bytes to copy to the host and to hand to the worker processes, whose hand-over pickles
    each task's maps and pipes them to the worker: the run's own process spent 0.31 ms of CPU per task with
    two 640x360 maps and 0.09 ms with them packed (2-core machine, 256 no-op tasks). On the H200's host the
    run's time did not change (0.622 s both, the issue's clip shape), its CPUs' busy time fell from 6.06 to
    5.97 s (benchmarks/RESULTS.md, issue 17's seventeenth session).

    >>> pack_candidates(torch.tensor([[[0, 1, 2, 0, 0, 0, 0, 0, 2]]], dtype=torch.uint8)).tolist()
    [[[[96, 128]], [[32, 128]]]]
    """
    planes = torch.stack([candidates >= WEAK, candidates == STRONG], dim=1).to(torch.uint8)
    planes = F.pad(planes, (0, -planes.shape[-1] % 8))
    bits = device_constant(_BIT_WEIGHTS, torch.uint8, candidates.device)
    return (planes.unflatten(-1, (-1, 8)) * bits).sum(dim=-1, dtype=torch.uint8)
