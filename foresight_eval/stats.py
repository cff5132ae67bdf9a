"""Confidence intervals over videos, through SciPy's bootstrap."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats


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
    result = scipy_stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=config.confidence,
        n_resamples=config.n_resamples,
        method=config.method,
        rng=np.random.default_rng(config.seed),
    )
    return Estimate(mean, float(result.confidence_interval.low), float(result.confidence_interval.high), n)


class PairedDifference(NamedTuple):
    """Mean of paired differences (one per shared video), its CI, and the p-value of "no difference"."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int


PAIRED_TESTS = ("bootstrap", "wilcoxon")


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
    resampled = scipy_stats.bootstrap(
        (diffs,), np.mean, confidence_level=config.confidence, n_resamples=config.n_resamples,
        method=config.method, rng=np.random.default_rng(config.seed),
    ).bootstrap_distribution
    extreme = np.count_nonzero(np.abs(resampled - estimate.mean) >= abs(estimate.mean))
    p_value = float((extreme + 1) / (resampled.size + 1))
    return PairedDifference(estimate.mean, estimate.ci_low, estimate.ci_high, p_value, estimate.n)


def wilcoxon_p(diffs: np.ndarray) -> float | None:
    """Two-sided p-value of SciPy's Wilcoxon signed-rank test (exact for small samples); None below 2 values."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.size < 2 or not np.isfinite(diffs).all():
        return None
    if not np.any(diffs):
        return 1.0  # SciPy divides by zero on all-zero differences
    return float(scipy_stats.wilcoxon(diffs).pvalue)


def paired_test(
    diffs: np.ndarray, config: BootstrapConfig = BootstrapConfig(), test: str = "bootstrap"
) -> PairedDifference:
    """The paired bootstrap's mean and CI; the p-value from ``test``: "bootstrap" or "wilcoxon"."""
    if test not in PAIRED_TESTS:
        raise ValueError(f"paired test must be one of {PAIRED_TESTS}, got {test!r}")
    result = paired_bootstrap(diffs, config)
    return result._replace(p_value=wilcoxon_p(diffs)) if test == "wilcoxon" else result
