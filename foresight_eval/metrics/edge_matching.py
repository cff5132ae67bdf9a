"""Edge matching on the CPU: Canny's hysteresis linking, the one-to-one matching of edge pixels and the F1
and BSDS counts built on it; the work :class:`foresight_eval.metrics.edges.EdgeF1` hands to a run's worker
processes (:mod:`foresight_eval.workers`).

A module of its own, without torch: the workers' fork server imports the module of the work handed over
before the first worker starts, and with torch (``metrics/edges.py``) the set-up of a fresh `score` run on
the H200's host waited 4-6 s for that import (benchmarks/RESULTS.md, issue 17's eighth session). NumPy and
SciPy only at import; OpenCV (the approximate matching) and scikit-image's ``thin`` (BSDS mode) on first use.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow
from scipy.spatial import cKDTree

WEAK, STRONG = 1, 2  # the values of edges_torch.canny_candidates


def link_edges(candidates: np.ndarray) -> np.ndarray:
    """Canny's hysteresis on the CPU: of ``candidates`` (H, W) uint8 as :func:`edges_torch.canny_candidates`
    gives them (``WEAK``, ``STRONG``, else 0), the 8-connected components of candidate pixels that hold a
    strong one, (H, W) bool; scikit-image's own step (``scipy.ndimage.label``). A bool map is edges already
    and comes back as it is."""
    if candidates.dtype == bool:
        return candidates
    labels, _ = ndimage.label(candidates >= WEAK, structure=np.ones((3, 3), dtype=bool))
    linked = np.zeros(labels.max() + 1, dtype=bool)
    linked[labels[candidates == STRONG]] = True
    linked[0] = False
    return linked[labels]


def edge_f1_of_candidates(pred: np.ndarray, ref: np.ndarray, max_dist: float = 0.0075,
                          matching: str = "exact") -> float:
    """:func:`edge_f1_value` of two maps of Canny candidates (or edges), linked here: run in the worker
    processes, so that the GPU's host never waits for the linking."""
    return edge_f1_value(link_edges(pred), link_edges(ref), max_dist, matching)


# _pairs_within looks offsets up while the disc of the radius holds at most this many of them (radius about
# 11 pixels: the default max_dist at 1280x720, where both ways take the same time), and asks SciPy's k-d tree
# for larger radii; the look-ups are done in blocks of _LOOKUP_BLOCK.
_MOST_OFFSETS = 400
_LOOKUP_BLOCK = 1 << 21


def _pairs_within(pred_points: np.ndarray, ref_points: np.ndarray, shape: tuple[int, int],
                  radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Every (predicted, reference) pair of pixel coordinates (N, 2) at most ``radius`` apart, as index arrays
    into ``pred_points`` and ``ref_points``, grouped by predicted pixel.

    The points are pixels: the integer offsets within a small radius are few (97 at the default 0.0075 x the
    diagonal of 640x360), and looking each predicted pixel's offsets up in an image of reference indices
    finds the pairs faster than SciPy's k-d tree (``cKDTree.query_ball_point``), per Canny map of
    camera-like frames: 0.5 against 1.4 ms at 256x256, 5.3 against 8.7 ms at 640x360, 28 against 32 ms at
    1024x576, 63 ms both at 1280x720. The look-ups grow with the disc's area and the tree's work with the
    neighbours it finds (edges are curves: with the radius), so larger radii go to the tree. Both find the
    same pairs: the look-up's distance test is the tree's, squared integer distance <= radius * radius
    (tests/test_edges_bsds.py compares them)."""
    reach = int(math.floor(radius))
    dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    within = dy * dy + dx * dx <= radius * radius
    if within.sum() > _MOST_OFFSETS:
        neighbours = cKDTree(ref_points).query_ball_point(pred_points, r=radius, return_sorted=False)
        counts = np.fromiter(map(len, neighbours), dtype=np.int64, count=len(pred_points))
        found = np.fromiter(itertools.chain.from_iterable(neighbours), dtype=np.int64, count=int(counts.sum()))
        return np.repeat(np.arange(len(pred_points)), counts), found
    dy, dx = dy[within], dx[within]
    height, width = shape
    ref_index = np.full((height + 2 * reach, width + 2 * reach), -1, dtype=np.int64)  # padded: no bounds checks
    ref_index[ref_points[:, 0] + reach, ref_points[:, 1] + reach] = np.arange(len(ref_points))
    pred_parts, ref_parts = [], []
    step = max(1, _LOOKUP_BLOCK // len(dy))
    for start in range(0, len(pred_points), step):
        block = pred_points[start:start + step] + reach
        found = ref_index[block[:, :1] + dy, block[:, 1:] + dx]  # (pixels, offsets)
        rows, columns = np.nonzero(found >= 0)
        pred_parts.append(rows + start)
        ref_parts.append(found[rows, columns])
    return np.concatenate(pred_parts), np.concatenate(ref_parts)


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
    pred_of_pair, ref_of_pair = _pairs_within(pred_points, ref_points, pred.shape, radius)
    # Nodes: 0 the source, 1..n_pred the predicted pixels, then the reference pixels, last the sink.
    sink = n_pred + n_ref + 1
    pred_nodes = np.arange(1, n_pred + 1)
    ref_nodes = np.arange(n_pred + 1, sink)
    rows = np.concatenate([np.zeros(n_pred, dtype=np.int64), pred_of_pair + 1, ref_nodes])
    cols = np.concatenate([pred_nodes, ref_of_pair + n_pred + 1, np.full(n_ref, sink)])
    graph = csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(sink + 1, sink + 1))
    return int(maximum_flow(graph, 0, sink, method="dinic").flow_value)


def edge_match_counts(pred: np.ndarray, ref: np.ndarray, radius: float, matching: str = "exact") -> tuple[int, int]:
    """(matched predicted pixels, matched reference pixels) of two (H, W) edge maps within ``radius``."""
    if matching == "approx":
        if not pred.any() or not ref.any():
            return 0, 0
        import cv2  # see the module's docstring

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


def edge_f1_value(pred: np.ndarray, ref: np.ndarray, max_dist: float = 0.0075, matching: str = "exact") -> float:
    """F1 of one predicted (H, W) edge map against its reference (a worker's task in a run's pool)."""
    return edge_precision_recall_f1(pred, ref, max_dist, matching)[2]


def bsds_edge_counts(strength: np.ndarray, ref: np.ndarray, thresholds: np.ndarray,
                     max_dist: float = 0.0075) -> np.ndarray:
    """BSDS counts of one frame: a (4, T) int64 array whose rows are matched reference pixels, reference
    pixels, matched predicted pixels and predicted pixels at each threshold; the predicted edges at
    threshold t are ``strength >= t``, thinned. ``ref``: the reference's (H, W) bool edges."""
    from skimage.morphology import thin  # see the module's docstring

    radius = max_dist * math.hypot(*ref.shape)
    counts = np.zeros((4, len(thresholds)), dtype=np.int64)
    counts[1] = ref.sum()
    for column, threshold in enumerate(thresholds):
        edges = thin(strength >= threshold)
        matched = max_edge_matching(edges, ref, radius)
        counts[:, column] = matched, counts[1, column], matched, edges.sum()
    return counts
