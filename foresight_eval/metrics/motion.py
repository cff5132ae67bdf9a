"""Motion metrics: is motion where it should be?

Motion-mask IoU (Physics-IQ, Motamed et al. 2025), no annotations needed
--------------------------------------------------------------------------
Each clip's motion masks follow Physics-IQ's ``binary_mask_generator.py`` step by step. On the CPU
they are its OpenCV calls themselves; on a GPU, a torch transcription on 8-bit values that matches them
except where OpenCV's fused multiply-add in the running background breaks a rounding tie the other
way (4e-4 of the pixels of a fixture clip; tests/test_spatial_metrics.py measures it):

1. grayscale (OpenCV ``BGR2GRAY`` fixed point: 0.299 R + 0.587 G + 0.114 B, rounded), then a 5x5
   Gaussian blur (OpenCV's ``sigma=0`` kernel, binomial [1 4 6 4 1] / 16, reflected border);
2. a running-average background, ``bg = 0.3 * gray + 0.7 * bg`` (``accumulateWeighted``, alpha 0.3),
   seeded by the first frame, whose mask is empty;
3. motion where ``|gray - round(bg)| > threshold`` (default 10 of 255);
4. morphological opening, then closing, with a 5x5 square.

The scoring engine hands metrics only the frames after ``--context``, so the background is seeded by
the first scored frame (horizon 1), whose masks are empty on both sides, as Physics-IQ's first frame.
By default these metrics compare the masks at full resolution over every frame. Physics-IQ's own pipeline
also sends the masks through a lossy mp4v video, compares them at 1/4 resolution and only over the first
5 seconds: the parameters ``roundtrip="mp4v"``, ``downscale=4`` and ``window_seconds=5`` (the ``physics-iq``
profile) do the same, to its published numbers (:mod:`foresight_eval.metrics.physics_iq`, docs/physics-iq.md).

* ``motion_iou`` (Physics-IQ "Spatial IoU"): each side's masks are OR-ed over time into one map of
  where motion happened; IoU of the two maps. Per-frame rows hold the value over horizons 1..h, so the
  clip's value is its last row.
* ``motion_iou_st`` ("Spatiotemporal IoU"): IoU of the masks frame by frame, mean over frames.
* ``motion_iou_weighted`` ("Weighted spatial IoU"): each side's masks averaged over time (the fraction
  of frames with motion at each pixel), then sum(min) / sum(max); per-frame rows over horizons 1..h.

Two empty masks agree perfectly: IoU 1 (as in Physics-IQ).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.device_copies import to_device_async
from foresight_eval.feature_cache import ReferenceCache, frame_cache_on, reference_sha256, tensor_sha256
from foresight_eval.metrics.base import (FrameBatch, MetricInfo, RunContext, conv_per_image, device_constant,
                                         when_on_host)
from foresight_eval.metrics.graphs import GraphedFunction
from foresight_eval.metrics.physics_iq import (
    PIPELINE_DEFAULTS, Mp4vRoundTrip, WindowedFrameMetric, clip_fps, downscale_u8,
)
from foresight_eval.metrics.registry import register

# --- IoU cores --------------------------------------------------------------------------------------


def binary_iou(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """IoU of masks, set where nonzero (bool masks, or counts of masks): (B, H, W) pairs in, (B,) float64 out;
    two empty masks give 1."""
    pred, ref = pred.flatten(1).bool(), ref.flatten(1).bool()
    # int32 counts: summing bools into torch's default int64 is many times slower on the CPU.
    intersection = (pred & ref).sum(dim=1, dtype=torch.int32).double()
    union = (pred | ref).sum(dim=1, dtype=torch.int32).double()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def weighted_iou(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """sum(min) / sum(max) of non-negative maps: (B, H, W) pairs in, (B,) out; two zero maps give 1."""
    pred, ref = pred.flatten(1).double(), ref.flatten(1).double()
    low, high = torch.minimum(pred, ref).sum(dim=1), torch.maximum(pred, ref).sum(dim=1)
    return torch.where(high > 0, low / high.clamp(min=1e-300), torch.ones_like(high))


# On a GPU the comparisons and the running counts (about ten small operations each per batch, more host time
# than GPU time) are replayed from CUDA graphs once a shape repeats (benchmarks/RESULTS.md, issue 17's
# fifteenth session).
_binary_iou_graphed = GraphedFunction(binary_iou)
_weighted_iou_graphed = GraphedFunction(weighted_iou)


# --- Physics-IQ motion masks -----------------------------------------------------------------------

_BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _round_half_even(x: torch.Tensor) -> torch.Tensor:
    """Round non-negative values to the nearest integer, ties to even (as OpenCV's cvRound).

    Adding and removing 2**52 (float64) or 2**23 (float32) leaves the rounding to the FPU's own
    round-to-nearest-even; it is exact below that bound and, unlike torch.round/floor on this CPU
    build, costs no thread wake-ups on small tensors."""
    magic = 2.0**52 if x.dtype == torch.float64 else 2.0**23
    return (x + magic) - magic


def _gray_u8(frames: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit RGB -> gray in fixed point (weights scaled by 2**15, rounded): (B, 3, H, W) -> (B, 1, H, W)."""
    q = _round_half_even(frames.clamp(0, 1) * 255).to(torch.int32)
    gray = (q[:, 0] * 9798 + q[:, 1] * 19235 + q[:, 2] * 3735 + (1 << 14)) >> 15
    return gray.unsqueeze(1).float()


def _blur_u8(gray: torch.Tensor) -> torch.Tensor:
    """OpenCV ``GaussianBlur(gray, (5, 5), 0)`` on 8-bit values: binomial kernel, reflect-101 border, round."""
    kernel = device_constant(_BINOMIAL_5, torch.float32, gray.device)
    padded = F.pad(gray, (2, 2, 2, 2), mode="reflect")  # torch's "reflect" is OpenCV's BORDER_REFLECT_101
    summed = conv_per_image(conv_per_image(padded, kernel.view(1, 1, 1, 5)), kernel.view(1, 1, 5, 1))
    # Integer sums up to 65280 are exact in float32 (not in cuDNN's TF32, which conv_per_image keeps out on a
    # GPU: the row sums, up to 4080, lose their last bit there); OpenCV's fixed point rounds half up.
    return ((summed.to(torch.int32) + 128) >> 8).float()


def _morphology(mask: torch.Tensor, size: int, op: str) -> torch.Tensor:
    """Binary opening or closing with a size x size square (pixels outside the frame never count)."""
    def dilate(x: torch.Tensor) -> torch.Tensor:  # a square is separable: a row max, then a column max
        x = F.max_pool2d(x, (1, size), stride=1, padding=(0, size // 2))
        return F.max_pool2d(x, (size, 1), stride=1, padding=(size // 2, 0))

    def erode(x: torch.Tensor) -> torch.Tensor:
        return -dilate(-x)

    return dilate(erode(mask)) if op == "open" else erode(dilate(mask))


def motion_masks(
    frames: torch.Tensor,
    background: torch.Tensor | None = None,
    *,
    threshold: float = 10,
    alpha: float = 0.3,
    morph_kernel: int = 5,
    backend: str = "auto",
    decoded: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Physics-IQ motion masks of consecutive frames of one clip.

    (B, 3, H, W) frames in [0, 1] and the running background left by the previous batch (None at the
    clip's start: the first frame seeds it and gets an empty mask) in; (B, H, W) bool masks and the new
    background (H, W) float64 out. ``backend="opencv"``: Physics-IQ's own OpenCV calls, one frame at a
    time on the CPU; ``"torch"``: the same 8-bit arithmetic in torch ops, for GPUs; ``"auto"``: OpenCV
    for CPU frames (an order of magnitude faster there than torch's small-kernel ops), else torch.
    ``decoded``: the same frames as decoded, (B, H, W, 3) uint8 on the host, when the caller has them: the
    OpenCV path takes them as they are instead of rounding ``frames`` back to 8 bits (the same images: x / 255
    in float32 times 255 rounds back to x for every 8-bit x; half of that path's time on 640x360 frames).
    """
    if backend == "opencv" or (backend == "auto" and frames.device.type == "cpu"):
        if decoded is None or decoded.dtype != torch.uint8:
            decoded = torch.from_numpy(
                np.rint(np.clip(frames.cpu().numpy().transpose(0, 2, 3, 1), 0, 1) * 255).astype(np.uint8))
        return _motion_masks_opencv(decoded.numpy(), background, threshold, alpha, morph_kernel)
    return _motion_masks_torch(frames, background, threshold, alpha, morph_kernel)


def _motion_masks_opencv(images: np.ndarray, background, threshold, alpha,
                         morph_kernel) -> tuple[torch.Tensor, torch.Tensor]:
    """The OpenCV path of :func:`motion_masks` for (B, H, W, 3) uint8 RGB images."""
    kernel = np.ones((morph_kernel, morph_kernel), np.uint8)
    # NumPy from here: on small CPU tensors, torch's per-op thread dispatch costs more than the work.
    masks = []
    for image in images:
        gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (5, 5), 0)
        if background is None:
            background = torch.from_numpy(gray.astype(np.float64))
            masks.append(np.zeros_like(gray, dtype=bool))
            continue
        cv2.accumulateWeighted(gray, background.numpy(), alpha)  # in place, through the shared memory
        _, binary = cv2.threshold(cv2.absdiff(gray, cv2.convertScaleAbs(background.numpy())), threshold, 255,
                                  cv2.THRESH_BINARY)
        binary = cv2.morphologyEx(cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
        masks.append(binary > 0)
    return torch.from_numpy(np.stack(masks)), background


def _blurred_gray(frames: torch.Tensor) -> torch.Tensor:
    return _blur_u8(_gray_u8(frames))[:, 0].double()


def _motion_masks_torch(frames, background, threshold, alpha, morph_kernel) -> tuple[torch.Tensor, torch.Tensor]:
    if background is not None:
        return _masks_after_graphed(frames, background, threshold=threshold, alpha=alpha, morph_kernel=morph_kernel)
    # The clip's first frame seeds the background and has no motion; the rest of the batch goes on as any batch.
    background = _blurred_gray(frames[:1])[0]
    first = torch.zeros((1, *frames.shape[-2:]), dtype=torch.bool, device=frames.device)
    if len(frames) == 1:
        return first, background
    masks, background = _masks_after_graphed(frames[1:], background, threshold=threshold, alpha=alpha,
                                             morph_kernel=morph_kernel)
    return torch.cat([first, masks]), background


def _masks_after(frames: torch.Tensor, background: torch.Tensor, *, threshold: float, alpha: float,
                 morph_kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of ``frames`` that follow a running ``background`` (H, W) float64, and the new background."""
    blurred = _blurred_gray(frames)
    diffs = torch.empty_like(blurred)
    for index, gray in enumerate(blurred):  # the background is a recurrence over time
        # accumulateWeighted's order; OpenCV fuses the multiply-add, so float64 ties in the rounding
        # below can break the other way on a few pixels (tests/test_spatial_metrics.py measures it).
        background = background * (1 - alpha) + gray * alpha
        diffs[index] = (gray - _round_half_even(background).clamp(0, 255)).abs()
    masks = (diffs > threshold).float().unsqueeze(1)
    masks = _morphology(_morphology(masks, morph_kernel, "open"), morph_kernel, "close")
    return masks[:, 0] > 0.5, background


# About 100 small kernels per batch of 16 frames: on a GPU replayed from a CUDA graph once a shape repeats.
_masks_after_graphed = GraphedFunction(_masks_after)


# --- metric wrappers -------------------------------------------------------------------------------


class MotionMaskStream:
    """One clip side's motion masks batch after batch, through the optional Physics-IQ conventions: the
    running background carried over, then the mp4v round trip and the 1/4 resize with re-binarisation at > 127
    (:mod:`foresight_eval.metrics.physics_iq`). (B, 3, H, W) frames in, (B, h, w) bool masks out."""

    def __init__(self, rate: Fraction, params: dict[str, Any], cache_resources: dict[str, Any] | None = None):
        self.rate, self.roundtrip, self.downscale = rate, params["roundtrip"], params["downscale"]
        self.mask_params = {key: params[key] for key in ("threshold", "alpha", "morph_kernel")}
        self.background: torch.Tensor | None = None
        self.totals: torch.Tensor | None = None  # per pixel, the masks set so far (running_counts)
        # With a cache: the last entry's key, part of the next one's. The background a batch starts from is made
        # by the frames before it, which the chain of keys names (hashing the background itself, on a GPU, would
        # wait for the device at every batch).
        self._last_key: str | None = None
        self.encoder: Mp4vRoundTrip | None = None
        # Reference masks across runs: the running background is part of the entry, and the chain of keys names
        # it; the mp4v round trip keeps encoder state that cannot be stored, so it is never cached. Without a
        # frame cache there is no digest of the frames to compute either (8 ms per 16 frames of 640x360 on the
        # thread that drives the GPU).
        self.cache_resources = cache_resources if self.roundtrip == "none" and frame_cache_on(cache_resources) else None

    def __call__(self, frames: torch.Tensor, frames_sha256: str | None = None,
                 decoded: torch.Tensor | None = None) -> torch.Tensor:
        """``frames_sha256``: the frames' digest when known (hashed once per batch), else they are hashed.
        ``decoded``: the frames as decoded, when known (:func:`motion_masks`)."""
        backend = "opencv" if frames.device.type == "cpu" else "torch"  # motion_masks' "auto"
        cache = self.cache_resources and ReferenceCache.from_resources(
            self.cache_resources, "motion_masks", {**self.mask_params, "downscale": self.downscale, "backend": backend})
        if not cache:
            return self._compute(frames, decoded)

        def compute() -> dict[str, torch.Tensor]:
            return {"masks": self._compute(frames, decoded), "background": self.background}

        self._last_key = tensor_sha256(frames_sha256 or frames, self._last_key)
        entry = cache.lookup(self._last_key, compute)
        self.background = to_device_async(entry["background"], frames.device)
        return to_device_async(entry["masks"], frames.device)

    def running_counts(self, masks: torch.Tensor) -> torch.Tensor:
        """Per pixel, how many of the clip's masks up to each of this batch's are set: (B, H, W) int32, the
        counts of the batches before included (the stream keeps them)."""
        start = self.totals if self.totals is not None else masks.new_zeros(masks.shape[1:], dtype=torch.int32)
        running = _running_counts_graphed(masks, start)
        self.totals = running[-1]
        return running

    def _compute(self, frames: torch.Tensor, decoded: torch.Tensor | None) -> torch.Tensor:
        masks, self.background = motion_masks(frames, self.background, **self.mask_params, decoded=decoded)
        if self.roundtrip == "none" and self.downscale == 1:
            return masks
        height, width = frames.shape[-2:]
        images = masks.cpu().numpy().astype(np.uint8) * 255
        if self.roundtrip == "mp4v":
            self.encoder = self.encoder or Mp4vRoundTrip(width, height, self.rate)
            images = self.encoder(images)
        if self.downscale > 1:  # the target size is the frame's, even when the round trip dropped a row
            images = downscale_u8(images, self.downscale, (width // self.downscale, height // self.downscale))
        return torch.from_numpy(images > 127)


class _MotionMaskMetric(WindowedFrameMetric):
    reads_reference_cache = True
    defaults = {"threshold": 10, "alpha": 0.3, "morph_kernel": 5, "roundtrip": "none", **PIPELINE_DEFAULTS}
    choices = {"roundtrip": ("none", "mp4v")}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self._resources = context.resources

    def reset(self) -> None:
        super().reset()
        self._streams: dict[str, MotionMaskStream | None] = {"pred": None, "ref": None}
        self._last = math.nan

    def _masks(self, batch: FrameBatch, side: str) -> torch.Tensor:
        # The three motion metrics derive the same masks from the same frames: computed once per batch.
        # Each metric's mask state is the same too (same start, same updates), so every metric adopts the
        # stream that computed the batch, and its state stays what it would be alone.
        key = ("motion_masks", side, tuple(sorted(self.params.items())))
        stream = self._streams[side] or MotionMaskStream(
            clip_fps(batch, self.params), self.params, getattr(self, "_resources", None) if side == "ref" else None)
        frames, decoded = getattr(batch, side), getattr(batch, f"{side}_decoded")
        # The batch's digest and the count of its frames in use name the frames (the window's, when it ends
        # inside this batch).
        cached = side == "ref" and stream.cache_resources
        digest = f"{reference_sha256(batch)}[:{len(frames)}]" if cached else None
        masks, self._streams[side] = batch.shared(key, lambda: (stream(frames, digest, decoded), stream))
        return masks

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        values = self.batch_values(batch)
        self._last = values[-1]  # a tensor: float() here would wait for the GPU at every batch
        return values

    def batch_values(self, batch: FrameBatch) -> torch.Tensor:
        return self.compare(self._masks(batch, "pred"), self._masks(batch, "ref"))

    def compare(self, pred_masks: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def running_counts(masks: torch.Tensor, start: torch.Tensor | None = None, *,
                   by_addition: bool | None = None) -> torch.Tensor:
    """Per pixel, how many of the masks up to each one are set: (B, H, W) bool in, (B, H, W) int32 out,
    plus ``start`` (H, W), the counts before this batch, when given. ``by_addition`` (default: on the CPU)
    adds mask by mask: torch's ``cumsum`` along the first dimension runs there about 10x slower (16 masks
    of 640x360: 12-34 ms against 1-3 ms); on a GPU ``cumsum`` is one kernel."""
    if not (masks.device.type == "cpu" if by_addition is None else by_addition):
        running = masks.cumsum(dim=0, dtype=torch.int32)
        return running if start is None else running.add_(start)
    running = torch.empty(masks.shape, dtype=torch.int32, device=masks.device)
    if len(masks):
        running[0] = masks[0] if start is None else start + masks[0]
    for index in range(1, len(masks)):
        torch.add(running[index - 1], masks[index], out=running[index])
    return running


_running_counts_graphed = GraphedFunction(running_counts)


class _CumulativeMotionMetric(_MotionMaskMetric):
    """Compares masks accumulated over horizons 1..h; the clip's value is the one over all its frames."""

    def batch_values(self, batch: FrameBatch) -> torch.Tensor:
        return self.compare_totals(self._counts(batch, "pred"), self._counts(batch, "ref"))

    def _counts(self, batch: FrameBatch, side: str) -> torch.Tensor:
        # motion_iou and motion_iou_weighted accumulate the same masks: counted once per batch, by the stream
        # that computed the masks (every motion metric adopts it, so its counts are each metric's own).
        masks = self._masks(batch, side)
        key = ("motion_counts", side, tuple(sorted(self.params.items())))
        return batch.shared(key, lambda: self._streams[side].running_counts(masks))

    def compare_totals(self, pred_counts: torch.Tensor, ref_counts: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self) -> Any:
        """The value over all the clip's frames (its last frame's): a float, or on a GPU a Deferred of it."""
        return when_on_host(self._last, float) if isinstance(self._last, torch.Tensor) else float(self._last)


@register
class MotionIoU(_CumulativeMotionMetric):
    info = MetricInfo(
        name="motion_iou",
        description="Physics-IQ spatial IoU: IoU of where motion happened (motion masks OR-ed over time); "
        "per-frame rows are over horizons 1..h",
        direction="higher",
        granularity="video",
    )

    def compare_totals(self, pred_counts: torch.Tensor, ref_counts: torch.Tensor) -> torch.Tensor:
        return _binary_iou_graphed(pred_counts, ref_counts)  # a count is set (> 0) where a mask was


@register
class MotionIoUWeighted(_CumulativeMotionMetric):
    info = MetricInfo(
        name="motion_iou_weighted",
        description="Physics-IQ weighted spatial IoU: sum(min)/sum(max) of the per-pixel fraction of frames "
        "with motion; per-frame rows are over horizons 1..h",
        direction="higher",
        granularity="video",
    )

    def compare_totals(self, pred_counts: torch.Tensor, ref_counts: torch.Tensor) -> torch.Tensor:
        # Both counts cover the same frames, so dividing each by the frame count cancels in the ratio.
        return _weighted_iou_graphed(pred_counts, ref_counts)


@register
class MotionIoUST(_MotionMaskMetric):
    info = MetricInfo(
        name="motion_iou_st",
        description="Physics-IQ spatiotemporal IoU: IoU of the motion masks frame by frame, mean over frames",
        direction="higher",
    )

    def compare(self, pred_masks: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        return _binary_iou_graphed(pred_masks, ref_masks)
