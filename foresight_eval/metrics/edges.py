"""Edge F1: do the predicted frames have their edges where the reference's are?

Edge F1
-------
Canny edges (``skimage.feature.canny``, sigma 1, low/high thresholds 0.1/0.2 of the gradient magnitude
of the ``skimage.color.rgb2gray`` luminance in [0, 1]) of predicted and reference frames, matched
within a distance of ``max_dist`` times the frame diagonal (default 0.0075, as the BSDS boundary
benchmark). With ``edges=input`` the clips are edge maps themselves (e.g. an edge detector's output):
the reference's luminance >= 0.5 is its edges, the prediction's luminance is an edge strength.

``mode=frame`` (default): precision, recall and F1 per frame, the clip's value the mean over frames.
``matching=exact``: one-to-one matching as BSDS does; the matched count is that of a maximum
bipartite matching between edge pixels within the tolerance (:func:`.edge_matching.max_edge_matching`).
``matching=approx``: a pixel counts as matched if any edge pixel of the other map lies within the
tolerance (OpenCV's exact Euclidean distance transform); it is not one to one, so it is never below
the exact value. Precision = matched predicted / predicted pixels, recall = matched reference /
reference pixels; an empty map has precision (or recall) 1, so two empty maps give F1 = 1.
``detector=auto`` (default) runs the same Canny in torch ops when the frames are on a GPU
(:mod:`foresight_eval.metrics.edges_torch`), scikit-image's on the CPU; ``skimage`` / ``torch`` force one.
The torch Canny computes in ``canny_dtype``: ``float32`` (default; maps equal to scikit-image's on the fixtures
and on >= 99.99% of the pixels of each dense camera-like test frame, edge F1 within 1e-3, tests/test_edges_torch.py)
or ``float64``, scikit-image's own precision (equal maps but for magnitude ties at a threshold), which takes about
1.6x the GPU time (docs/edges-and-detection.md).

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
than any distance, it maximises the matched count, which :func:`.edge_matching.max_edge_matching` computes exactly.
docs/edges-and-detection.md gives the measured parity with pyEdgeEval.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import torch

from foresight_eval.device_copies import to_host_async
from foresight_eval.errors import UsageError
from foresight_eval.feature_cache import ReferenceCache, reference_sha256
from foresight_eval.metrics.base import (
    FrameBatch,
    FrameMetric,
    MetricInfo,
    RunContext,
    RunningMean,
    over_threads,
)
from foresight_eval.metrics.edge_matching import bsds_edge_counts, edge_f1_of_packed_candidates, edge_f1_value
from foresight_eval.metrics.edges_torch import canny_candidates, pack_candidates
from foresight_eval.metrics.edges_torch import canny as canny_torch
from foresight_eval.metrics.graphs import GraphedFunction
from foresight_eval.metrics.registry import register
from foresight_eval.workers import INLINE, Deferred, Joined

# --- edges -----------------------------------------------------------------------------------------


EDGE_DETECTORS = ("auto", "skimage", "torch")
# The torch Canny's arithmetic, by its parameter's name (edge_f1.canny_dtype).
CANNY_DTYPES = {"float32": torch.float32, "float64": torch.float64}
CANNY_THRESHOLDS = ("sigma", "low_threshold", "high_threshold")  # edge_f1's parameters that both Cannys take


def edge_maps(frames: torch.Tensor, sigma: float = 1.0, low_threshold: float = 0.1,
              high_threshold: float = 0.2, detector: str = "skimage", canny_dtype: str = "float32") -> np.ndarray:
    """Canny edges of (B, 3, H, W) frames in [0, 1]: (B, H, W) bool. ``detector="skimage"``: scikit-image's
    ``feature.canny`` of ``color.rgb2gray``, frame by frame on the CPU; ``"torch"``: the same steps in torch
    ops on the frames' device, in ``canny_dtype`` (:mod:`foresight_eval.metrics.edges_torch`); ``"auto"``: torch
    on a GPU, scikit-image on the CPU (where it is the faster of the two)."""
    if detector == "torch" or (detector == "auto" and frames.device.type != "cpu"):
        return canny_torch(frames, sigma=sigma, low_threshold=low_threshold, high_threshold=high_threshold,
                           dtype=CANNY_DTYPES[canny_dtype]).cpu().numpy()
    from skimage.color import rgb2gray  # on first use, as edge_strength's: with the SciPy modules it pulls in,
    from skimage.feature import canny  # 0.2 s of every `score` process's start-up on the 2-core machine

    images = frames.detach().permute(0, 2, 3, 1).double().cpu().numpy()
    # scikit-image's Canny runs on one core per frame: frames in parallel threads.
    return np.stack(over_threads(lambda image: canny(rgb2gray(image), sigma=sigma, low_threshold=low_threshold,
                                                     high_threshold=high_threshold), images))


def edge_strength(frames: torch.Tensor) -> np.ndarray:
    """Frames that are edge maps, as edge strength: the ``rgb2gray`` luminance of (B, 3, H, W) frames in
    [0, 1], (B, H, W) float64 (a grey frame's own value: the luminance weights sum to 1)."""
    from skimage.color import rgb2gray  # see edge_maps

    return rgb2gray(frames.detach().permute(0, 2, 3, 1).double().cpu().numpy())


def edge_f1(pred: torch.Tensor, ref: torch.Tensor, *, max_dist: float = 0.0075, matching: str = "exact",
            sigma: float = 1.0, low_threshold: float = 0.1, high_threshold: float = 0.2, detector: str = "auto",
            canny_dtype: str = "float32", ref_edges: np.ndarray | None = None) -> torch.Tensor:
    """Edge F1 per frame: (B, 3, H, W) pairs in [0, 1] in, (B,) float64 out (``ref_edges``: the reference's
    edge maps when already known)."""
    canny_params = {"sigma": sigma, "low_threshold": low_threshold, "high_threshold": high_threshold,
                    "detector": detector, "canny_dtype": canny_dtype}
    pred_edges = edge_maps(pred, **canny_params)
    ref_edges = edge_maps(ref, **canny_params) if ref_edges is None else ref_edges
    return torch.tensor([edge_f1_value(p, r, max_dist, matching) for p, r in zip(pred_edges, ref_edges)],
                        dtype=torch.float64)


def _float64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _mean_in_batch_order(batches: list[torch.Tensor]) -> float:
    """The mean of a clip's per-frame values, summed batch by batch in order as ``FrameMetric.update`` does."""
    running = RunningMean()
    for values in batches:
        running.add(values)
    return running.mean()


# --- BSDS boundary benchmark -----------------------------------------------------------------------


def bsds_thresholds(count: int) -> np.ndarray:
    """BSDS's ``count`` evenly spaced thresholds strictly inside (0, 1): 1/(N+1), ..., N/(N+1)."""
    return np.linspace(1 / (count + 1), 1 - 1 / (count + 1), count)


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


# Steps 1-3 of Canny, about 75 kernels per batch: on a GPU replayed from CUDA graphs (metrics/graphs.py), kept
# for the process, as a later run of the same frame size replays them without a new capture.
_canny_candidates_graphed = GraphedFunction(canny_candidates)


@register
class EdgeF1(FrameMetric):
    reads_reference_cache = True
    info = MetricInfo(
        name="edge_f1",
        description="F1 of Canny edges (scikit-image) matched one to one within max_dist x frame diagonal, mean "
        "over frames (matching=approx: distance transform, not one to one; mode=bsds: the BSDS benchmark's "
        "thinned, set-pooled ODS F1, a run-level value)",
        direction="higher",
    )
    defaults = {"mode": "frame", "max_dist": 0.0075, "matching": "exact", "edges": "canny", "thresholds": 99,
                "sigma": 1.0, "low_threshold": 0.1, "high_threshold": 0.2, "detector": "auto",
                "canny_dtype": "float32"}
    choices = {"mode": ("frame", "bsds"), "matching": ("exact", "approx"), "edges": ("canny", "input"),
               "detector": EDGE_DETECTORS, "canny_dtype": tuple(CANNY_DTYPES)}

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
        self._pool = INLINE  # until setup gives the run's

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        # The reference's edges depend on its frames only: cached across runs when a cache folder is set
        # (the device type in the key: detector=auto picks the implementation by device).
        self._ref_cache = ReferenceCache.from_resources(context.resources, "canny_edges",
                                                        {**self._canny_params(), "device_type": context.device.type})
        self._ref_candidates_cache = ReferenceCache.from_resources(context.resources, "canny_candidates",
                                                                   self._chosen(*CANNY_THRESHOLDS, "canny_dtype"))
        # The matching (a pixel look-up and a maximum flow per frame, on the CPU) overlaps the device's work there.
        self._pool = context.pool
        self._pool.warm_up(edge_f1_of_packed_candidates)

    def reset(self) -> None:
        # Per batch, the matching handed to the pool: frame mode its F1s, bsds mode [horizons, counts per frame].
        # No running mean of FrameMetric's: compute() gives the mean once the pool's values are in.
        self._pending: list[Deferred] = []
        self._bsds_pending: list[tuple[list[int], Deferred]] = []

    def _chosen(self, *names: str) -> dict[str, Any]:
        return {name: self.params[name] for name in names}

    def _canny_params(self) -> dict[str, Any]:
        """:func:`edge_maps`' keyword arguments."""
        return self._chosen(*CANNY_THRESHOLDS, "detector", "canny_dtype")

    def _candidates_params(self) -> dict[str, Any]:
        """:func:`.edges_torch.canny_candidates`' keyword arguments."""
        return {**self._chosen(*CANNY_THRESHOLDS), "dtype": CANNY_DTYPES[self.params["canny_dtype"]]}

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

    def _canny_in_torch(self, frames: torch.Tensor) -> bool:
        detector = self.params["detector"]
        return self.params["edges"] == "canny" and (
            detector == "torch" or (detector == "auto" and frames.device.type != "cpu"))

    def _ref_candidates(self, batch: FrameBatch) -> torch.Tensor:
        """The batch's reference Canny candidates: on the device, or on the CPU from the reference cache."""
        cache, params = getattr(self, "_ref_candidates_cache", None), self._candidates_params()
        if cache is None:
            return _canny_candidates_graphed(batch.ref, **params)
        entry = cache((reference_sha256(batch),), lambda: {"candidates": _canny_candidates_graphed(batch.ref, **params)})
        return entry["candidates"]

    def _frame_values(self, pred: torch.Tensor, batch: FrameBatch) -> Deferred:
        """The per-frame F1s of ``pred`` against the batch's reference, matched in the pool. With Canny in
        torch, steps 1-3 run on the device and the maps go to the pool as bits once copied, linked there: the
        host does not wait for the device."""
        repeat = itertools.repeat(self.params["max_dist"]), itertools.repeat(self.params["matching"])
        if not self._canny_in_torch(pred):
            return self._pool.map(edge_f1_value, self._edges(pred), self._ref_edges(batch), *repeat, combine=_float64)
        pred_candidates = _canny_candidates_graphed(pred, **self._candidates_params())
        (pred_maps, ref_maps), ready = to_host_async(pack_candidates(pred_candidates),
                                                     pack_candidates(self._ref_candidates(batch)))
        return self._pool.map_when_ready(ready, edge_f1_of_packed_candidates, pred_maps, ref_maps,
                                         itertools.repeat(pred.shape[-1]), *repeat, combine=_float64)

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        return self._frame_values(batch.pred, batch).result()

    def update(self, batch: FrameBatch) -> Deferred | None:
        if self.params["mode"] == "frame":
            self._pending.append(self._frame_values(batch.pred, batch))
            return self._pending[-1]
        strengths = edge_strength(batch.pred) if self.params["edges"] == "input" else self._edges(batch.pred)
        counts = self._pool.map(bsds_edge_counts, strengths, self._ref_edges(batch), itertools.repeat(self.levels),
                                itertools.repeat(self.params["max_dist"]))
        self._bsds_pending.append((batch.horizon.tolist(), counts))
        return None

    def compute(self) -> Deferred:
        """The clip's value once its matching in the pool is done: a Deferred, which the engine waits for when
        it finishes the clip (after scoring the next one)."""
        if self.params["mode"] == "frame":
            return Joined(self._pending, _mean_in_batch_order)
        # mode=bsds: the clip's part of the run-level value, [horizon, (4, T) counts] per frame.
        horizons = [batch_horizons for batch_horizons, _ in self._bsds_pending]

        def frames(counts_per_batch: list[list[np.ndarray]]) -> list[list[Any]]:
            return [[horizon, counts.tolist()] for batch_horizons, batch_counts in zip(horizons, counts_per_batch)
                    for horizon, counts in zip(batch_horizons, batch_counts)]
        return Joined([pending for _, pending in self._bsds_pending], frames)

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
