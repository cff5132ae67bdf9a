"""Spatial metrics: are objects and motion where they should be?

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

Annotation metrics (need ``--ref-annotations``, see :mod:`foresight_eval.io.annotations`)
----------------------------------------------------------------------------------------
* ``mask_iou``: reference object masks against predicted masks (``--pred-masks``, or the
  ``segmentation`` of ``--pred-detections``). ``mode=foreground`` (default): IoU of the union of all
  object masks; ``mode=instances``: Hungarian matching of instance masks as for ``box_iou``.
* ``box_iou``: predicted boxes with score >= ``score_threshold`` against reference boxes, matched one
  to one by the Hungarian algorithm on IoU (``scipy.optimize.linear_sum_assignment``; with
  ``class_aware``, boxes of different categories have IoU 0). Every box left without a partner of
  positive IoU, on either side, counts as 0; the frame's value is the mean over matched pairs and
  unmatched boxes. A frame with no box on either side scores 1.

Edge F1
-------
Canny edges (``skimage.feature.canny``, sigma 1, low/high thresholds 0.1/0.2 of the gradient magnitude
of the ``skimage.color.rgb2gray`` luminance in [0, 1]) of predicted and reference frames, matched
within a distance of ``max_dist`` times the frame diagonal (default 0.0075, as the BSDS boundary
benchmark). ``matching=exact``: one-to-one matching as BSDS does; the matched count is that of a
maximum bipartite matching between edge pixels within the tolerance (Hopcroft-Karp,
``scipy.sparse.csgraph.maximum_bipartite_matching``). ``matching=approx`` (faster on dense edge maps,
whose exact matching grows with the number of edge pixels): a pixel counts as matched if any edge pixel
of the other map lies within the tolerance (OpenCV's exact Euclidean distance transform); it is not
one to one, so it is never below the exact value. Precision = matched predicted / predicted pixels,
recall = matched reference / reference pixels, F1 their harmonic mean per frame; an empty map has
precision (or recall) 1, so two empty maps give F1 = 1. ``detector=auto`` (default) runs the same Canny
in torch ops when the frames are on a GPU (:mod:`foresight_eval.metrics.edges_torch`, equal maps on the
test fixtures), scikit-image's on the CPU; ``skimage`` / ``torch`` force one.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree
from skimage.color import rgb2gray
from skimage.feature import canny
from torchvision.ops import box_convert
from torchvision.ops import box_iou as torchvision_box_iou

from foresight_eval.errors import MetricUnavailable
from foresight_eval.feature_cache import ReferenceCache, reference_sha256
from foresight_eval.io.annotations import ReferenceAnnotations, decode_masks
from foresight_eval.metrics.base import FrameBatch, FrameMetric, MetricInfo, RunContext
from foresight_eval.metrics.edges_torch import canny as canny_torch
from foresight_eval.metrics.physics_iq import (
    PIPELINE_DEFAULTS, Mp4vRoundTrip, WindowedFrameMetric, clip_fps, downscale_u8,
)
from foresight_eval.metrics.registry import register

# --- IoU cores --------------------------------------------------------------------------------------


def binary_iou(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks: (B, H, W) pairs in, (B,) float64 out; two empty masks give 1."""
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


