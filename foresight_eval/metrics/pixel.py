"""Pixel-wise fidelity: PSNR, MSE, MAE. Inputs are frames in [0, 1], so the data range is 1.

``mse.reduction`` / ``mae.reduction``: ``mean`` (default) averages the error over a frame's pixels and
channels; ``sum`` adds it up over (C, H, W), OpenSTL's per-frame convention (``np.mean(err, axis=(0, 1)).sum()``
over (B, T, C, H, W)). Either way the clip's value is the mean over its frames.

``psnr.cap``: ``None`` (default) keeps +inf for identical frames; a number caps every frame's PSNR there.
``cap=100`` is common_metrics_on_video_quality's rule "100 if mse < 1e-10": with data range 1,
10 log10(1 / 1e-10) = 100, so capping at 100 changes exactly the frames that rule changes.

On the CPU, frames decoded from 8-bit video (``FrameBatch.pred_decoded`` / ``ref_decoded``) are scored from
their integer differences (:func:`mse_u8`, :func:`mae_u8`): exact, so equal to scikit-image's float64 values,
where the float32 frames agree with those within float32 rounding (about 1e-8 relative); other frames (the
GPU, resized predictions, float arrays) take the float path.

``mse`` also takes Physics-IQ's conventions (:mod:`foresight_eval.metrics.physics_iq`): ``downscale`` and
``window_seconds``.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from foresight_eval.errors import UsageError
from foresight_eval.metrics.base import FrameBatch, FrameMetric, MetricInfo
from foresight_eval.metrics.physics_iq import WindowedFrameMetric, downscale_u8, to_u8
from foresight_eval.metrics.registry import register

REDUCTIONS = ("mean", "sum")


def _per_frame(values: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    # float64 accumulation: PSNR of near-identical frames is sensitive to rounding in the mean.
    flat = values.flatten(1).double()
    return flat.sum(dim=1) if reduction == "sum" else flat.mean(dim=1)


def mse(pred: torch.Tensor, ref: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error per frame, mean (or sum) over (C, H, W): (B, C, H, W) pairs in, (B,) float64 out."""
    return _per_frame((pred - ref).square(), reduction)


def mae(pred: torch.Tensor, ref: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Absolute error per frame, mean (or sum) over (C, H, W)."""
    return _per_frame((pred - ref).abs(), reduction)


def _per_frame_u8(pred: torch.Tensor, ref: torch.Tensor, norm: int, unit: float, reduction: str) -> torch.Tensor:
    # OpenCV's norm of uint8 images sums the integer differences exactly (integer accumulators, summed in
    # float64, exact below 2^53), in one SIMD pass per frame without a float copy of the frames.
    sums = np.array([cv2.norm(p, r, norm) for p, r in zip(pred.numpy(), ref.numpy())], dtype=np.float64)
    return torch.from_numpy(sums / unit if reduction == "sum" else sums / (unit * math.prod(pred.shape[1:])))


def mse_u8(pred: torch.Tensor, ref: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """:func:`mse` of 8-bit frames, (B, H, W, C) uint8 on the host, taken as x / 255, exactly: (B,) float64."""
    return _per_frame_u8(pred, ref, cv2.NORM_L2SQR, 255.0**2, reduction)


def mae_u8(pred: torch.Tensor, ref: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """:func:`mae` of 8-bit frames, (B, H, W, C) uint8 on the host, taken as x / 255, exactly: (B,) float64."""
    return _per_frame_u8(pred, ref, cv2.NORM_L1, 255.0, reduction)


def psnr_of_mse(error: torch.Tensor, data_range: float = 1.0, cap: float | None = None) -> torch.Tensor:
    """PSNR in dB from the mean squared error per frame; +inf where it is 0, or at most ``cap``."""
    values = 10.0 * torch.log10(data_range**2 / error)
    return values if cap is None else values.clamp_(max=cap)


def psnr(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, cap: float | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame in dB; +inf for identical frames (as scikit-image gives),
    or at most ``cap``."""
    return psnr_of_mse(mse(pred, ref), data_range, cap)


def batch_error(batch: FrameBatch, *, squared: bool, reduction: str = "mean") -> torch.Tensor:
    """The batch's :func:`mse` (``squared``) or :func:`mae` per frame, computed once per batch for every metric
    that asks (psnr and mse): from the decoded 8-bit frames when the batch has both on the CPU (exact),
    else from its float frames."""
    pred, ref = batch.pred_decoded, batch.ref_decoded
    exact = (batch.pred.device.type == "cpu" and pred is not None and ref is not None
             and pred.dtype == ref.dtype == torch.uint8)

    def compute() -> torch.Tensor:
        if exact:
            return (mse_u8 if squared else mae_u8)(pred, ref, reduction)
        return (mse if squared else mae)(batch.pred, batch.ref, reduction)

    return batch.shared(("pixel error", squared, reduction), compute)


@register
class PSNR(FrameMetric):
    info = MetricInfo(
        name="psnr",
        description="Peak signal-to-noise ratio per frame, mean over frames; data range 1 on [0, 1] frames; "
        "cap: none (identical frames give inf) or the value identical frames get",
        direction="higher",
        unit="dB",
    )
    defaults = {"data_range": 1.0, "cap": None}

    def __init__(self, **params: Any):
        super().__init__(**params)
        cap = self.params["cap"]
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap)):
            raise UsageError(f"psnr.cap must be a finite number or null (no cap), got {cap!r}")

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        return psnr_of_mse(batch_error(batch, squared=True), self.params["data_range"], self.params["cap"])


class _PixelError(FrameMetric):
    defaults = {"reduction": "mean"}
    choices = {"reduction": REDUCTIONS}


@register
class MSE(WindowedFrameMetric):
    info = MetricInfo(name="mse", description="Squared error on [0, 1] frames, mean (reduction=mean) or sum "
                      "(reduction=sum, OpenSTL) over each frame's pixels and channels, mean over frames "
                      "(downscale: of 8-bit frames resized by OpenCV, as Physics-IQ; window_seconds: over each "
                      "clip's first seconds)",
                      direction="lower")
    defaults = {**WindowedFrameMetric.defaults, **_PixelError.defaults}
    choices = {**WindowedFrameMetric.choices, **_PixelError.choices}

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        factor = self.params["downscale"]
        if factor == 1:
            return batch_error(batch, squared=True, reduction=self.params["reduction"])
        # Physics-IQ resizes the 8-bit frames, so the small frames are rounded to 8 bits before the error.
        small_pred, small_ref = (downscale_u8(to_u8(frames), factor).astype(np.float64) for frames in (batch.pred, batch.ref))
        squared = np.square((small_pred - small_ref).reshape(len(batch.pred), -1) / 255)
        return torch.from_numpy(squared.sum(axis=1) if self.params["reduction"] == "sum" else squared.mean(axis=1))


@register
class MAE(_PixelError):
    info = MetricInfo(name="mae", description="Absolute error on [0, 1] frames, mean (reduction=mean) or sum "
                      "(reduction=sum, OpenSTL) over each frame's pixels and channels, mean over frames",
                      direction="lower")

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        return batch_error(batch, squared=False, reduction=self.params["reduction"])
