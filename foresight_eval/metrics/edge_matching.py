"""Edge matching on the CPU: Canny's hysteresis linking, the one-to-one matching of edge pixels and the F1
and BSDS counts built on it; the work :class:`foresight_eval.metrics.edges.EdgeF1` hands to a run's worker
processes (:mod:`foresight_eval.workers`).

A module of its own, without torch: the workers' fork server imports the module of the work handed over
before the first worker starts, and with torch (``metrics/edges.py``) the set-up of a fresh `score` run on
the H200's host waited 4-6 s for that import (benchmarks/RESULTS.md, issue 17's eighth session). NumPy and
OpenCV at import (OpenCV after NumPy adds about 15 ms); SciPy's graph and k-d tree on first use, which the
fork server imports before the workers start (:data:`WORKER_PRELOAD`), so that the run's own process, which
only names these functions, does not (SciPy's modules were about 0.1 s of every `score` process's start-up
on the 2-core machine; issue 17's fifteenth session); scikit-image's ``thin`` (BSDS mode) on first use. The
fork server also loads the compiled matcher (:data:`COMPILED_MATCHING`, Numba), which
:func:`max_edge_matching` uses where it is loaded: in the workers, not in the run's own process.
"""

from __future__ import annotations

import itertools
import math
import sys
from types import ModuleType

import cv2
import numpy as np

# The compiled matcher (Numba), used where it is loaded: in the workers, by their fork server.
COMPILED_MATCHING = "foresight_eval.metrics.edge_matching_compiled"
# Imported by the worker pool's fork server with this module (workers.WorkerPool), used here on first use.
WORKER_PRELOAD = ("scipy.sparse.csgraph", "scipy.spatial", COMPILED_MATCHING)
WEAK, STRONG = 1, 2  # the values of edges_torch.canny_candidates


def link_edges(candidates: np.ndarray) -> np.ndarray:
    """Canny's hysteresis on the CPU: of ``candidates`` (H, W) uint8 as :func:`edges_torch.canny_candidates`
    gives them (``WEAK``, ``STRONG``, else 0), the 8-connected components of candidate pixels that hold a
    strong one, (H, W) bool: scikit-image's own step, which labels them with ``scipy.ndimage.label``. The same
    components by OpenCV's labelling (``cv2.connectedComponents``, label 0 the background), which took 0.8
    against 1.4 ms per 640x360 map on the 2-core machine. A bool map is edges already and comes back as it is."""
    if candidates.dtype == bool:
        return candidates
    count, labels = cv2.connectedComponents(np.ascontiguousarray(candidates, dtype=np.uint8), connectivity=8,
                                            ltype=cv2.CV_32S)
    linked = np.zeros(count, dtype=bool)
    linked[labels[candidates == STRONG]] = True
    linked[0] = False
    return linked[labels]


def unpack_candidates(packed: np.ndarray, width: int) -> np.ndarray:
    """The (H, W) uint8 Canny candidates (``WEAK``, ``STRONG``, else 0) of one frame's (2, H, ceil(W / 8))
    bits as :func:`edges_torch.pack_candidates` packs them."""
    candidates, strong = np.unpackbits(packed, axis=-1, count=width)
    return candidates + strong


def edge_f1_of_packed_candidates(pred: np.ndarray, ref: np.ndarray, width: int, max_dist: float = 0.0075,
                                 matching: str = "exact") -> float:
    """:func:`edge_f1_value` of two frames' packed Canny candidates (:func:`unpack_candidates`), linked here:
    run in the worker processes, so that the GPU's host never waits for the linking."""
    return edge_f1_value(link_edges(unpack_candidates(pred, width)), link_edges(unpack_candidates(ref, width)),
                         max_dist, matching)


# _pairs_within looks offsets up while the disc of the radius holds at most this many of them (radius about
# 11 pixels: the default max_dist at 1280x720, where both ways take the same time), and asks SciPy's k-d tree
# for larger radii; the look-ups are done in blocks of _LOOKUP_BLOCK.
_MOST_OFFSETS = 400
_LOOKUP_BLOCK = 1 << 21


def _look_up_tables(pred: np.ndarray, ref: np.ndarray, radius: float) -> tuple[np.ndarray, ...] | None:
    """What :func:`_pairs_within`'s look-up reads, int32: the disc's offsets and the predicted pixels as flat
    indices into the maps padded by the radius (no bounds checks), and the padded map of reference indices
    (-1: none), flat. None where the disc holds more than ``_MOST_OFFSETS`` offsets: the k-d tree's case."""
    reach = int(math.floor(radius))
    dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    within = dy * dy + dx * dx <= radius * radius
    if within.sum() > _MOST_OFFSETS:
        return None
    height, width = pred.shape
    padded_width = width + 2 * reach
    offsets = (dy[within] * padded_width + dx[within]).astype(np.int32)
    ref_index = np.full((height + 2 * reach, padded_width), -1, dtype=np.int32)
    ref_index[reach:reach + height, reach:reach + width][ref] = np.arange(int(ref.sum()), dtype=np.int32)
    pred_flat = np.flatnonzero(np.pad(pred, reach)).astype(np.int32)
    return offsets, pred_flat, ref_index.ravel()