def box_iou_matrix(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of COCO [x, y, w, h] boxes: (N, 4) and (M, 4) in, (N, M) out (torchvision)."""
    return torchvision_box_iou(box_convert(pred.double(), "xywh", "xyxy"), box_convert(ref.double(), "xywh", "xyxy"))


def mask_iou_matrix(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of masks: (N, H, W) and (M, H, W) bool in, (N, M) out (0 where both are empty)."""
    a, b = pred.flatten(1).double(), ref.flatten(1).double()
    intersection = a @ b.T
    union = a.sum(dim=1)[:, None] + b.sum(dim=1)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def matched_mean_iou(iou: torch.Tensor) -> float:
    """Hungarian one-to-one matching maximising total IoU; the mean over matched pairs of positive IoU
    and every box (either side) left unmatched, which counts 0. Nothing on either side gives 1."""
    n_pred, n_ref = iou.shape
    if n_pred == 0 and n_ref == 0:
        return 1.0
    if n_pred == 0 or n_ref == 0:
        return 0.0
    matrix = iou.detach().cpu().double().numpy()
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    matched = matrix[rows, cols]
    matched = matched[matched > 0]
    return float(matched.sum() / (n_pred + n_ref - matched.size))


# --- Physics-IQ motion masks -----------------------------------------------------------------------

_BINOMIAL_5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


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
    kernel = _BINOMIAL_5.to(gray.device)
    padded = F.pad(gray, (2, 2, 2, 2), mode="reflect")  # torch's "reflect" is OpenCV's BORDER_REFLECT_101
    summed = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, 5)), kernel.view(1, 1, 5, 1))
    # Integer sums up to 65280 are exact in float32; OpenCV's fixed point rounds half up.
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Physics-IQ motion masks of consecutive frames of one clip.

    (B, 3, H, W) frames in [0, 1] and the running background left by the previous batch (None at the
    clip's start: the first frame seeds it and gets an empty mask) in; (B, H, W) bool masks and the new
    background (H, W) float64 out. ``backend="opencv"``: Physics-IQ's own OpenCV calls, one frame at a
    time on the CPU; ``"torch"``: the same 8-bit arithmetic in torch ops, for GPUs; ``"auto"``: OpenCV
    for CPU frames (an order of magnitude faster there than torch's small-kernel ops), else torch.
    """
    if backend == "opencv" or (backend == "auto" and frames.device.type == "cpu"):
        return _motion_masks_opencv(frames.cpu(), background, threshold, alpha, morph_kernel)
    return _motion_masks_torch(frames, background, threshold, alpha, morph_kernel)


def _motion_masks_opencv(frames, background, threshold, alpha, morph_kernel) -> tuple[torch.Tensor, torch.Tensor]:
    kernel = np.ones((morph_kernel, morph_kernel), np.uint8)
    # NumPy from here: on small CPU tensors, torch's per-op thread dispatch costs more than the work.
    images = np.rint(np.clip(frames.numpy().transpose(0, 2, 3, 1), 0, 1) * 255).astype(np.uint8)
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


def _motion_masks_torch(frames, background, threshold, alpha, morph_kernel) -> tuple[torch.Tensor, torch.Tensor]:
    blurred = _blur_u8(_gray_u8(frames))[:, 0].double()
    diffs = torch.empty_like(blurred)
    for index, gray in enumerate(blurred):  # the background is a recurrence over time
        if background is None:
            background = gray.clone()
            diffs[index] = 0
            continue
        # accumulateWeighted's order; OpenCV fuses the multiply-add, so float64 ties in the rounding
        # below can break the other way on a few pixels (tests/test_spatial_metrics.py measures it).
        background = background * (1 - alpha) + gray * alpha
        diffs[index] = (gray - _round_half_even(background).clamp(0, 255)).abs()
    masks = (diffs > threshold).float().unsqueeze(1)
    masks = _morphology(_morphology(masks, morph_kernel, "open"), morph_kernel, "close")
    return masks[:, 0] > 0.5, background


# --- edges -----------------------------------------------------------------------------------------


EDGE_DETECTORS = ("auto", "skimage", "torch")


def edge_maps(frames: torch.Tensor, sigma: float = 1.0, low_threshold: float = 0.1,
              high_threshold: float = 0.2, detector: str = "skimage") -> np.ndarray:
    """Canny edges of (B, 3, H, W) frames in [0, 1]: (B, H, W) bool. ``detector="skimage"``: scikit-image's
    ``feature.canny`` of ``color.rgb2gray``, frame by frame on the CPU; ``"torch"``: the same steps in torch
    ops on the frames' device (:mod:`foresight_eval.metrics.edges_torch`); ``"auto"``: torch on a GPU,
    scikit-image on the CPU (where it is the faster of the two)."""
    if detector == "torch" or (detector == "auto" and frames.device.type != "cpu"):
        return canny_torch(frames, sigma=sigma, low_threshold=low_threshold, high_threshold=high_threshold).cpu().numpy()
    images = frames.detach().permute(0, 2, 3, 1).double().cpu().numpy()
    return np.stack([canny(rgb2gray(image), sigma=sigma, low_threshold=low_threshold,
                           high_threshold=high_threshold) for image in images])


def edge_match_counts(pred: np.ndarray, ref: np.ndarray, radius: float, matching: str = "exact") -> tuple[int, int]:
    """(matched predicted pixels, matched reference pixels) of two (H, W) edge maps within ``radius``."""
    if matching == "approx":
        if not pred.any() or not ref.any():
            return 0, 0
        # Distances to the nearest zero pixel, so edges become the zeros; DIST_MASK_PRECISE is exact Euclidean.
        to_ref, to_pred = (cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                           for edges in (ref, pred))
        return int((to_ref[pred] <= radius).sum()), int((to_pred[ref] <= radius).sum())
    pred_points, ref_points = np.argwhere(pred), np.argwhere(ref)
    if len(pred_points) == 0 or len(ref_points) == 0:
        return 0, 0
    neighbours = cKDTree(ref_points).query_ball_point(pred_points, r=radius)
    # scipy has no one-to-one matcher for point sets within a distance; a bipartite graph of the
    # within-tolerance pairs and SciPy's Hopcroft-Karp give the maximum number of matched pairs.
    rows = np.repeat(np.arange(len(pred_points)), [len(n) for n in neighbours])
    cols = np.fromiter((j for n in neighbours for j in n), dtype=np.int64, count=len(rows))
    graph = csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(pred_points), len(ref_points)))
    matched = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    return matched, matched


def edge_precision_recall_f1(pred: np.ndarray, ref: np.ndarray, max_dist: float = 0.0075,
                             matching: str = "exact") -> tuple[float, float, float]:
    """Precision, recall and F1 of one predicted (H, W) edge map against its reference."""
    radius = max_dist * math.hypot(*ref.shape)
    matched_pred, matched_ref = edge_match_counts(pred, ref, radius, matching)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    precision = matched_pred / n_pred if n_pred else 1.0
    recall = matched_ref / n_ref if n_ref else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def edge_f1(pred: torch.Tensor, ref: torch.Tensor, *, max_dist: float = 0.0075, matching: str = "exact",
            sigma: float = 1.0, low_threshold: float = 0.1, high_threshold: float = 0.2, detector: str = "auto",
            ref_edges: np.ndarray | None = None) -> torch.Tensor:
    """Edge F1 per frame: (B, 3, H, W) pairs in [0, 1] in, (B,) float64 out (``ref_edges``: the reference's
    edge maps when already known)."""
    canny_params = {"sigma": sigma, "low_threshold": low_threshold, "high_threshold": high_threshold, "detector": detector}
    pred_edges = edge_maps(pred, **canny_params)
    ref_edges = edge_maps(ref, **canny_params) if ref_edges is None else ref_edges
    return torch.tensor([edge_precision_recall_f1(p, r, max_dist, matching)[2]
                         for p, r in zip(pred_edges, ref_edges)], dtype=torch.float64)


# --- metric wrappers -------------------------------------------------------------------------------


class _ClipAwareMetric(FrameMetric):
    """A per-frame metric that also needs which clip and frames it scores (annotations, motion state)."""

    def update(self, batch: FrameBatch) -> torch.Tensor:
        self.batch = batch
        return super().update(batch)


class MotionMaskStream:
    """One clip side's motion masks batch after batch, through the optional Physics-IQ conventions: the
    running background carried over, then the mp4v round trip and the 1/4 resize with re-binarisation at > 127
    (:mod:`foresight_eval.metrics.physics_iq`). (B, 3, H, W) frames in, (B, h, w) bool masks out."""

    def __init__(self, rate: Fraction, params: dict[str, Any], cache_resources: dict[str, Any] | None = None):
        self.rate, self.roundtrip, self.downscale = rate, params["roundtrip"], params["downscale"]
        self.mask_params = {key: params[key] for key in ("threshold", "alpha", "morph_kernel")}
        self.background: torch.Tensor | None = None
        self.encoder: Mp4vRoundTrip | None = None
        # Reference masks across runs: the running background is part of the key and of the entry; the mp4v
        # round trip keeps encoder state that cannot be, so it is never cached.
        self.cache_resources = cache_resources if self.roundtrip == "none" else None

    def __call__(self, frames: torch.Tensor, frames_sha256: str | None = None) -> torch.Tensor:
        """``frames_sha256``: the frames' digest when known (hashed once per batch), else they are hashed."""
        if not self.cache_resources:
            return self._compute(frames)
        backend = "opencv" if frames.device.type == "cpu" else "torch"  # motion_masks' "auto"
        cache = ReferenceCache.from_resources(self.cache_resources, "motion_masks",
                                              {**self.mask_params, "downscale": self.downscale, "backend": backend})
        if cache is None:
            return self._compute(frames)
        entry = cache((frames_sha256 or frames, self.background),
                      lambda: {"masks": self._compute(frames), "background": self.background})
        self.background = entry["background"].to(frames.device)
        return entry["masks"].to(frames.device)

    def _compute(self, frames: torch.Tensor) -> torch.Tensor:
        masks, self.background = motion_masks(frames, self.background, **self.mask_params)
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
    defaults = {"threshold": 10, "alpha": 0.3, "morph_kernel": 5, "roundtrip": "none", **PIPELINE_DEFAULTS}
    choices = {"roundtrip": ("none", "mp4v")}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self._resources = context.resources

    def reset(self) -> None:
        super().reset()
        self._streams: dict[str, MotionMaskStream | None] = {"pred": None, "ref": None}
        self._last = math.nan

    def _masks(self, side: str, frames: torch.Tensor) -> torch.Tensor:
        # The three motion metrics derive the same masks from the same frames: computed once per batch.
        # Each metric's mask state is the same too (same start, same updates), so every metric adopts the
        # stream that computed the batch, and its state stays what it would be alone.
        key = ("motion_masks", side, tuple(sorted(self.params.items())))
        stream = self._streams[side] or MotionMaskStream(
            clip_fps(self._batch, self.params), self.params,
            getattr(self, "_resources", None) if side == "ref" else None)
        # The frames are the batch's, up to the window's end: its digest and their count name them.
        cached = side == "ref" and stream.cache_resources
        digest = f"{reference_sha256(self._batch)}[:{len(frames)}]" if cached else None
        masks, self._streams[side] = self._batch.shared(key, lambda: (stream(frames, digest), stream))
        return masks

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        values = self.compare(self._masks("pred", pred), self._masks("ref", ref))
        self._last = float(values[-1])
        return values

    def compare(self, pred_masks: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _CumulativeMotionMetric(_MotionMaskMetric):
    """Compares masks accumulated over horizons 1..h; the clip's value is the one over all its frames."""

    def reset(self) -> None:
        super().reset()
        self._totals: dict[str, torch.Tensor | None] = {"pred": None, "ref": None}

    def _accumulate(self, side: str, masks: torch.Tensor) -> torch.Tensor:
        running = masks.to(torch.int32).cumsum(dim=0)
        if self._totals[side] is not None:
            running += self._totals[side]
        self._totals[side] = running[-1]
        return running

    def compare(self, pred_masks: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        return self.compare_totals(self._accumulate("pred", pred_masks), self._accumulate("ref", ref_masks))

    def compare_totals(self, pred_counts: torch.Tensor, ref_counts: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self) -> float:
        return self._last


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
        return binary_iou(pred_counts > 0, ref_counts > 0)


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
        return weighted_iou(pred_counts, ref_counts)


@register
class MotionIoUST(_MotionMaskMetric):
    info = MetricInfo(
        name="motion_iou_st",
        description="Physics-IQ spatiotemporal IoU: IoU of the motion masks frame by frame, mean over frames",
        direction="higher",
    )

    def compare(self, pred_masks: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        return binary_iou(pred_masks, ref_masks)


def _require(context: RunContext, name: str, option: str) -> Any:
    resource = context.resources.get(name)
    if resource is None:
        raise MetricUnavailable(f"needs {option}")
    return resource


def _image_ids(annotations: ReferenceAnnotations, batch: FrameBatch) -> list[int]:
    size = tuple(batch.ref.shape[-2:])
    return [annotations.image_id(batch.video, frame, size) for frame in batch.frame_index.tolist()]


@register
class BoxIoU(_ClipAwareMetric):
    info = MetricInfo(
        name="box_iou",
        description="Predicted boxes matched one to one to reference boxes (Hungarian on IoU), unmatched boxes "
        "count 0, mean per frame",
        direction="higher",
        needs=("annotations", "detections"),
    )
    defaults = {"score_threshold": 0.5, "class_aware": True}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.annotations = _require(context, "annotations", "--ref-annotations (reference boxes)")
        self.detections = _require(context, "detections", "--pred-detections (boxes detected on the predicted frames)")

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        values = []
        for image_id in _image_ids(self.annotations, self.batch):
            refs = self.annotations.objects[image_id]
            preds = [obj for obj in self.detections.by_image[image_id] if obj.score >= self.params["score_threshold"]]
            iou = box_iou_matrix(torch.tensor([o.bbox for o in preds]).view(-1, 4),
                                 torch.tensor([o.bbox for o in refs]).view(-1, 4))
            if self.params["class_aware"]:
                same = torch.tensor([[p.category_id == r.category_id for r in refs] for p in preds]).view(iou.shape)
                iou = iou * same
            values.append(matched_mean_iou(iou))
        return torch.tensor(values, dtype=torch.float64)


@register
class MaskIoU(_ClipAwareMetric):
    info = MetricInfo(
        name="mask_iou",
        description="IoU of predicted against reference object masks per frame (mode foreground: union of "
        "objects; instances: Hungarian-matched instances), mean over frames",
        direction="higher",
        needs=("annotations", "masks"),
    )
    defaults = {"mode": "foreground", "score_threshold": 0.5}
    choices = {"mode": ("foreground", "instances")}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.annotations = _require(context, "annotations", "--ref-annotations with masks")
        if not self.annotations.has_masks:
            raise MetricUnavailable(f"the reference annotations {self.annotations.source} carry no masks")
        self.pred_masks = context.resources.get("pred_masks")
        if self.pred_masks is None:
            detections = context.resources.get("detections")
            if detections is None or not detections.has_masks:
                raise MetricUnavailable("needs --pred-masks, or --pred-detections with a segmentation per detection")
            self.pred_masks = detections

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        height, width = ref.shape[-2:]
        values = []
        for frame, image_id in zip(self.batch.frame_index.tolist(), _image_ids(self.annotations, self.batch)):
            ref_masks = torch.from_numpy(decode_masks(self.annotations.objects[image_id], height, width))
            pred_masks = torch.from_numpy(np.asarray(self.pred_masks.frame_masks(
                self.batch.video, frame, height, width, self.params["score_threshold"])))
            if self.params["mode"] == "foreground":
                values.append(float(binary_iou(pred_masks.any(dim=0)[None], ref_masks.any(dim=0)[None])[0]))
            else:
                values.append(matched_mean_iou(mask_iou_matrix(pred_masks, ref_masks)))
        return torch.tensor(values, dtype=torch.float64)


@register
class EdgeF1(FrameMetric):
    info = MetricInfo(
        name="edge_f1",
        description="F1 of Canny edges (scikit-image) matched one to one within max_dist x frame diagonal "
        "(BSDS protocol; matching=approx: distance transform, not one to one), mean over frames",
        direction="higher",
    )
    defaults = {"max_dist": 0.0075, "matching": "exact", "sigma": 1.0, "low_threshold": 0.1, "high_threshold": 0.2,
                "detector": "auto"}
    choices = {"matching": ("exact", "approx"), "detector": EDGE_DETECTORS}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        canny_params = {k: self.params[k] for k in ("sigma", "low_threshold", "high_threshold", "detector")}
        # The reference's edges depend on its frames only: cached across runs when a cache folder is set
        # (the device type in the key: detector=auto picks the implementation by device).
        self._ref_cache = ReferenceCache.from_resources(context.resources, "canny_edges",
                                                        {**canny_params, "device_type": context.device.type})

    def update(self, batch: FrameBatch) -> torch.Tensor:
        self._batch = batch  # per_frame's reference frames are the batch's: hashed once per batch
        return super().update(batch)

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        cache, p = getattr(self, "_ref_cache", None), self.params
        ref_edges = None
        if cache is not None:
            canny_params = {k: p[k] for k in ("sigma", "low_threshold", "high_threshold", "detector")}
            entry = cache((reference_sha256(self._batch),),
                          lambda: {"edges": torch.from_numpy(edge_maps(ref, **canny_params))})
            ref_edges = entry["edges"].numpy()
        return edge_f1(pred, ref, **p, ref_edges=ref_edges)
