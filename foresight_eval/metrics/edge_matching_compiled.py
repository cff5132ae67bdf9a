"""edge_f1's one-to-one matching compiled (Numba): the pairs of edge pixels within the radius by the offset
look-up of :func:`foresight_eval.metrics.edge_matching._pairs_within`, and Hopcroft and Karp's maximum
bipartite matching over them (Hopcroft & Karp, "An n^5/2 algorithm for maximum matchings in bipartite graphs",
SIAM J. Comput. 2(4), 1973).

Written here, not taken from a library, because the libraries at hand spend most of a frame's matching on
generic work around the algorithm: SciPy's ``maximum_flow`` (Dinic) took 2.8 ms of a 640x360 camera-like
frame's 6.2 ms (its graph's construction and checks 0.7 ms, the NumPy look-up 1.6 ms), OR-tools' push-relabel
3.6 ms and igraph's 7.7 ms for the flow part, graph included; this module 1.6 ms in all (2-core machine;
benchmarks/RESULTS.md, issue 17's eighteenth session). SciPy's own Hopcroft-Karp
(``maximum_bipartite_matching``) did not finish in a minute on dense maps (benchmarks/edge_matching.py). The
counts equal SciPy's maximum flow's: both are maximum matchings (tests/test_edges_bsds.py compares them on
random and Canny maps).

Used where it is loaded: the worker pool's fork server imports it for every worker
(``edge_matching.WORKER_PRELOAD``), once a process: 0.35 s from Numba's cache, about 1 s to compile the first
time a checkout runs it. The run's own process never imports it and matches inline with SciPy, which is
imported already: a CPU run matches too few frames for the compiled code's load to pay (0.35 s against
4.7 ms saved a 640x360 frame).
"""

from __future__ import annotations

import numba
import numpy as np

# Signatures given: compiled (or loaded from Numba's cache) at import, in the fork server, before the workers
# are forked from it; nogil: nothing here needs the interpreter.
_COMPILE = {"cache": True, "nogil": True}


@numba.njit("Tuple((int32[::1], int32[::1]))(int32[::1], int32[::1], int32[::1])", **_COMPILE)
def pairs_by_look_up(pred_flat: np.ndarray, ref_index: np.ndarray,
                     offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference pixels within the radius of each predicted pixel, as CSR rows ``(indptr, neighbours)``:
    ``pred_flat`` the predicted pixels' flat indices into the padded map, ``ref_index`` the padded map of
    reference indices (-1: none), ``offsets`` the disc's flat offsets, all as ``edge_matching._look_up_tables``
    makes them. Two passes (count, then fill): no list grows."""
    count = len(pred_flat)
    indptr = np.zeros(count + 1, np.int32)
    for row in range(count):
        found = 0
        for offset in offsets:
            if ref_index[pred_flat[row] + offset] >= 0:
                found += 1
        indptr[row + 1] = indptr[row] + found
    neighbours = np.empty(indptr[count], np.int32)
    for row in range(count):
        at = indptr[row]
        for offset in offsets:
            ref = ref_index[pred_flat[row] + offset]
            if ref >= 0:
                neighbours[at] = ref
                at += 1
    return indptr, neighbours


@numba.njit("int64(int32[::1], int32[::1], int64)", **_COMPILE)
def hopcroft_karp(indptr: np.ndarray, neighbours: np.ndarray, n_ref: int) -> int:
    """The size of a maximum matching of the bipartite graph whose predicted pixel ``p`` may pair with the
    reference pixels ``neighbours[indptr[p]:indptr[p + 1]]`` (``n_ref`` of them in all).

    A greedy matching first, then phases: a breadth-first search from the free predicted pixels layers the
    graph by alternating path length, and depth-first searches (iterative: a path may be thousands of pixels
    long) along the layers augment by vertex-disjoint shortest paths, each pixel's next edge kept across the
    phase's searches and a dead end taken out of its layer. When no free reference pixel is reachable there is
    no augmenting path: the matching is maximum (Berge)."""
    count = len(indptr) - 1
    unreached = np.int32(2**30)
    partner_of_pred = np.full(count, -1, np.int32)
    partner_of_ref = np.full(n_ref, -1, np.int32)
    matched = 0
    for pred in range(count):
        for at in range(indptr[pred], indptr[pred + 1]):
            if partner_of_ref[neighbours[at]] < 0:
                partner_of_pred[pred] = neighbours[at]
                partner_of_ref[neighbours[at]] = pred
                matched += 1
                break
    layer = np.empty(count, np.int32)
    queue = np.empty(count, np.int32)
    next_edge = np.empty(count, np.int32)
    path = np.empty(count, np.int32)
    while True:
        queued = 0
        for pred in range(count):
            if partner_of_pred[pred] < 0:
                layer[pred] = 0
                queue[queued] = pred
                queued += 1
            else:
                layer[pred] = unreached
        free_ref_reached = False
        head = 0
        while head < queued:
            pred = queue[head]
            head += 1
            for at in range(indptr[pred], indptr[pred + 1]):
                partner = partner_of_ref[neighbours[at]]
                if partner < 0:
                    free_ref_reached = True
                elif layer[partner] == unreached:
                    layer[partner] = layer[pred] + 1
                    queue[queued] = partner
                    queued += 1
        if not free_ref_reached:
            return matched
        next_edge[:] = indptr[:count]
        for start in range(count):
            if partner_of_pred[start] >= 0:
                continue
            depth = 0
            path[0] = start
            while depth >= 0:
                pred = path[depth]
                stepped = False
                while next_edge[pred] < indptr[pred + 1]:
                    partner = partner_of_ref[neighbours[next_edge[pred]]]
                    if partner < 0:  # a free reference pixel: flip the path's pairs
                        for step in range(depth, -1, -1):
                            on_path = path[step]
                            partner_of_pred[on_path] = neighbours[next_edge[on_path]]
                            partner_of_ref[neighbours[next_edge[on_path]]] = on_path
                        matched += 1
                        depth = -1
                        stepped = True
                        break
                    if layer[partner] == layer[pred] + 1:
                        depth += 1
                        path[depth] = partner
                        stepped = True
                        break
                    next_edge[pred] += 1
                if not stepped:  # a dead end: out of the layers for this phase
                    layer[pred] = unreached
                    depth -= 1
                    if depth >= 0:
                        next_edge[path[depth]] += 1