def _pairs_within(pred: np.ndarray, ref: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Every (predicted, reference) pair of edge pixels of the (H, W) bool maps at most ``radius`` apart, as
    index arrays into the maps' pixels in row-major order (``np.argwhere``'s), grouped by predicted pixel in
    that order.

    The points are pixels: the integer offsets within a small radius are few (97 at the default 0.0075 x the
    diagonal of 640x360), and looking each predicted pixel's offsets up in an image of reference indices
    finds the pairs faster than SciPy's k-d tree (``cKDTree.query_ball_point``), per Canny map of
    camera-like frames: 0.5 against 1.4 ms at 256x256, 5.3 against 8.7 ms at 640x360, 28 against 32 ms at
    1024x576, 63 ms both at 1280x720. (Those figures are the first look-up's, on (y, x) points. Over flat
    int32 indices it takes 1.9 against 4.6 ms at 640x360, the listing of the pixels included.) The look-ups
    grow with the disc's area and the tree's work with the neighbours it finds (edges are curves: with the
    radius), so larger radii go to the tree. Both find the same pairs: the look-up's distance test is the
    tree's, squared integer distance <= radius * radius (tests/test_edges_bsds.py compares them)."""
    tables = _look_up_tables(pred, ref, radius)
    if tables is None:
        from scipy.spatial import cKDTree  # see the module's docstring

        pred_points, ref_points = np.argwhere(pred), np.argwhere(ref)
        neighbours = cKDTree(ref_points).query_ball_point(pred_points, r=radius, return_sorted=False)
        counts = np.fromiter(map(len, neighbours), dtype=np.int64, count=len(pred_points))
        found = np.fromiter(itertools.chain.from_iterable(neighbours), dtype=np.int64, count=int(counts.sum()))
        return np.repeat(np.arange(len(pred_points)), counts), found
    offsets, pred_flat, ref_index = tables
    pred_parts, ref_parts = [], []
    step = max(1, _LOOKUP_BLOCK // len(offsets))
    for start in range(0, len(pred_flat), step):
        found = ref_index[pred_flat[start:start + step, None] + offsets]  # (pixels, offsets)
        hit = found >= 0
        pred_parts.append(np.repeat(np.arange(start, start + len(found)), hit.sum(axis=1)))
        ref_parts.append(found[hit])  # row-major: grouped by predicted pixel
    return np.concatenate(pred_parts), np.concatenate(ref_parts)


def _rows(pred_of_pair: np.ndarray, n_pred: int) -> np.ndarray:
    """Where each predicted pixel's pairs start in :func:`_pairs_within`'s arrays (and where the last ends)."""
    return np.concatenate([[0], np.cumsum(np.bincount(pred_of_pair, minlength=n_pred))])


def _compiled_matching(pred: np.ndarray, ref: np.ndarray, radius: float, compiled: ModuleType) -> int:
    """:func:`max_edge_matching` by the compiled matcher (``edge_matching_compiled``): its look-up, or the
    k-d tree's pairs for large radii, then Hopcroft-Karp."""
    tables = _look_up_tables(pred, ref, radius)
    if tables is None:
        pred_of_pair, ref_of_pair = _pairs_within(pred, ref, radius)
        indptr, neighbours = _rows(pred_of_pair, int(pred.sum())).astype(np.int32), ref_of_pair.astype(np.int32)
    else:
        offsets, pred_flat, ref_index = tables
        indptr, neighbours = compiled.pairs_by_look_up(pred_flat, ref_index, offsets)
    return int(compiled.hopcroft_karp(indptr, neighbours, int(ref.sum())))


def max_edge_matching(pred: np.ndarray, ref: np.ndarray, radius: float) -> int:
    """Pairs in a maximum one-to-one matching of the edge pixels of two (H, W) bool maps, where a
    predicted and a reference pixel may pair when at most ``radius`` pixels apart (Euclidean).

    A maximum flow (Dinic's algorithm, ``scipy.sparse.csgraph.maximum_flow``) from a source through each
    predicted pixel, the within-radius pairs and each reference pixel to a sink, every capacity 1. On
    such a unit network Dinic runs in O(E sqrt(V)): 0.2 s on a 640x272 Canny map of a textured image,
    where SciPy's ``maximum_bipartite_matching`` (Hopcroft-Karp) did not finish in a minute
    (benchmarks/edge_matching.py). Where the compiled matcher is loaded (the workers: :data:`WORKER_PRELOAD`)
    it finds the same count 4-6x faster (``edge_matching_compiled``, whose docstring says why it is ours)."""
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 or n_ref == 0:
        return 0
    compiled = sys.modules.get(COMPILED_MATCHING)
    if compiled is not None:
        return _compiled_matching(pred, ref, radius, compiled)
    from scipy.sparse import csr_matrix  # see the module's docstring
    from scipy.sparse.csgraph import maximum_flow

    pred_of_pair, ref_of_pair = _pairs_within(pred, ref, radius)
    # Nodes: 0 the source, 1..n_pred the predicted pixels, then the reference pixels, last the sink. The
    # pairs come grouped by predicted pixel, so the rows are laid out directly (no sort of a COO list).
    sink = n_pred + n_ref + 1
    pairs = len(ref_of_pair)
    indptr = np.concatenate([[0], n_pred + _rows(pred_of_pair, n_pred),
                             n_pred + pairs + np.arange(1, n_ref + 1), [n_pred + pairs + n_ref]])
    indices = np.concatenate([np.arange(1, n_pred + 1), ref_of_pair + (n_pred + 1), np.full(n_ref, sink)])
    graph = csr_matrix((np.ones(len(indices), dtype=np.int32), indices.astype(np.int32), indptr.astype(np.int32)),
                       shape=(sink + 1, sink + 1))
    graph.sort_indices()  # within a row the look-up's pairs come in offset order
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
