"""Pixel-wise fidelity: PSNR, MSE, MAE. Inputs are frames in [0, 1], so the data range is 1.

``mse`` also takes Physics-IQ's conventions (:mod:`foresight_eval.metrics.physics_iq`): ``downscale`` and
``window_seconds``."""

from __future__ import annotations

import numpy as np
import torch

from foresight_eval.metrics.base import FrameMetric, MetricInfo
from foresight_eval.metrics.physics_iq import WindowedFrameMetric, downscale_u8, to_u8
from foresight_eval.metrics.registry import register


def _per_frame_mean(values: torch.Tensor) -> torch.Tensor:
    # float64 accumulation: PSNR of near-identical frames is sensitive to rounding in the mean.
    return values.flatten(1).double().mean(dim=1)


def mse(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame: (B, C, H, W) pairs in, (B,) float64 out."""
    return _per_frame_mean((pred - ref).square())


def mae(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per frame."""
    return _per_frame_mean((pred - ref).abs())


def psnr(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame in dB; +inf for identical frames (as scikit-image gives)."""
    error = mse(pred, ref)
    return 10.0 * torch.log10(data_range**2 / error)


@register
class PSNR(FrameMetric):
    info = MetricInfo(
        name="psnr",
        description="Peak signal-to-noise ratio per frame, mean over frames; data range 1 on [0, 1] frames",
        direction="higher",
        unit="dB",
    )
    defaults = {"data_range": 1.0}

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return psnr(pred, ref, self.params["data_range"])


@register
class MSE(WindowedFrameMetric):
    info = MetricInfo(name="mse", description="Mean squared error on [0, 1] frames (downscale: of 8-bit frames "
                      "resized by OpenCV, as Physics-IQ; window_seconds: over each clip's first seconds)",
                      direction="lower")

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        factor = self.params["downscale"]
        if factor == 1:
            return mse(pred, ref)
        # Physics-IQ resizes the 8-bit frames, so the small frames are rounded to 8 bits before the error.
        small_pred, small_ref = (downscale_u8(to_u8(frames), factor).astype(np.float64) for frames in (pred, ref))
        error = (small_pred - small_ref).reshape(len(pred), -1) / 255
        return torch.from_numpy(np.square(error).mean(axis=1))


@register
class MAE(FrameMetric):
    info = MetricInfo(name="mae", description="Mean absolute error on [0, 1] frames", direction="lower")

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return mae(pred, ref)
