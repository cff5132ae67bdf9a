"""Latent-space metrics: how well two sets of latents (same items, possibly different feature spaces)
line up, and how close predicted future latents are to the true ones.

Functional cores take (N, D) item-by-feature tensors (any float dtype, any device) and compute in
float64. The wrappers (:class:`LatentMetric`) score one matched latent file pair at a time.

- ``linear_cka``: Kornblith et al. 2019, feature-space form ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),
  accumulated over row chunks, so memory is D x D, not N x N (N = 100,000 fits).
- ``debiased=True``: the same with Nguyen et al.'s / Song et al.'s unbiased HSIC, in Kornblith's
  feature-space formula; near 0 for unrelated sets where the biased estimate is inflated at small N.
- ``rbf_cka``: Gram form with K_ij = exp(-d_ij^2 / (2 sigma^2)), sigma = bandwidth * sqrt(median of the
  N^2 squared distances, diagonal included), as Kornblith et al.'s reference code.
- ``probe_r2``: ridge regression A -> B; alpha chosen per outer fold by inner K-fold CV (mean uniform R^2,
  as scikit-learn's RidgeCV(cv=...)), R^2 reported on the held-out outer folds only.
- ``rsa_spearman``: Spearman correlation of the upper triangles of both pairwise distance matrices.
- ``neighbourhood_recall``: per item, the share of its k nearest neighbours in A (itself excluded) that
  are also among its k nearest in B.
- ``cosine_per_step``: cosine similarity of predicted and true latents per item and time step.
- ``intrinsic_dimension``: PCA components for 90% / 95% of the variance, and the participation ratio
  (sum lambda)^2 / sum lambda^2 of the covariance spectrum.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import torch

from foresight_eval.errors import InputError
from foresight_eval.io.latents import LatentPair
from foresight_eval.metrics.base import FrameBatch, Metric, MetricInfo
from foresight_eval.metrics.registry import register

# Rows per chunk of the streamed reductions: bounds the float64 copy of a chunk, not the result.
_CHUNK_ROWS = 8192
# Elements of one N x chunk distance block in the nearest-neighbour search (2^25 float64 = 256 MiB).
_DISTANCE_BLOCK = 1 << 25
DISTANCES = ("euclidean", "cosine", "correlation", "cityblock")
DEFAULT_ALPHAS = tuple(10.0**e for e in range(-3, 6))


def _require_items(x: torch.Tensor, minimum: int, what: str) -> None:
    if x.shape[0] < minimum:
        raise InputError(f"{what} needs at least {minimum} items, got {x.shape[0]}")


def _column_mean(x: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        total += x[start:start + _CHUNK_ROWS].double().sum(dim=0)
    return total / x.shape[0]


def _debiased_product(xty: torch.Tensor, rows_x: torch.Tensor, rows_y: torch.Tensor, n: int) -> torch.Tensor:
    """Kornblith et al.'s feature-space form of the unbiased HSIC (up to the 1/(n(n-3)) factor)."""
    return xty - n / (n - 2.0) * rows_x.dot(rows_y) + rows_x.sum() * rows_y.sum() / ((n - 1) * (n - 2))


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Linear CKA of (N, Dx) and (N, Dy) in feature space: D x D Gram matrices, float64, rows streamed."""
    _require_items(x, 4 if debiased else 2, "debiased CKA" if debiased else "CKA")
    mean_x, mean_y = _column_mean(x), _column_mean(y)
    xtx = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    yty = torch.zeros(y.shape[1], y.shape[1], dtype=torch.float64, device=x.device)
    ytx = torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    rows_x, rows_y = [], []
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        xc = x[start:start + _CHUNK_ROWS].double() - mean_x
        yc = y[start:start + _CHUNK_ROWS].double() - mean_y
        xtx.addmm_(xc.T, xc)
        yty.addmm_(yc.T, yc)
        ytx.addmm_(yc.T, xc)
        rows_x.append(xc.square().sum(dim=1))
        rows_y.append(yc.square().sum(dim=1))
    similarity = ytx.square().sum()
    norm_x, norm_y = xtx.square().sum().sqrt(), yty.square().sum().sqrt()
    if debiased:
        n, sq_x, sq_y = x.shape[0], torch.cat(rows_x), torch.cat(rows_y)
        similarity = _debiased_product(similarity, sq_x, sq_y, n)
        norm_x = _debiased_product(norm_x.square(), sq_x, sq_x, n).sqrt()
        norm_y = _debiased_product(norm_y.square(), sq_y, sq_y, n).sqrt()
    return similarity / (norm_x * norm_y)


def _median(values: torch.Tensor) -> torch.Tensor:
    """NumPy's median (mean of the two middle values for an even count); torch.median takes the lower one."""
    flat = values.flatten()
    count = flat.numel()
    upper = torch.kthvalue(flat, count // 2 + 1).values
    return upper if count % 2 else (upper + torch.kthvalue(flat, count // 2).values) / 2


def rbf_gram(x: torch.Tensor, bandwidth: float = 0.5) -> tuple[torch.Tensor, float]:
    """RBF kernel matrix with sigma = bandwidth * sqrt(median squared distance); returns (K, sigma)."""
    x = x.double()
    dots = x @ x.T
    sq_norms = dots.diagonal()
    sq_distances = sq_norms[:, None] + sq_norms[None, :] - 2 * dots
    sq_median = _median(sq_distances)
    if sq_median <= 0:
        raise InputError("RBF CKA: the median pairwise distance is 0 (most items are identical)")
    gram = torch.exp(sq_distances / (-2 * bandwidth**2 * sq_median))
    return gram, float(bandwidth * sq_median.sqrt())


def center_gram(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Double-centre a Gram matrix; ``unbiased``: U-centring, whose inner products are unbiased HSIC."""
    gram = gram.double().clone()
    if not unbiased:
        gram -= gram.mean(dim=0, keepdim=True)
        return gram - gram.mean(dim=1, keepdim=True)
    n = gram.shape[0]
    gram.fill_diagonal_(0)
    means = gram.sum(dim=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None] + means[None, :]
    return gram.fill_diagonal_(0)


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """CKA of two N x N kernel matrices (sample-space form)."""
    gx, gy = center_gram(gram_x, debiased), center_gram(gram_y, debiased)
    return (gx * gy).sum() / (gx.square().sum().sqrt() * gy.square().sum().sqrt())


def rbf_cka(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 0.5) -> tuple[torch.Tensor, float, float]:
    """RBF CKA of (N, Dx) and (N, Dy); returns (CKA, sigma of A, sigma of B). N x N memory."""
    _require_items(x, 2, "RBF CKA")
    gram_x, sigma_x = rbf_gram(x, bandwidth)
    gram_y, sigma_y = rbf_gram(y, bandwidth)
    return cka_from_grams(gram_x, gram_y), sigma_x, sigma_y


def kfold_bounds(n: int, folds: int) -> list[tuple[int, int]]:
    """Contiguous fold boundaries exactly as scikit-learn's KFold(shuffle=False) makes them."""
    sizes = [n // folds + (1 if i < n % folds else 0) for i in range(folds)]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [(int(edges[i]), int(edges[i + 1])) for i in range(folds)]


def _split(n: int, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(n, device=device)
    held_out = (index >= start) & (index < stop)
    return index[~held_out], index[held_out]


def r2_scores(y_true: torch.Tensor, y_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uniform, variance-weighted) R^2 over outputs, with scikit-learn's r2_score conventions for
    constant outputs (1 if predicted exactly, else 0)."""
    sse = (y_true - y_pred).square().sum(dim=0)
    sst = (y_true - y_true.mean(dim=0)).square().sum(dim=0)
    constant = sst == 0
    per_output = torch.where(constant, (sse == 0).double(), 1 - sse / torch.where(constant, 1.0, sst))
    total_sst = sst.sum()
    weighted = 1 - sse.sum() / total_sst if total_sst > 0 else per_output.mean()
    return per_output.mean(), weighted


class _RidgePath:
    """Ridge fits of one training set for many penalties (one eigendecomposition, intercept fitted)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.mean_x, self.mean_y = x.mean(dim=0), y.mean(dim=0)
        xc, yc = x - self.mean_x, y - self.mean_y
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(xc.T @ xc)
        self.projected_targets = self.eigenvectors.T @ (xc.T @ yc)

    def predict(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        rotated = (x - self.mean_x) @ self.eigenvectors
        return (rotated / (self.eigenvalues + alpha)) @ self.projected_targets + self.mean_y


@dataclass
class ProbeResult:
    uniform: float
    variance_weighted: float
    alphas: list[float]  # the penalty chosen in each outer fold
    fold_uniform: list[float] = field(default_factory=list)
    fold_variance_weighted: list[float] = field(default_factory=list)


def probe_r2(
    x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float] = DEFAULT_ALPHAS,
    outer_folds: int = 5, inner_folds: int = 5, seed: int = 0,
) -> ProbeResult:
    """Held-out R^2 of a ridge probe predicting ``y`` from ``x``.

    Items are shuffled once (NumPy permutation with ``seed``), then split into ``outer_folds`` contiguous
    folds (KFold). In each outer fold the penalty is the one with the best mean uniform R^2 over
    ``inner_folds`` contiguous folds of the training part (first best on ties, as GridSearchCV), the
    probe is refitted on the whole training part and scored on the held-out fold. The result is the mean
    over outer folds: exactly ``cross_val_score(RidgeCV(alphas, cv=KFold(inner_folds)), X[p], Y[p],
    cv=KFold(outer_folds))`` on the permuted data ``X[p]``.
    """
    n = x.shape[0]
    _require_items(x, outer_folds * inner_folds, f"probe_r2 with {outer_folds}x{inner_folds} folds")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n)).to(x.device)
    x, y = x.double()[order], y.double()[order]
    result = ProbeResult(math.nan, math.nan, [])
    for start, stop in kfold_bounds(n, outer_folds):
        train, test = _split(n, start, stop, x.device)
        x_train, y_train = x[train], y[train]
        inner_scores = torch.zeros(len(alphas), dtype=torch.float64, device=x.device)
        for inner_start, inner_stop in kfold_bounds(len(train), inner_folds):
            fit_rows, val_rows = _split(len(train), inner_start, inner_stop, x.device)
            path = _RidgePath(x_train[fit_rows], y_train[fit_rows])
            for i, alpha in enumerate(alphas):
                inner_scores[i] += r2_scores(y_train[val_rows], path.predict(x_train[val_rows], alpha))[0]
        best = float(alphas[int(torch.argmax(inner_scores))])
        uniform, weighted = r2_scores(y[test], _RidgePath(x_train, y_train).predict(x[test], best))
        result.alphas.append(best)
        result.fold_uniform.append(float(uniform))
        result.fold_variance_weighted.append(float(weighted))
    result.uniform = float(np.mean(result.fold_uniform))
    result.variance_weighted = float(np.mean(result.fold_variance_weighted))
    return result


def _distance_matrix(x: torch.Tensor, distance: str) -> torch.Tensor:
    x = x.double()
    if distance == "cityblock":
        return torch.cdist(x, x, p=1)
    if distance in ("cosine", "correlation"):
        if distance == "correlation":
            x = x - x.mean(dim=1, keepdim=True)
        unit = x / x.norm(dim=1, keepdim=True)
        return 1 - unit @ unit.T
    sq_norms = x.square().sum(dim=1)
    return (sq_norms[:, None] + sq_norms[None, :] - 2 * x @ x.T).clamp_(min=0).sqrt_()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata's default)."""
    sorted_values, order = torch.sort(values)
    _, group, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = ((ends - counts + 1 + ends) / 2)[group]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm())


def rsa_spearman(x: torch.Tensor, y: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Spearman correlation between the upper triangles of the two sets' pairwise distance matrices."""
    _require_items(x, 3, "RSA")
    upper = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    first = _distance_matrix(x, distance)[upper[0], upper[1]]
    second = _distance_matrix(y, distance)[upper[0], upper[1]]
    return pearson(average_ranks(first), average_ranks(second))


def nearest_neighbours(x: torch.Tensor, k: int, distance: str = "euclidean") -> torch.Tensor:
    """(N, k) indices of each item's k nearest other items, searched in row blocks (memory N x block)."""
    _require_items(x, k + 1, f"nearest neighbours with k={k}")
    x = x.double()
    if distance == "cosine":
        x = x / x.norm(dim=1, keepdim=True)
    sq_norms = x.square().sum(dim=1)
    block = max(1, _DISTANCE_BLOCK // x.shape[0])
    found = []
    for start in range(0, x.shape[0], block):
        rows = x[start:start + block]
        # Squared euclidean distance; for unit rows it orders neighbours as cosine distance does.
        distances = sq_norms[start:start + block, None] + sq_norms[None, :] - 2 * rows @ x.T
        own = torch.arange(start, start + rows.shape[0], device=x.device)
        distances[own - start, own] = math.inf
        found.append(distances.topk(k, dim=1, largest=False).indices)
    return torch.cat(found)


def neighbourhood_recall(x: torch.Tensor, y: torch.Tensor, k: int = 10, distance: str = "euclidean") -> torch.Tensor:
    """Per item (N,): |kNN_A(i) & kNN_B(i)| / k."""
    first, second = nearest_neighbours(x, k, distance), nearest_neighbours(y, k, distance)
    shared = (first[:, :, None] == second[:, None, :]).any(dim=2).sum(dim=1)
    return shared.double() / k


def cosine_per_step(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity along the last axis, float64, norms clamped at ``eps`` as torch's cosine_similarity."""
    pred, true = pred.double(), true.double()
    norms = pred.norm(dim=-1).clamp(min=eps) * true.norm(dim=-1).clamp(min=eps)
    return (pred * true).sum(dim=-1) / norms


def covariance_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the sample covariance, descending, from the smaller of the D x D and N x N Grams."""
    _require_items(x, 2, "intrinsic dimension")
    xc = x.double() - _column_mean(x)
    gram = xc.T @ xc if x.shape[1] <= x.shape[0] else xc @ xc.T
    return torch.linalg.eigvalsh(gram).flip(0).clamp(min=0) / (x.shape[0] - 1)


def intrinsic_dimension(x: torch.Tensor, levels: Sequence[float] = (0.90, 0.95)) -> dict[str, float]:
    """PCA components needed for each share of the variance (as PCA(n_components=share)), and the
    participation ratio."""
    spectrum = covariance_spectrum(x)
    total = spectrum.sum()
    if total <= 0:
        raise InputError("intrinsic dimension: every item is identical (zero variance)")
    cumulative = (spectrum.cumsum(0) / total).cpu().numpy()
    figures = {f"pca{round(level * 100)}": int(np.searchsorted(cumulative, level, side="right") + 1)
               for level in levels}
    figures["participation_ratio"] = float(total.square() / spectrum.square().sum())
    return figures


def _subsample(n: int, limit: int, seed: int, device: torch.device) -> torch.Tensor | None:
    """Indices of a fixed-seed subset of ``limit`` items (sorted), or None when n <= limit."""
    if n <= limit:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit].sort().values.to(device)


@dataclass
class LatentScore:
    """One file pair's result: the value, optional per-item values (their mean is the value; used for a
    bootstrap CI over items), optional per-horizon curve (horizon, step index, value), and details."""

    value: float
    item_values: torch.Tensor | None = None
    curve: list[tuple[int, int, float]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class LatentMetric(Metric):
    """A metric of a matched pair of latent sets. The latents run calls :meth:`score` once per file pair;
    the frame hooks of :class:`Metric` do not apply."""

    def reset(self) -> None:
        """Nothing to forget: every file pair is scored in one call."""

    def update(self, batch: FrameBatch) -> NoReturn:
        raise TypeError(f"{self.name} scores latent files (foresight-eval latents), not frame batches")

    def compute(self) -> NoReturn:
        raise TypeError(f"{self.name} scores latent files through score(), not compute()")

    @abstractmethod
    def score(self, pair: LatentPair) -> LatentScore:
        """The metric on one pair of latent sets."""


def _latent_info(name: str, description: str, direction: str = "higher", default: bool = True) -> MetricInfo:
    return MetricInfo(name=name, description=description, direction=direction, inputs="latents",
                      granularity="video", default=default)


@register
class LinearCKA(LatentMetric):
    info = _latent_info("cka", "Linear CKA (Kornblith et al. 2019) of A and B, feature-space form, float64")

    def score(self, pair: LatentPair) -> LatentScore:
        return LatentScore(float(linear_cka(*pair.matrices())))


@register
class DebiasedCKA(LatentMetric):
    info = _latent_info("cka_debiased", "Linear CKA with the unbiased HSIC estimator (Nguyen et al. 2021), "
                                        "feature-space form, float64; near 0 for unrelated sets at any N")

    def score(self, pair: LatentPair) -> LatentScore:
        return LatentScore(float(linear_cka(*pair.matrices(), debiased=True)))


@register
class RBFCKA(LatentMetric):
    info = _latent_info("cka_rbf", "RBF-kernel CKA, sigma = bandwidth x sqrt(median squared distance); items "
                                   "above max_items are subsampled with a fixed seed (N x N memory)")
    defaults = {"bandwidth": 0.5, "max_items": 5000, "seed": 0}

    def score(self, pair: LatentPair) -> LatentScore:
        x, y = pair.matrices()
        subset = _subsample(x.shape[0], self.params["max_items"], self.params["seed"], x.device)
        if subset is not None:
            x, y = x[subset], y[subset]
        value, sigma_a, sigma_b = rbf_cka(x, y, self.params["bandwidth"])
        return LatentScore(float(value), details={"sigma_a": sigma_a, "sigma_b": sigma_b, "items_used": x.shape[0]})


@register
class ProbeR2(LatentMetric):
    info = _latent_info("probe_r2", "Held-out R^2 of a ridge probe A -> B, penalty chosen by inner K-fold CV; "
                                    "averaged over outputs per `average`, mean over outer folds")
    defaults = {"alphas": list(DEFAULT_ALPHAS), "outer_folds": 5, "inner_folds": 5, "seed": 0,
                "average": "variance_weighted"}
    choices = {"average": ("variance_weighted", "uniform")}

    def score(self, pair: LatentPair) -> LatentScore:
        alphas = self.params["alphas"]
        alphas = [float(a) for a in (alphas if isinstance(alphas, (list, tuple)) else [alphas])]
        result = probe_r2(*pair.matrices(), alphas, int(self.params["outer_folds"]), int(self.params["inner_folds"]),
                          int(self.params["seed"]))
        value = result.variance_weighted if self.params["average"] == "variance_weighted" else result.uniform
        return LatentScore(value, details={
            "uniform": result.uniform, "variance_weighted": result.variance_weighted, "alphas_chosen": result.alphas,
            "fold_uniform": result.fold_uniform, "fold_variance_weighted": result.fold_variance_weighted,
        })


@register
class RSASpearman(LatentMetric):
    info = _latent_info("rsa_spearman", "Spearman correlation of the upper triangles of A's and B's pairwise "
                                        "distance matrices; items above max_items subsampled with a fixed seed")
    defaults = {"distance": "euclidean", "max_items": 4000, "seed": 0}
    choices = {"distance": DISTANCES}

    def score(self, pair: LatentPair) -> LatentScore:
        x, y = pair.matrices()
        subset = _subsample(x.shape[0], self.params["max_items"], self.params["seed"], x.device)
        if subset is not None:
            x, y = x[subset], y[subset]
        return LatentScore(float(rsa_spearman(x, y, self.params["distance"])), details={"items_used": x.shape[0]})


@register
class NeighbourhoodRecall(LatentMetric):
    info = _latent_info("neighbourhood_recall", "Mean over items of the share of the k nearest neighbours in A "
                                                "(item excluded) that are among its k nearest in B")
    defaults = {"k": 10, "distance": "euclidean"}
    choices = {"distance": ("euclidean", "cosine")}

    def score(self, pair: LatentPair) -> LatentScore:
        per_item = neighbourhood_recall(*pair.matrices(), int(self.params["k"]), self.params["distance"])
        return LatentScore(float(per_item.mean()), item_values=per_item)


@register
class LatentCosine(LatentMetric):
    info = _latent_info("latent_cosine", "Cosine similarity of predicted (A) and true (B) latents at horizon k, "
                                         "mean over items; the curve over every horizon is kept per horizon",
                        default=False)
    defaults = {"k": 5, "context": 0}

    def score(self, pair: LatentPair) -> LatentScore:
        k, context = int(self.params["k"]), int(self.params["context"])
        if pair.a.shape != pair.b.shape:
            raise InputError(f"latent_cosine needs the same shape on both sides: {pair.a_path} is "
                             f"{tuple(pair.a.shape)}, {pair.b_path} is {tuple(pair.b.shape)} (items, steps, features)")
        steps = pair.a.shape[1]
        if not 0 < k <= steps - context:
            raise InputError(f"latent_cosine.k={k}: {pair.a_path} has {steps} time steps, so horizons "
                             f"1..{steps - context} after {context} context steps")
        cosine = cosine_per_step(pair.a, pair.b)  # (N, T)
        curve = cosine.mean(dim=0).tolist()
        rows = [(step - context + 1, step, value) for step, value in enumerate(curve) if step >= context]
        at_k = cosine[:, context + k - 1]
        return LatentScore(float(at_k.mean()), item_values=at_k, curve=rows)


@register
class IntrinsicDimension(LatentMetric):
    info = _latent_info("intrinsic_dim", "Descriptive: participation ratio of A's covariance spectrum; PCA "
                                         "components for 90%/95% variance and B's figures in the details",
                        default=False)

    def score(self, pair: LatentPair) -> LatentScore:
        x, y = pair.matrices()
        figures_a, figures_b = intrinsic_dimension(x), intrinsic_dimension(y)
        return LatentScore(figures_a["participation_ratio"], details={"a": figures_a, "b": figures_b})
