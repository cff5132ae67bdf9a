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
Crowd regions (``iscrowd: 1``) are not objects to match: both metrics leave them out.

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
benchmark). With ``edges=input`` the clips are edge maps themselves (e.g. an edge detector's output):
the reference's luminance >= 0.5 is its edges, the prediction's luminance is an edge strength.

``mode=frame`` (default): precision, recall and F1 per frame, the clip's value the mean over frames.
``matching=exact``: one-to-one matching as BSDS does; the matched count is that of a maximum
bipartite matching between edge pixels within the tolerance (:func:`max_edge_matching`).
``matching=approx``: a pixel counts as matched if any edge pixel of the other map lies within the
tolerance (OpenCV's exact Euclidean distance transform); it is not one to one, so it is never below
the exact value. Precision = matched predicted / predicted pixels, recall = matched reference /
reference pixels; an empty map has precision (or recall) 1, so two empty maps give F1 = 1.
``detector=auto`` (default) runs the same Canny in torch ops when the frames are on a GPU
(:mod:`foresight_eval.metrics.edges_torch`, equal maps on the test fixtures), scikit-image's on the CPU;
``skimage`` / ``torch`` force one.

``mode=bsds``: the BSDS boundary benchmark's protocol (Martin et al. 2004; Arbelaez et al. 2011,
``boundaryBench``; as pyEdgeEval 0.2.8 reimplements it, ``evaluate_boundaries_threshold`` and
``calculate_metrics``), a run-level value (``granularity="set"``). The prediction is binarised at each
of ``thresholds`` levels (``edges=input``: ``strength >= t`` at t = 1/(N+1) .. N/(N+1); Canny edges
are binary: one level) and thinned to one pixel (``skimage.morphology.thin``, the algorithm of
MATLAB's ``bwmorph(..., 'thin', Inf)``); matched pairs, reference pixels and predicted pixels are
summed over every frame of the set, then precision, recall and F1 come from the sums (not the mean
of per-frame F1); an empty map has precision (recall) 0, so a set without edges on either side
scores 0. ``value`` is the ODS F1 (one threshold for the whole set, interpolated between adjacent
thresholds in 100 steps as BSDS's ``maxF``); OIS pools each frame's counts at that frame's best
threshold. BSDS matches with a min-cost assignment (``correspondPixels``: distances, and an unmatched
pixel at 100 x the radius) on a sparse random outlier graph; since an unmatched pixel costs far more
than any distance, it maximises the matched count, which :func:`max_edge_matching` computes exactly.
docs/edges-and-detection.md gives the measured parity with pyEdgeEval.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow
from scipy.spatial import cKDTree
from skimage.color import rgb2gray
from skimage.feature import canny
from skimage.morphology import thin
from torchvision.ops import box_convert
from torchvision.ops import box_iou as torchvision_box_iou

from foresight_eval.errors import MetricUnavailable, UsageError
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
    """IoU of every pair of COCO [x, y, w, h] boxes: (N, 4) and (M, 4) in, (N, M) out (torchvision); a
    zero-area box has IoU 0 with every box, as in COCO (torchvision gives 0/0 for two of them)."""
    iou = torchvision_box_iou(box_convert(pred.double(), "xywh", "xyxy"), box_convert(ref.double(), "xywh", "xyxy"))
    return torch.nan_to_num(iou, nan=0.0)


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


def edge_strength(frames: torch.Tensor) -> np.ndarray:
    """Frames that are edge maps, as edge strength: the ``rgb2gray`` luminance of (B, 3, H, W) frames in
    [0, 1], (B, H, W) float64 (a grey frame's own value: the luminance weights sum to 1)."""
    return rgb2gray(frames.detach().permute(0, 2, 3, 1).double().cpu().numpy())


def max_edge_matching(pred: np.ndarray, ref: np.ndarray, radius: float) -> int:
    """Pairs in a maximum one-to-one matching of the edge pixels of two (H, W) bool maps, where a
    predicted and a reference pixel may pair when at most ``radius`` pixels apart (Euclidean).

    A maximum flow (Dinic's algorithm, ``scipy.sparse.csgraph.maximum_flow``) from a source through each
    predicted pixel, the within-radius pairs and each reference pixel to a sink, every capacity 1. On
    such a unit network Dinic runs in O(E sqrt(V)): 0.2 s on a 640x272 Canny map of a textured image,
    where SciPy's ``maximum_bipartite_matching`` (Hopcroft-Karp) did not finish in a minute
    (benchmarks/edge_matching.py)."""
    pred_points, ref_points = np.argwhere(pred), np.argwhere(ref)
    n_pred, n_ref = len(pred_points), len(ref_points)
    if n_pred == 0 or n_ref == 0:
        return 0
    neighbours = cKDTree(ref_points).query_ball_point(pred_points, r=radius, return_sorted=False)
    lengths = np.fromiter(map(len, neighbours), dtype=np.int64, count=n_pred)
    # Nodes: 0 the source, 1..n_pred the predicted pixels, then the reference pixels, last the sink.
    sink = n_pred + n_ref + 1
    pred_nodes = np.arange(1, n_pred + 1)
    ref_nodes = np.arange(n_pred + 1, sink)
    rows = np.concatenate([np.zeros(n_pred, dtype=np.int64), np.repeat(pred_nodes, lengths), ref_nodes])
    cols = np.concatenate([pred_nodes, n_pred + 1 + np.fromiter(itertools.chain.from_iterable(neighbours),
                                                                  dtype=np.int64, count=int(lengths.sum())),
                           np.full(n_ref, sink)])
    graph = csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(sink + 1, sink + 1))
    return int(maximum_flow(graph, 0, sink, method="dinic").flow_value)


def edge_match_counts(pred: np.ndarray, ref: np.ndarray, radius: float, matching: str = "exact") -> tuple[int, int]:
    """(matched predicted pixels, matched reference pixels) of two (H, W) edge maps within ``radius``."""
    if matching == "approx":
        if not pred.any() or not ref.any():
            return 0, 0
        # Distances to the nearest zero pixel, so edges become the zeros; DIST_MASK_PRECISE is exact Euclidean.
        to_ref, to_pred = (cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                           for edges in (ref, pred))
        return int((to_ref[pred] <= radius).sum()), int((to_pred[ref] <= radius).sum())
    matched = max_edge_matching(pred, ref, radius)
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


# --- BSDS boundary benchmark -----------------------------------------------------------------------


def bsds_thresholds(count: int) -> np.ndarray:
    """BSDS's ``count`` evenly spaced thresholds strictly inside (0, 1): 1/(N+1), ..., N/(N+1)."""
    return np.linspace(1 / (count + 1), 1 - 1 / (count + 1), count)


def bsds_edge_counts(strength: np.ndarray, ref: np.ndarray, thresholds: np.ndarray,
                     max_dist: float = 0.0075) -> np.ndarray:
    """BSDS counts of one frame: a (4, T) int64 array whose rows are matched reference pixels, reference
    pixels, matched predicted pixels and predicted pixels at each threshold; the predicted edges at
    threshold t are ``strength >= t``, thinned. ``ref``: the reference's (H, W) bool edges."""
    radius = max_dist * math.hypot(*ref.shape)
    counts = np.zeros((4, len(thresholds)), dtype=np.int64)
    counts[1] = ref.sum()
    for column, threshold in enumerate(thresholds):
        edges = thin(strength >= threshold)
        matched = max_edge_matching(edges, ref, radius)
        counts[:, column] = matched, counts[1, column], matched, edges.sum()
    return counts


def _bsds_prf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from (4, ...) counts; a zero denominator gives 0 (BSDS: x / (n + (n == 0)))."""
    recall = counts[0] / np.maximum(counts[1], 1)
    precision = counts[2] / np.maximum(counts[3], 1)
    total = precision + recall
    return precision, recall, np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)


def bsds_scores(counts: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """ODS and OIS of per-frame counts (F, 4, T) (``bsds_edge_counts`` of every frame of the set).

    ODS: precision and recall of the counts summed over frames, at each threshold; the best F1 along
    the precision-recall curve, linearly interpolated in 100 steps between adjacent thresholds (BSDS's
    ``maxF``; pyEdgeEval's ``interpolated_max_scores``). OIS: each frame's counts at its own best
    threshold (the first of equal F1), summed over frames."""
    precision, recall, f1 = _bsds_prf(counts.sum(axis=0))
    steps = np.linspace(0, 1, 101)[None, :]
    def along(values: np.ndarray) -> np.ndarray:  # the curve's point 0, then each segment in order
        return np.concatenate([values[:1], (values[1:, None] * steps + values[:-1, None] * (1 - steps)).ravel()])
    curve_t, curve_p, curve_r = along(thresholds), along(precision), along(recall)
    total = curve_p + curve_r
    curve_f = np.where(total > 0, 2 * curve_p * curve_r / np.where(total > 0, total, 1), 0.0)
    best = int(np.argmax(curve_f))
    frame_f1 = _bsds_prf(counts.transpose(1, 0, 2))[2]  # (F, T)
    best_counts = counts[np.arange(len(counts)), :, frame_f1.argmax(axis=1)].sum(axis=0)
    ois_precision, ois_recall, ois_f1 = _bsds_prf(best_counts)
    return {
        "ods": {"f1": float(curve_f[best]), "precision": float(curve_p[best]), "recall": float(curve_r[best]),
                "threshold": float(curve_t[best])},
        "ois": {"f1": float(ois_f1), "precision": float(ois_precision), "recall": float(ois_recall)},
        "per_threshold": [{"threshold": float(t), "precision": float(p), "recall": float(r), "f1": float(f)}
                          for t, p, r, f in zip(thresholds, precision, recall, f1)],
    }


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
            refs = [obj for obj in self.annotations.objects[image_id] if not obj.iscrowd]
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
            objects = [obj for obj in self.annotations.objects[image_id] if not obj.iscrowd]
            ref_masks = torch.from_numpy(decode_masks(objects, height, width))
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
        description="F1 of Canny edges (scikit-image) matched one to one within max_dist x frame diagonal, mean "
        "over frames (matching=approx: distance transform, not one to one; mode=bsds: the BSDS benchmark's "
        "thinned, set-pooled ODS F1, a run-level value)",
        direction="higher",
    )
    defaults = {"mode": "frame", "max_dist": 0.0075, "matching": "exact", "edges": "canny", "thresholds": 99,
                "sigma": 1.0, "low_threshold": 0.1, "high_threshold": 0.2, "detector": "auto"}
    choices = {"mode": ("frame", "bsds"), "matching": ("exact", "approx"), "edges": ("canny", "input"),
               "detector": EDGE_DETECTORS}

    def __init__(self, **params: Any):
        super().__init__(**params)
        count = self.params["thresholds"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise UsageError(f"edge_f1.thresholds must be an integer >= 1, got {count!r}")
        if self.params["mode"] == "bsds":
            if self.params["matching"] != "exact":
                raise UsageError("edge_f1.mode=bsds matches one to one as BSDS does: it needs matching=exact")
            # A run-level value: pooled counts of every frame of the set (the engine reads the instance's info).
            self.info = dataclasses.replace(type(self).info, granularity="set", description=(
                "BSDS boundary benchmark: predicted edges thinned, matched one to one within max_dist x frame "
                "diagonal, counts pooled over every frame of the set; value = ODS F1, OIS in the run summary"))
            # Canny edges are binary: one level. Edge-map inputs are soft: BSDS's evenly spaced thresholds.
            self.levels = bsds_thresholds(count) if self.params["edges"] == "input" else np.array([0.5])

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        # The reference's edges depend on its frames only: cached across runs when a cache folder is set
        # (the device type in the key: detector=auto picks the implementation by device).
        self._ref_cache = ReferenceCache.from_resources(context.resources, "canny_edges",
                                                        {**self._canny_params(), "device_type": context.device.type})

    def reset(self) -> None:
        super().reset()
        self._parts: list[list[Any]] = []

    def _canny_params(self) -> dict[str, Any]:
        return {key: self.params[key] for key in ("sigma", "low_threshold", "high_threshold", "detector")}

    def _edges(self, frames: torch.Tensor) -> np.ndarray:
        if self.params["edges"] == "input":
            return edge_strength(frames) >= 0.5
        return edge_maps(frames, **self._canny_params())

    def _ref_edges(self, batch: FrameBatch) -> np.ndarray:
        """The batch's reference edges, from the reference cache when there is one (hashed once per batch)."""
        cache = getattr(self, "_ref_cache", None)
        if cache is None or self.params["edges"] == "input":
            return self._edges(batch.ref)
        entry = cache((reference_sha256(batch),), lambda: {"edges": torch.from_numpy(self._edges(batch.ref))})
        return entry["edges"].numpy()

    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        max_dist, matching = self.params["max_dist"], self.params["matching"]
        return torch.tensor([edge_precision_recall_f1(p, r, max_dist, matching)[2]
                             for p, r in zip(self._edges(pred), self._ref_edges(self._batch))], dtype=torch.float64)

    def update(self, batch: FrameBatch) -> torch.Tensor | None:
        self._batch = batch  # per_frame's reference frames are the batch's
        if self.params["mode"] == "frame":
            return super().update(batch)
        strengths = edge_strength(batch.pred) if self.params["edges"] == "input" else self._edges(batch.pred)
        for horizon, strength, ref in zip(batch.horizon.tolist(), strengths, self._ref_edges(batch)):
            counts = bsds_edge_counts(strength, ref, self.levels, self.params["max_dist"])
            self._parts.append([horizon, counts.tolist()])
        return None

    def compute(self) -> Any:
        # mode=bsds: the clip's part of the run-level value, [horizon, (4, T) counts] per frame.
        return super().compute() if self.params["mode"] == "frame" else self._parts

    def compute_set(self, parts: list[list[list[Any]]]) -> dict[str, Any] | None:
        if self.params["mode"] == "frame":
            return None
        frames = [frame for part in parts for frame in part]
        if not frames:
            return {"value": math.nan, "n_frames": 0, "per_horizon": []}
        horizons = np.array([horizon for horizon, _ in frames])
        counts = np.array([frame_counts for _, frame_counts in frames], dtype=np.int64)
        scores = bsds_scores(counts, self.levels)
        per_horizon = [{"horizon": int(h), "value": bsds_scores(counts[horizons == h], self.levels)["ods"]["f1"],
                        "n_frames": int((horizons == h).sum())} for h in np.unique(horizons)]
        return {"value": scores["ods"]["f1"], "n_frames": len(frames), **scores, "per_horizon": per_horizon}
