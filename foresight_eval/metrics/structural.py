"""Structural similarity (SSIM).

Two documented definitions, selected by the ``mode`` parameter:

* ``wang`` (default): Wang et al. 2004 as torchmetrics computes it: 11x11 Gaussian window, sigma 1.5,
  population (co)variances, the frame reflect-padded by 5 pixels so that the SSIM map covers every pixel.
* ``skimage``: scikit-image's ``structural_similarity`` defaults: 7x7 uniform window, sample
  (co)variances (N / (N - 1)), and only the window positions that lie fully inside the frame.

Both use K1 = 0.01, K2 = 0.03, data range 1 on [0, 1] frames, and average the SSIM map over pixels and
RGB channels. They give different numbers on the same frames (the uniform window weighs its edges as
much as its centre; the border is handled differently), so the mode is part of the result's parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foresight_eval.errors import InputError
from foresight_eval.metrics.base import FrameMetric, MetricInfo
from foresight_eval.metrics.registry import register

SSIM_MODES = {
    "wang": {"window": "gaussian", "window_size": 11, "sigma": 1.5, "sample_covariance": False, "border": "reflect"},
    "skimage": {"window": "uniform", "window_size": 7, "sigma": None, "sample_covariance": True, "border": "valid"},
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
    border: str = "reflect",
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> torch.Tensor:
    """SSIM per frame: (B, C, H, W) pairs in, (B,) out, the mean of the SSIM map over channels and pixels.

    ``border="reflect"`` pads the frames (reflection) so the map covers every pixel; ``"valid"`` keeps
    only window positions fully inside the frame.
    """
    batch, channels, height, width = pred.shape
    if height < window_size or width < window_size:
        raise InputError(f"frames of {height}x{width} are smaller than the {window_size}x{window_size} SSIM window")
    w = _window_1d(window, window_size, sigma, pred.dtype, pred.device)
    if border == "reflect":
        pad = (window_size - 1) // 2
        pred, ref = (F.pad(x, (pad, pad, pad, pad), mode="reflect") for x in (pred, ref))
    # One separable, grouped convolution over all five moment images at once, written straight into a
    # channels-last buffer: that layout takes oneDNN's depthwise kernels on CPU, several times faster.
    stacked = torch.empty((batch, 5 * channels, *pred.shape[-2:]), dtype=pred.dtype, device=pred.device,
                          memory_format=torch.channels_last)
    moments = stacked.split(channels, dim=1)
    moments[0].copy_(pred)
    moments[1].copy_(ref)
    torch.mul(pred, pred, out=moments[2])
    torch.mul(ref, ref, out=moments[3])
    torch.mul(pred, ref, out=moments[4])
    groups = stacked.shape[1]
    stacked = F.conv2d(stacked, w.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    stacked = F.conv2d(stacked, w.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    mu_x, mu_y, xx, yy, xy = stacked.split(channels, dim=1)
    scale = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # In-place arithmetic: these maps are the largest temporaries of a scoring run.
    mu_xy, mu_x2, mu_y2 = mu_x * mu_y, mu_x.square(), mu_y.square()
    # Rounding can make E[x^2] - E[x]^2 slightly negative on flat regions; a variance is never negative.
    variances = (xx - mu_x2).clamp_(min=0).add_((yy - mu_y2).clamp_(min=0)).mul_(scale)
    covariance = (xy - mu_xy).mul_(scale)
    numerator = mu_xy.mul_(2).add_(c1).mul_(covariance.mul_(2).add_(c2))
    ssim_map = numerator.div_(mu_x2.add_(mu_y2).add_(c1).mul_(variances.add_(c2)))
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
