"""Time and peak memory of each latent metric against the NumPy / scikit-learn / SciPy code a user would
write for it, on the same random latent sets, with same-run ratios.

    python benchmarks/latent_metrics.py --quick                  # small sizes, a couple of minutes on CPU
    python benchmarks/latent_metrics.py --device cuda            # N = 10,000 / 100,000 x D = 1,024 / 4,096
    python benchmarks/latent_metrics.py --sizes 10000x1024 --metrics cka,probe_r2

Ours runs on --device (float64 cores); the baselines always run on the CPU, in float64:
  cka, cka_biased     Kornblith et al.'s sample-space code: N x N Gram matrices (np.dot, centring), debiased / biased
  cka_rbf             Kornblith's gram_rbf + cka(debiased=True), on the same fixed-seed subset of max_items items
  probe_r2            cross_val_score(RidgeCV(alphas, cv=GroupKFold(5)), X, Y, cv=GroupKFold(5), groups) (one row per item)
  rsa_spearman        scipy spearmanr(pdist(X, "correlation"), pdist(Y, "correlation")) on the same subset as ours
  neighbourhood_recall  sklearn NearestNeighbors(k + 1, metric="cosine").kneighbors on both sets
  latent_cosine       row-wise NumPy cosine
  intrinsic_dim       scikit-dimension's TwoNN on set A
A baseline is skipped (and says so) when its float64 working set would exceed --baseline-memory-gib
(24 by default) or its estimated arithmetic exceeds --baseline-max-flop.

Peak memory: on CUDA, torch.cuda.max_memory_allocated; on the CPU, the peak resident set size above
the level before the call (freed heap returned first with malloc_trim), sampled every millisecond from
/proc/self/statm (tracemalloc does not see torch's allocations); a lower bound, coarse below ~10 MiB.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from foresight_eval.metrics import latent as lm

FULL_SIZES = ((10_000, 1_024), (10_000, 4_096), (100_000, 1_024), (100_000, 4_096))
QUICK_SIZES = ((2_000, 256), (5_000, 512))
METRICS = ("cka", "cka_biased", "cka_rbf", "probe_r2", "rsa_spearman", "neighbourhood_recall", "latent_cosine",
           "intrinsic_dim")
RBF_ITEMS, RSA_ITEMS, K = 5_000, 4_000, 10
GIB = 1 << 30


class PeakRSS:
    """Peak resident memory above the starting level, polled from a thread."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._running = True
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while self._running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra(self) -> int:
        return self.peak - self.start


@dataclass
class Measure:
    seconds: float
    peak_bytes: int
    value: float


def measure(fn: Callable[[], float], device: torch.device) -> Measure:
    gc.collect()
    # Hand freed heap pages back to the OS, so that a call reusing them still shows up in the RSS peak.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        value = fn()
        torch.cuda.synchronize(device)
        return Measure(time.perf_counter() - start, torch.cuda.max_memory_allocated(device) - before, value)
    with PeakRSS() as rss:
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
    return Measure(seconds, rss.extra, value)


def make_sets(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two related float32 latent sets: B is a random linear map of a 64-factor code of A, plus noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 64), dtype=np.float32)
    a = z @ rng.standard_normal((64, d), dtype=np.float32) + rng.standard_normal((n, d), dtype=np.float32)
    b = np.tanh(z @ rng.standard_normal((64, d), dtype=np.float32) / 8) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return a, b


def subset(n: int, limit: int) -> np.ndarray:
    chosen = lm._subsample(n, limit, 0, torch.device("cpu"))
    return np.arange(n) if chosen is None else chosen.numpy()


# The obvious user code, kept as the reference implementations write it.
def kornblith_center(gram: np.ndarray, unbiased: bool) -> np.ndarray:
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
        return gram
    means = gram.mean(0)
    means -= means.mean() / 2
    gram -= means[:, None]
    gram -= means[None, :]
    return gram


def kornblith_cka(gram_x: np.ndarray, gram_y: np.ndarray, unbiased: bool = False) -> float:
    gram_x, gram_y = kornblith_center(gram_x, unbiased), kornblith_center(gram_y, unbiased)
    return float(gram_x.ravel().dot(gram_y.ravel()) / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def kornblith_gram_rbf(x: np.ndarray, threshold: float) -> np.ndarray:
    dots = x.dot(x.T)
    sq_norms = np.diag(dots)
    sq_distances = -2 * dots + sq_norms[:, None] + sq_norms[None, :]
    return np.exp(-sq_distances / (2 * threshold**2 * np.median(sq_distances)))


def baseline(name: str, a: np.ndarray, b: np.ndarray) -> Callable[[], float]:
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr
    import sklearn
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import make_scorer, r2_score
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.neighbors import NearestNeighbors

    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if name in ("cka", "cka_biased"):
        return lambda: kornblith_cka(a64 @ a64.T, b64 @ b64.T, unbiased=name == "cka")
    if name == "cka_rbf":
        rows = subset(len(a), RBF_ITEMS)
        return lambda: kornblith_cka(kornblith_gram_rbf(a64[rows], 0.5), kornblith_gram_rbf(b64[rows], 0.5),
                                     unbiased=True)
    if name == "probe_r2":
        groups = lm.shuffled_groups(np.arange(len(a)), 0)
        scorer = make_scorer(r2_score, multioutput="variance_weighted")

        def probe() -> float:
            with sklearn.config_context(enable_metadata_routing=True):
                return float(cross_val_score(RidgeCV(alphas=lm.DEFAULT_ALPHAS, cv=GroupKFold(5)), a64, b64,
                                             cv=GroupKFold(5), params={"groups": groups}, scoring=scorer).mean())
        return probe
    if name == "rsa_spearman":
        rows = subset(len(a), RSA_ITEMS)
        return lambda: float(spearmanr(pdist(a64[rows], "correlation"), pdist(b64[rows], "correlation")).statistic)
    if name == "neighbourhood_recall":
        def recall() -> float:
            first, second = (NearestNeighbors(n_neighbors=K + 1, metric="cosine").fit(s).kneighbors(s)[1][:, 1:]
                             for s in (a64, b64))
            return float(np.mean([len(set(p) & set(q)) / K for p, q in zip(first, second)]))
        return recall
    if name == "latent_cosine":
        return lambda: float(((a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))).mean())
    import skdim  # scikit-dimension, a test dependency

    return lambda: float(skdim.id.TwoNN().fit(a64).dimension_)


