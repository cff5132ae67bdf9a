"""Structural similarity (SSIM).

Two documented definitions, selected by the ``mode`` parameter:

* ``wang`` (default): Wang et al. 2004 as torchmetrics computes it: 11x11 Gaussian window, sigma 1.5,
  population (co)variances.
* ``skimage``: scikit-image's ``structural_similarity`` defaults: 7x7 uniform window and sample
  (co)variances (N / (N - 1)).

Both use K1 = 0.01, K2 = 0.03, data range 1 on [0, 1] frames, keep only the window positions that lie
fully inside the frame, and average the SSIM map over pixels and RGB channels. They give different
numbers on the same frames (the uniform window weighs the window edges as much as its centre), so the
mode is part of the result's parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foresight_eval.errors import InputError
from foresight_eval.metrics.base import FrameMetric, MetricInfo
from foresight_eval.metrics.registry import register

SSIM_MODES = {
    "wang": {"window": "gaussian", "window_size": 11, "sigma": 1.5, "sample_covariance": False},
    "skimage": {"window": "uniform", "window_size": 7, "sigma": None, "sample_covariance": True},
}


def _window_1d(window: str, size: int, sigma: float | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if window == "uniform":
        return torch.full((size,), 1.0 / size, dtype=dtype, device=device)
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def ssim(
    pred: torch.Tensor,
    ref: torch.Tensor,
    *,
    window: str = "gaussian",
    window_size: int = 11,
    sigma: float | None = 1.5,
    sample_covariance: bool = False,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> torch.Tensor:
    """SSIM per frame: (B, C, H, W) pairs in, (B,) out, mean of the SSIM map over channels and valid pixels."""
    batch, channels, height, width = pred.shape
    if height < window_size or width < window_size:
        raise InputError(f"frames of {height}x{width} are smaller than the {window_size}x{window_size} SSIM window")
    w = _window_1d(window, window_size, sigma, pred.dtype, pred.device)
    # One separable, grouped convolution over all five moment images at once.
    stacked = torch.cat([pred, ref, pred * pred, ref * ref, pred * ref], dim=1)
    groups = stacked.shape[1]
    stacked = F.conv2d(stacked, w.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    stacked = F.conv2d(stacked, w.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    mu_x, mu_y, xx, yy, xy = stacked.split(channels, dim=1)
    scale = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    var_x = scale * (xx - mu_x * mu_x)
    var_y = scale * (yy - mu_y * mu_y)
    cov = scale * (xy - mu_x * mu_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


@register
class SSIM(FrameMetric):
    info = MetricInfo(
        name="ssim",
        description="Structural similarity per frame, mean over frames (mode wang: Gaussian 11x11, sigma 1.5; "
        "mode skimage: scikit-image defaults, uniform 7x7)",
        direction="higher",
    )
    defaults = {"mode": "wang", "k1": 0.01, "k2": 0.03, "data_range": 1.0}
    choices = {"mode": tuple(SSIM_MODES)}

    def describe(self) -> dict:
        described = super().describe()
        described["params"].update(SSIM_MODES[self.params["mode"]])
        return described

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        p = self.params
        return ssim(pred, ref, **SSIM_MODES[p["mode"]], k1=p["k1"], k2=p["k2"], data_range=p["data_range"])
