"""Confidence intervals over videos (SciPy's bootstrap) and paired tests that stay valid at small n.

Paired p-values (see docs/statistics.md):

* ``permutation`` (default): the sign-flip permutation test of the mean paired difference
  (``scipy.stats.permutation_test``, ``permutation_type="samples"``): under "no difference" each video's
  difference is as likely positive as negative. Exact (all 2^n sign patterns) up to n = 13, Monte Carlo
  with :data:`PERMUTATION_RESAMPLES` seeded resamples above. Valid at every n; its smallest attainable
  two-sided p is 2 / 2^n (0.25 at n = 3).
* ``wilcoxon``: SciPy's Wilcoxon signed-rank test (exact for small samples, same floor).
* ``bootstrap``: the paired bootstrap's p-value. Anti-conservative at small n (it reports p = 0.0005 on 3
  videos), so it is only a named option and warns below :data:`BOOTSTRAP_P_MIN_N` videos.

Families of tests are corrected with Holm (default) or Benjamini-Hochberg (:func:`adjust_p_values`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from foresight_eval.workers import usable_cpus


def _scipy_stats():
    """``scipy.stats``, imported on first use: its import is 0.6 s of a `score` process's start-up (each
    `torchrun` rank's) and only the summaries after the scoring need it."""
    from scipy import stats

    return stats


# Memory of one SciPy bootstrap call of means_with_ci (its resampled values): 256 clips' samples in rows of 16.
RESAMPLED_BYTES_PER_CALL = 64 << 20
# Calls of means_with_ci at once, in threads (at most one per usable CPU): at most this many times
# RESAMPLED_BYTES_PER_CALL held (1 GiB). The summaries of a default run of 256 clips x 48 frames (46 calls) took
# 450 ms in 4 threads, 274 ms in 8 and 182 ms in 16 on the 32-CPU host of 2 x H200, rank 0's work after every
# multi-GPU run; the issue-17 clip shape's 34, 30 and 29 ms (benchmarks/RESULTS.md, issue 17's fifteenth session).
BOOTSTRAP_THREADS = 16
# Samples of one SciPy call of means_with_ci at most. A run of a few clips has hundreds of per-horizon samples of
# one length, and SciPy sorts a call's resampled means in one thread: 850 samples of 3 clips took 47 ms in one
# call on the 2-core machine, the slowest step at the end of a GPU run. In calls of this many samples the threads
# share the work. A fixed number, not one per CPU: which samples share a call (NumPy's summation order over
# them, the last digits of a CI) is then the same on every machine.
SAMPLES_PER_CALL = 256


@dataclass(frozen=True)
class BootstrapConfig:
    """How every CI of a run is computed; recorded in the run's summary."""

    confidence: float = 0.95
    n_resamples: int = 2000
    method: str = "percentile"  # percentile is defined for any n >= 2; BCa degenerates on constant samples
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int


