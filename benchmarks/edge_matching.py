"""Seconds per frame of edge_f1's one-to-one matcher on dense edge maps, both ways (SciPy's maximum flow, as
the run's own process matches; the compiled Hopcroft-Karp, as the workers do), against the matcher it replaced
(SciPy's Hopcroft-Karp, ``maximum_bipartite_matching``) and BSDS's ``correspondPixels`` (pyEdgeEval's
build of the benchmark's C++, if installed); CPU only:

    python benchmarks/edge_matching.py                   # 640x272 and 768x512, Canny and Sobel maps
    python benchmarks/edge_matching.py --timeout 600

Maps: scikit-image Canny of a smoothed-noise texture (~9% of pixels are edges) and the same texture's
Sobel magnitude above its 70th percentile (30%); the reference is the prediction shifted 2 pixels. The
replaced matcher runs in a child process, killed after --timeout seconds (reported as "> timeout").
"""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing
import sys
import time

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from foresight_eval.metrics import edge_matching
from foresight_eval.metrics.edge_matching import max_edge_matching
from foresight_eval.metrics.edges import edge_maps


def texture(height: int, width: int) -> np.ndarray:
    noise = np.random.default_rng(0).random((height // 12, width // 12, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def maps(kind: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    image = texture(height, width)
    if kind == "canny":
        edges = edge_maps(torch.from_numpy(image).permute(2, 0, 1)[None])[0]
    else:
        gray = image.mean(axis=2)
        magnitude = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
        edges = magnitude > np.quantile(magnitude, 0.7)
    return edges, np.roll(edges, 2, axis=1)


def hopcroft_karp(pred: np.ndarray, ref: np.ndarray, radius: float, out) -> None:
    pred_points, ref_points = np.argwhere(pred), np.argwhere(ref)
    neighbours = cKDTree(ref_points).query_ball_point(pred_points, r=radius)
    rows = np.repeat(np.arange(len(pred_points)), [len(n) for n in neighbours])
    cols = np.fromiter((j for n in neighbours for j in n), dtype=np.int64, count=len(rows))
    graph = csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(pred_points), len(ref_points)))
    start = time.perf_counter()
    matched = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
    out.put((matched, time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="640x272,768x512")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    try:
        from pyEdgeEval._lib import correspond_pixels
    except ImportError:
        correspond_pixels = None
    # Compiled (or loaded from Numba's cache) at import; out of sys.modules again, so that max_edge_matching
    # takes SciPy's way in this process, as in a run's own process.
    compiled = importlib.import_module(edge_matching.COMPILED_MATCHING)
    del sys.modules[edge_matching.COMPILED_MATCHING]
    print("| map | size | edge pixels | max flow (ours, inline) s | compiled (ours, workers) s | matched "
          "| Hopcroft-Karp s | matched | correspondPixels s | matched |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        radius = 0.0075 * math.hypot(height, width)
        for kind in ("canny", "sobel"):
            pred, ref = maps(kind, height, width)
            start = time.perf_counter()
            ours = max_edge_matching(pred, ref, radius)
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            if edge_matching._compiled_matching(pred, ref, radius, compiled) != ours:
                raise SystemExit(f"{kind} {size}: the compiled matcher's count differs from the max flow's")
            compiled_s = time.perf_counter() - start
            queue = multiprocessing.Queue()
            child = multiprocessing.Process(target=hopcroft_karp, args=(pred, ref, radius, queue))
            child.start()
            child.join(args.timeout)
            if child.is_alive():
                child.kill()
                child.join()
                hk = (f"> {args.timeout:g}", "-")
            else:
                matched, seconds = queue.get()
                hk = (f"{seconds:.2f}", str(matched))
            bsds = ("-", "-")
            if correspond_pixels is not None:
                start = time.perf_counter()
                theirs = correspond_pixels(pred, ref, max_dist=0.0075)[0]
                bsds = (f"{time.perf_counter() - start:.2f}", str(int((theirs > 0).sum())))
            print(f"| {kind} | {size} | {int(pred.sum())} | {ours_s:.3f} | {compiled_s:.3f} | {ours} | {hk[0]} | {hk[1]} "
                  f"| {bsds[0]} | {bsds[1]} |")


if __name__ == "__main__":
    main()
