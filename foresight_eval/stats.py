"""Confidence intervals over videos, through SciPy's bootstrap."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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