def mean_with_ci(values: np.ndarray, config: BootstrapConfig = BootstrapConfig()) -> Estimate:
    """Mean over the sample and its bootstrap CI; no CI for fewer than two finite values."""
    values = np.asarray(values, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        return Estimate(math.nan, None, None, 0)
    mean = float(values.mean())
    if n < 2 or not np.isfinite(values).all():
        return Estimate(mean, None, None, n)
    if np.ptp(values) == 0:
        return Estimate(mean, mean, mean, n)
    result = _scipy_stats().bootstrap(
        (values,),
        np.mean,
        confidence_level=config.confidence,
        n_resamples=config.n_resamples,
        method=config.method,
        rng=np.random.default_rng(config.seed),
    )
    return Estimate(mean, float(result.confidence_interval.low), float(result.confidence_interval.high), n)


def means_with_ci(samples: Sequence[np.ndarray], config: BootstrapConfig = BootstrapConfig()) -> list[Estimate]:
    """:func:`mean_with_ci` of each sample, with one SciPy bootstrap call per sample length (and per
    :data:`RESAMPLED_BYTES_PER_CALL` of resampled values, and per :data:`SAMPLES_PER_CALL` samples) instead
    of one per sample:
    a run's per-horizon curves are hundreds of small samples (a metric's values at each horizon), and
    SciPy's per-call overhead, not the resampling, was their cost (0.5-0.8 s of a 2.5 s GPU run, on rank 0
    after every torchrun run). Samples of one length are resampled together along their last axis with the
    same seeded generator, which draws the same indices for each row as for the sample alone: the same
    resamples, so the same values, but for NumPy's summation order over a stacked array (equal for short
    samples, a few units in the last place at 256 values; tests/test_statistics.py checks both). The calls
    run in up to :data:`BOOTSTRAP_THREADS` threads (memory: that many calls' resamples at once): a default
    run of 256 clips x 48 frames (15 metrics) makes 46 calls: 1.3 s in turn on two cores, 0.6-0.7 s in two threads,
    0.18 s in 16 threads on 32 CPUs."""
    samples = [np.asarray(sample, dtype=np.float64) for sample in samples]
    estimates: list[Estimate | None] = [None] * len(samples)
    of_length: dict[int, list[int]] = defaultdict(list)
    for index, values in enumerate(samples):
        of_length[values.size].append(index)
    # The checks and means of samples of one length in NumPy at once, not sample by sample: the summaries of
    # issue 17's clip shape (15 metrics, 1,172 samples) 34.6 -> 28.8 ms on the 2-core machine, every value equal
    # (benchmarks/RESULTS.md, the nineteenth session). A row's mean of a stacked array is the sample's own to the
    # bit (NumPy sums each contiguous row as it sums the sample alone; tests/test_statistics.py compares them).
    by_length: dict[int, list[int]] = {}  # the samples to resample
    means: dict[int, float] = {}
    for length, same_length in of_length.items():
        varies = np.zeros(len(same_length), dtype=bool)
        if length >= 2:
            stacked = np.stack([samples[index] for index in same_length])
            finite = np.isfinite(stacked).all(axis=1)  # no CI with a non-finite value
            varies[finite] = np.ptp(stacked[finite], axis=1) > 0  # finite rows only: inf - inf would warn
        for index, resampled in zip(same_length, varies.tolist()):
            if not resampled:  # no resampling: no CI, or a constant sample's
                estimates[index] = mean_with_ci(samples[index], config)
        if varies.any():
            by_length[length] = [index for index, resampled in zip(same_length, varies.tolist()) if resampled]
            means.update(zip(by_length[length], stacked[varies].mean(axis=1).tolist()))
    calls: list[list[int]] = []  # per SciPy call, the samples it resamples together
    for length, same_length in by_length.items():
        # SciPy holds every resample of a call at once: rows x n_resamples x length float64 values.
        rows_per_call = max(1, min(SAMPLES_PER_CALL, RESAMPLED_BYTES_PER_CALL // (8 * config.n_resamples * length)))
        calls.extend(same_length[start:start + rows_per_call] for start in range(0, len(same_length), rows_per_call))

    scipy_stats = _scipy_stats() if calls else None  # imported here, not by several threads at once

    def intervals(indices: list[int]):
        return scipy_stats.bootstrap(
            (np.stack([samples[index] for index in indices]),), np.mean, axis=-1,
            confidence_level=config.confidence, n_resamples=config.n_resamples, method=config.method,
            rng=np.random.default_rng(config.seed)).confidence_interval

    # Each call draws from its own seeded generator, so calls in parallel threads give the values of calls in
    # turn; NumPy's resampling, means and percentiles release the GIL.
    with ThreadPoolExecutor(max(1, min(BOOTSTRAP_THREADS, usable_cpus(), len(calls)))) as pool:
        for indices, interval in zip(calls, pool.map(intervals, calls)):
            for row, index in enumerate(indices):
                estimates[index] = Estimate(means[index], float(interval.low[row]), float(interval.high[row]),
                                            int(samples[index].size))
    return estimates  # type: ignore[return-value]


class PairedDifference(NamedTuple):
    """Mean of paired differences (one per shared video), its CI, and the p-value of "no difference"."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int
    # The smallest p-value the test can give with these n values (ties and zero differences included).
    p_min: float | None = None


PAIRED_TESTS = ("permutation", "wilcoxon", "bootstrap")
DEFAULT_TEST = "permutation"
CORRECTIONS = ("holm", "bh", "none")
DEFAULT_CORRECTION = "holm"
# Sign patterns are enumerated while 2^n <= this many, so the test is exact up to n = 13.
PERMUTATION_RESAMPLES = 9999
# Below this many paired videos the bootstrap p-value is far too small (a warning says so).
BOOTSTRAP_P_MIN_N = 20


def paired_bootstrap(diffs: np.ndarray, config: BootstrapConfig = BootstrapConfig()) -> PairedDifference:
    """Seeded paired bootstrap of the mean difference: SciPy's percentile CI over resampled videos, and a
    two-sided p-value from the same resamples shifted to mean zero (Efron & Tibshirani 1993, 16.4):
    the share of resampled means at least as far from the observed mean as the observed mean is from 0.
    SciPy's bootstrap gives no p-value, hence the few lines here."""
    diffs = np.asarray(diffs, dtype=np.float64)
    estimate = mean_with_ci(diffs, config)
    if estimate.ci_low is None:
        return PairedDifference(estimate.mean, None, None, None, estimate.n)
    if estimate.ci_low == estimate.ci_high:  # every video differs by the same amount
        p_value = 1.0 if estimate.mean == 0 else 1.0 / (config.n_resamples + 1)
        return PairedDifference(estimate.mean, estimate.ci_low, estimate.ci_high, p_value, estimate.n)
    # Same seed as the CI above, so these are the very resamples behind it.
    resampled = _scipy_stats().bootstrap(
        (diffs,), np.mean, confidence_level=config.confidence, n_resamples=config.n_resamples,
        method=config.method, rng=np.random.default_rng(config.seed),
    ).bootstrap_distribution
    extreme = np.count_nonzero(np.abs(resampled - estimate.mean) >= abs(estimate.mean))
    p_value = float((extreme + 1) / (resampled.size + 1))
    return PairedDifference(estimate.mean, estimate.ci_low, estimate.ci_high, p_value, estimate.n)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def sign_flip_p(diffs: np.ndarray, seed: int = 0) -> tuple[float | None, float | None]:
    """Two-sided p-value of the paired sign-flip permutation test of the mean difference, and the
    smallest p-value attainable with these differences; (None, None) below 2 finite values.

    Exact when 2^n <= :data:`PERMUTATION_RESAMPLES`, else Monte Carlo with that many seeded sign patterns
    (SciPy then reports (k + 1) / (R + 1), never 0: Phipson & Smyth 2010)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.size < 2 or not np.isfinite(diffs).all():
        return None, None
    nonzero = int(np.count_nonzero(diffs))
    exact = 2 ** diffs.size <= PERMUTATION_RESAMPLES
    # A zero difference flips to itself: only the 2^nonzero patterns of the others are distinct.
    p_min = min(1.0, 2.0 ** (1 - nonzero)) if nonzero else 1.0
    if not exact:
        p_min = max(p_min, 1.0 / (PERMUTATION_RESAMPLES + 1))
    if not nonzero:
        return 1.0, 1.0
    result = _scipy_stats().permutation_test(
        (diffs,), _mean, permutation_type="samples", vectorized=True, alternative="two-sided",
        n_resamples=np.inf if exact else PERMUTATION_RESAMPLES, rng=np.random.default_rng(seed),
    )
    return float(result.pvalue), p_min


def wilcoxon_p_min(diffs: np.ndarray) -> float | None:
    """The smallest two-sided p-value SciPy's Wilcoxon test can give with these differences: every
    difference on one side. Exact distribution (n <= 50 nonzero differences): 2 / 2^n."""
    nonzero = np.asarray(diffs, dtype=np.float64)
    nonzero = nonzero[nonzero != 0]
    if nonzero.size < 2:
        return None if nonzero.size == 0 and np.size(diffs) < 2 else 1.0
    return float(_scipy_stats().wilcoxon(np.abs(nonzero)).pvalue)


def wilcoxon_p(diffs: np.ndarray) -> float | None:
    """Two-sided p-value of SciPy's Wilcoxon signed-rank test (exact for small samples); None below 2 values."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.size < 2 or not np.isfinite(diffs).all():
        return None
    if not np.any(diffs):
        return 1.0  # SciPy divides by zero on all-zero differences
    return float(_scipy_stats().wilcoxon(diffs).pvalue)


def paired_test(
    diffs: np.ndarray, config: BootstrapConfig = BootstrapConfig(), test: str = DEFAULT_TEST
) -> PairedDifference:
    """The paired bootstrap's mean and CI; the p-value (and the smallest attainable one) from ``test``:
    "permutation" (sign flips), "wilcoxon" or "bootstrap"."""
    if test not in PAIRED_TESTS:
        raise ValueError(f"paired test must be one of {PAIRED_TESTS}, got {test!r}")
    result = paired_bootstrap(diffs, config)
    if result.p_value is None:
        return result
    if test == "permutation":
        p_value, p_min = sign_flip_p(diffs, config.seed)
        return result._replace(p_value=p_value, p_min=p_min)
    if test == "wilcoxon":
        return result._replace(p_value=wilcoxon_p(diffs), p_min=wilcoxon_p_min(diffs))
    return result._replace(p_min=1.0 / (config.n_resamples + 1))


def small_n_warning(test: str, n: int, p_min: float | None, alpha: float) -> str:
    """What this many paired videos cannot show, or "" when nothing needs saying."""
    if test == "bootstrap" and 2 <= n < BOOTSTRAP_P_MIN_N:
        return (f"the bootstrap p-value is too small below {BOOTSTRAP_P_MIN_N} videos (n={n}); "
                f"use --test permutation")
    if p_min is not None and p_min >= alpha:
        return (f"{n} videos cannot show a significant difference at {alpha:g} "
                f"(the smallest p the {test} test can give is {p_min:.3g})")
    return ""


def adjust_p_values(p_values: list[float | None], method: str = DEFAULT_CORRECTION) -> list[float | None]:
    """p-values corrected for the family they belong to: Holm's step-down (controls the family-wise
    error rate; Holm 1979) or Benjamini-Hochberg (controls the false discovery rate, SciPy's
    ``false_discovery_control``); "none" returns them as they are. None entries (no test) stay None and
    do not count in the family."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    index = [i for i, p in enumerate(p_values) if p is not None]
    if method == "none" or not index:
        return list(p_values)
    raw = np.array([p_values[i] for i in index], dtype=np.float64)
    if method == "bh":
        adjusted = _scipy_stats().false_discovery_control(raw, method="bh")
    else:
        order = np.argsort(raw, kind="stable")
        steps = raw[order] * (raw.size - np.arange(raw.size))
        adjusted = np.empty_like(raw)
        adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    result = list(p_values)
    for i, p in zip(index, adjusted):
        result[i] = float(p)
    return result


def minimum_detectable_effect(diffs: np.ndarray, alpha: float, power: float = 0.8) -> float | None:
    """The smallest true mean difference a two-sided paired test at ``alpha`` would detect with probability
    ``power``, given the spread of these differences: (t_{1-alpha/2} + t_{power}) * sd / sqrt(n) with n - 1
    degrees of freedom (the one-sample t approximation, Cohen 1988). Infinite when n cannot reach alpha at
    all (2 / 2^n >= alpha); None below 2 values."""
    diffs = np.asarray(diffs, dtype=np.float64)
    n = diffs.size
    if n < 2 or not np.isfinite(diffs).all():
        return None
    if 2.0 ** (1 - n) >= alpha:
        return math.inf
    dof = n - 1
    quantiles = _scipy_stats().t.ppf(1 - alpha / 2, dof) + _scipy_stats().t.ppf(power, dof)
    return float(quantiles * diffs.std(ddof=1) / math.sqrt(n))