def baseline_cost(name: str, n: int, d: int) -> tuple[float, float]:
    """(float64 working set in bytes, arithmetic in flop) of a baseline, roughly."""
    rbf, rsa = min(n, RBF_ITEMS), min(n, RSA_ITEMS)
    costs = {
        "cka": (3 * n * n * 8, 2 * 2 * n * n * d),
        "cka_biased": (3 * n * n * 8, 2 * 2 * n * n * d),
        "cka_rbf": (6 * rbf * rbf * 8, 2 * 2 * rbf * rbf * d),
        # GridSearchCV refits Ridge (X^T X, Cholesky) for each alpha and inner fold, in each outer fold.
        "probe_r2": (4 * n * d * 8, 5 * (5 * len(lm.DEFAULT_ALPHAS) + 1) * (2 * 0.64 * n * d * d + d**3 / 3)),
        "rsa_spearman": (3 * rsa * rsa * 8, rsa * rsa * d),
        "neighbourhood_recall": (4 * n * d * 8, 2 * 2 * n * n * d),
        "latent_cosine": (4 * n * d * 8, 6 * n * d),
        "intrinsic_dim": (4 * n * d * 8, 2 * n * n * d),  # TwoNN: all pairwise distances, sorted per row
    }
    return costs[name]


def ours(name: str, a: torch.Tensor, b: torch.Tensor) -> Callable[[], float]:
    calls: dict[str, Callable[[], float]] = {
        "cka": lambda: float(lm.linear_cka(a, b, debiased=True)),
        "cka_biased": lambda: float(lm.linear_cka(a, b)),
        "cka_rbf": lambda: float(lm.rbf_cka(*(s[torch.from_numpy(subset(len(a), RBF_ITEMS)).to(a.device)]
                                               for s in (a, b)), 0.5, debiased=True)[0]),
        "probe_r2": lambda: lm.probe_r2(a, b).variance_weighted,
        "rsa_spearman": lambda: float(lm.rsa_spearman(*(s[torch.from_numpy(subset(len(a), RSA_ITEMS)).to(a.device)]
                                                        for s in (a, b)))),
        "neighbourhood_recall": lambda: float(lm.neighbourhood_recall(a, b, K).mean()),
        "latent_cosine": lambda: float(lm.cosine_per_step(a, b).mean()),
        "intrinsic_dim": lambda: lm.two_nn_dimension(a)["twonn"],
    }
    return calls[name]


def mib(n_bytes: float) -> str:
    return f"{n_bytes / (1 << 20):9.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N for our metrics")
    parser.add_argument("--quick", action="store_true", help=f"small sizes {QUICK_SIZES} instead of {FULL_SIZES}")
    parser.add_argument("--sizes", help="comma-separated NxD, e.g. 10000x1024,100000x4096")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of " + ", ".join(METRICS))
    parser.add_argument("--no-baseline", action="store_true", help="time our metrics only")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and NumPy/SciPy BLAS (default: as installed)")
    parser.add_argument("--baseline-memory-gib", type=float, default=24.0)
    parser.add_argument("--baseline-max-flop", type=float, default=5e12,
                        help="skip a baseline estimated to need more arithmetic (default 5e12, minutes on a laptop CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    sizes = (tuple(tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")) if args.sizes
             else QUICK_SIZES if args.quick else FULL_SIZES)
    names = [name.strip() for name in args.metrics.split(",")]
    print(f"device {device}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'CPUs'}")
    print(f"{'N':>7} {'D':>5} {'metric':<21} {'ours s':>8} {'ours MiB':>9} {'base s':>8} {'base MiB':>9} "
          f"{'speed x':>8} {'mem x':>7} {'|diff|':>8}")
    with torch.inference_mode():
        for n, d in sizes:
            a_np, b_np = make_sets(n, d)
            a, b = torch.from_numpy(a_np).to(device), torch.from_numpy(b_np).to(device)
            for name in names:
                mine = measure(ours(name, a, b), device)
                line = f"{n:>7} {d:>5} {name:<21} {mine.seconds:8.2f} {mib(mine.peak_bytes)}"
                memory, flop = baseline_cost(name, n, d)
                if args.no_baseline:
                    print(line)
                    continue
                if memory > args.baseline_memory_gib * GIB:
                    print(f"{line}   baseline skipped: needs ~{memory / GIB:.0f} GiB > {args.baseline_memory_gib:g} GiB")
                    continue
                if flop > args.baseline_max_flop:
                    print(f"{line}   baseline skipped: ~{flop:.1e} flop > --baseline-max-flop {args.baseline_max_flop:.0e}")
                    continue
                base = measure(baseline(name, a_np, b_np), torch.device("cpu"))
                print(f"{line} {base.seconds:8.2f} {mib(base.peak_bytes)} {base.seconds / mine.seconds:8.1f} "
                      f"{base.peak_bytes / max(mine.peak_bytes, 1):7.1f} {abs(base.value - mine.value):8.1e}", flush=True)
            del a, b, a_np, b_np


if __name__ == "__main__":
    main()
