"""Distances between two sets of feature vectors, in float64: the Fréchet distance (FID, FVD) and the
kernel inception distance (KID), with a bootstrap over clips.

Fréchet distance between Gaussians fitted to the two sets (Dowson & Landau 1982; Heusel et al. 2017):
``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``, covariances with ``ddof=1`` as TF-GAN's
``frechet_classifier_distance`` and ``np.cov`` use. ``tr((S1 S2)^(1/2))`` is computed without a general
matrix square root: ``S1 S2`` is similar to the symmetric PSD ``S1^(1/2) S2 S1^(1/2)``, so the trace is the
sum of the square roots of that matrix's eigenvalues; two symmetric eigendecompositions, no complex parts
to discard, exact for singular covariances (fewer clips than feature dimensions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1) of (N, D) features, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 sigma2)^(1/2))`` for symmetric PSD matrices, through symmetric eigendecompositions."""
    root = _psd_sqrt(sigma1)
    inner = root @ sigma2 @ root
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2.0)  # symmetrise away rounding
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def frechet_distance_of(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians of two (N, D) feature sets. With fewer vectors than
    dimensions (per-horizon FID, bootstraps) it goes through the N x N cross-Gram matrix instead of the
    D x D covariances: with centred X1, X2, the non-zero eigenvalues of S1 S2 are the squared singular
    values of X1 X2^T / sqrt((n1 - 1)(n2 - 1)), so tr((S1 S2)^(1/2)) is that matrix's nuclear norm. Same
    value, O(N^2 D) instead of O(D^3)."""
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if min(len(x), len(y)) >= x.shape[1]:
        return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    if min(len(x), len(y)) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {min(len(x), len(y))}")
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mu1, y - mu2
    scale1, scale2 = len(x) - 1.0, len(y) - 1.0
    cross = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / math.sqrt(scale1 * scale2)
    diff = mu1 - mu2
    return float(diff @ diff + (xc * xc).sum() / scale1 + (yc * yc).sum() / scale2 - 2.0 * cross)


def kid(features1: np.ndarray, features2: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
        degree: int = 3, coef: float = 1.0, gamma: float | None = None, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (Bińkowski et al. 2018): the unbiased MMD^2 with the polynomial kernel
    ``(gamma x.y + coef)^degree`` (gamma = 1/D), averaged over ``subsets`` random subsets of ``subset_size``
    drawn without replacement from each side; returns (mean, std over subsets), torchmetrics'
    ``KernelInceptionDistance`` definition (std with ddof=0)."""
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per side, got {len(x)} and {len(y)}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), size, replace=False)]
        b = y[rng.choice(len(y), size, replace=False)]
        k_xx, k_yy, k_xy = ((gamma * p @ q.T + coef) ** degree for p, q in ((a, a), (b, b), (a, b)))
        off = size * (size - 1)
        values.append((k_xx.sum() - np.trace(k_xx)) / off + (k_yy.sum() - np.trace(k_yy)) / off
                      - 2.0 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def two_sample_bootstrap(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    groups1: Sequence[np.ndarray],
    groups2: Sequence[np.ndarray],
    *,
    resamples: int,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """Percentile CI of ``statistic`` when the clips of each side are resampled with replacement,
    independently on both sides; each clip (a group of feature rows, e.g. its windows) is kept whole.
    Resamples whose statistic cannot be computed (too few rows) are left out; None without any."""
    if resamples < 1 or len(groups1) < 2 or len(groups2) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick1 = rng.integers(0, len(groups1), len(groups1))
        pick2 = rng.integers(0, len(groups2), len(groups2))
        try:
            values.append(statistic(np.concatenate([groups1[i] for i in pick1]),
                                    np.concatenate([groups2[i] for i in pick2])))
        except ValueError:
            continue
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None, None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)
