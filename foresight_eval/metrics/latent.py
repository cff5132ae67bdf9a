"""Latent-space metrics: how well two sets of latents (same items, possibly different feature spaces)
line up, and how close predicted future latents are to the true ones.

Functional cores take (N, D) item-by-feature tensors (any float dtype, any device) and compute in
float64. The wrappers (:class:`LatentMetric`) score one matched latent file pair at a time.

- ``linear_cka``: Kornblith et al. 2019, feature-space form ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),
  accumulated over row chunks, so memory is D x D, not N x N (N = 100,000 fits).
- ``debiased=True``: the same with Song et al.'s unbiased HSIC (as Nguyen et al. 2021), in Kornblith's
  feature-space formula; near 0 for unrelated sets where the biased estimate is inflated, badly so when
  the features outnumber the items (independent N = 100, D = 4096: biased 0.98, debiased 0.02). The
  ``cka`` metric's headline is the debiased estimate; ``cka_biased`` keeps Kornblith's original.
- ``rbf_cka``: Gram form with K_ij = exp(-d_ij^2 / (2 sigma^2)), sigma = bandwidth * sqrt(median of the
  N^2 squared distances, diagonal included), as Kornblith et al.'s reference code; biased or debiased
  (U-centred Grams).
- ``probe_r2``: ridge regression A -> B; alpha chosen per outer fold by inner CV (mean uniform R^2, as
  scikit-learn's RidgeCV(cv=...)), R^2 reported on the held-out outer folds only. Folds are grouped
  (GroupKFold): rows of one item (the time steps of ``--reduce per-timestep``) never sit on both sides.
- ``rsa_spearman``: Spearman correlation of the upper triangles of both pairwise distance matrices (by
  default 1 - Pearson correlation, the RSA convention); identical items are at distance exactly 0.
- ``neighbourhood_recall``: per item, the share of its k nearest neighbours in A (itself excluded) that
  are also among its k nearest in B; cosine by default, which is Huh et al. 2024's mutual kNN.
- ``cosine_per_step``: cosine similarity of predicted and true latents per item and time step; with the
  persistence and mean-prediction baselines and a skill score relative to persistence.
- ``two_nn_dimension``: TwoNN intrinsic dimension (Facco et al. 2017); ``intrinsic_dimension``: PCA
  components for 90% / 95% of the variance and the participation ratio (sum lambda)^2 / sum lambda^2.
  Both descriptive: no direction.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from foresight_eval.errors import InputError
from foresight_eval.io.latents import LatentPair
from foresight_eval.metrics.base import Metric, MetricInfo
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


def linear_cka_estimates(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Linear CKA of (N, Dx) and (N, Dy), biased and (N >= 4) debiased, from one streamed pass in feature
    space: D x D Gram matrices, float64."""
    _require_items(x, 2, "CKA")
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
    similarity, square_x, square_y = ytx.square().sum(), xtx.square().sum(), yty.square().sum()
    estimates = {"biased": float(similarity / (square_x * square_y).sqrt())}
    n = x.shape[0]
    if n >= 4:
        sq_x, sq_y = torch.cat(rows_x), torch.cat(rows_y)
        similarity = _debiased_product(similarity, sq_x, sq_y, n)
        norms = (_debiased_product(square_x, sq_x, sq_x, n) * _debiased_product(square_y, sq_y, sq_y, n)).sqrt()
        estimates["debiased"] = float(similarity / norms)
    return estimates


def linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> float:
    """Linear CKA of (N, Dx) and (N, Dy): the biased (Kornblith et al.) or the debiased estimate."""
    _require_items(x, 4 if debiased else 2, "debiased CKA" if debiased else "CKA")
    return linear_cka_estimates(x, y)["debiased" if debiased else "biased"]


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


def rbf_cka(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 0.5,
            debiased: bool = False) -> tuple[float, float, float]:
    """RBF CKA of (N, Dx) and (N, Dy); returns (CKA, sigma of A, sigma of B). N x N memory.
    ``debiased``: U-centred Grams (the unbiased HSIC), as Kornblith et al.'s ``cka(..., debiased=True)``."""
    _require_items(x, 4 if debiased else 2, "debiased RBF CKA" if debiased else "RBF CKA")
    gram_x, sigma_x = rbf_gram(x, bandwidth)
    gram_y, sigma_y = rbf_gram(y, bandwidth)
    return float(cka_from_grams(gram_x, gram_y, debiased)), sigma_x, sigma_y


def group_kfold(groups: np.ndarray, folds: int) -> np.ndarray:
    """The fold of each row, exactly as scikit-learn's ``GroupKFold(folds)`` (no shuffle) assigns them:
    groups in decreasing size (ties: the larger label first), each to the fold with the fewest rows so far."""
    labels, group_of_row = np.unique(groups, return_inverse=True)
    if folds > len(labels):
        raise InputError(f"grouped folds: {folds} folds need at least {folds} groups (items or clips), got {len(labels)}")
    sizes = np.bincount(group_of_row)
    rows_per_fold = np.zeros(folds)
    fold_of_group = np.zeros(len(labels), dtype=np.int64)
    for group in np.argsort(sizes, kind="stable")[::-1]:
        lightest = int(np.argmin(rows_per_fold))
        rows_per_fold[lightest] += sizes[group]
        fold_of_group[group] = lightest
    return fold_of_group[group_of_row]


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


def shuffled_groups(groups: np.ndarray, seed: int) -> np.ndarray:
    """Group labels renumbered by a seeded permutation (NumPy ``default_rng(seed)``): the fold assignment of
    :func:`group_kfold` then depends on the seed, not on the order of the items in the files."""
    labels, group_of_row = np.unique(groups, return_inverse=True)
    return np.random.default_rng(seed).permutation(len(labels))[group_of_row]


def probe_r2(
    x: torch.Tensor, y: torch.Tensor, alphas: Sequence[float] = DEFAULT_ALPHAS,
    outer_folds: int = 5, inner_folds: int = 5, seed: int = 0, groups: np.ndarray | None = None,
) -> ProbeResult:
    """Held-out R^2 of a ridge probe predicting ``y`` from ``x``, with folds grouped by ``groups``.

    ``groups`` (N,) labels the item each row comes from (default: every row its own item); rows of one
    group are never split between training and held-out parts, so a probe cannot score by recognising
    other time steps of the same clip. The labels are renumbered with ``seed`` (:func:`shuffled_groups`),
    then folds are scikit-learn's ``GroupKFold(outer_folds)``. In each outer fold the penalty is the one
    with the best mean uniform R^2 over ``GroupKFold(inner_folds)`` of the training part (first best on
    ties, as GridSearchCV), the probe is refitted on the whole training part and scored on the held-out
    fold. The result is the mean over outer folds, with ``g`` the renumbered labels: exactly
    ``cross_val_score(RidgeCV(alphas, cv=GroupKFold(inner_folds)), X, Y, cv=GroupKFold(outer_folds),
    params={"groups": g}, scoring=...)`` (metadata routing on), ``scoring`` ``"r2"`` for ``uniform`` and
    ``make_scorer(r2_score, multioutput="variance_weighted")`` for ``variance_weighted``.
    """
    n = x.shape[0]
    _require_items(x, outer_folds * inner_folds, f"probe_r2 with {outer_folds}x{inner_folds} folds")
    groups = shuffled_groups(np.arange(n) if groups is None else np.asarray(groups), seed)
    if len(groups) != n:
        raise InputError(f"probe_r2: {len(groups)} group labels for {n} rows")
    x, y = x.double(), y.double()
    outer = torch.from_numpy(group_kfold(groups, outer_folds)).to(x.device)
    result = ProbeResult(math.nan, math.nan, [])
    for fold in range(outer_folds):
        train, test = (outer != fold).nonzero().flatten(), (outer == fold).nonzero().flatten()
        x_train, y_train = x[train], y[train]
        inner = torch.from_numpy(group_kfold(groups[train.cpu().numpy()], inner_folds)).to(x.device)
        inner_scores = torch.zeros(len(alphas), dtype=torch.float64, device=x.device)
        for inner_fold in range(inner_folds):
            fit_rows, val_rows = (inner != inner_fold).nonzero().flatten(), (inner == inner_fold).nonzero().flatten()
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


def _distinct_distances(x: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cityblock":
        return torch.cdist(x, x, p=1)
    if distance in ("cosine", "correlation"):
        return 1 - x @ x.T  # rows already unit (and centred for correlation)
    sq_norms = x.square().sum(dim=1)
    return (sq_norms[:, None] + sq_norms[None, :] - 2 * x @ x.T).clamp_(min=0).sqrt_()


def distance_matrix(x: torch.Tensor, distance: str) -> torch.Tensor:
    """(N, N) float64 pairwise distances, exact for identical items: they are at distance exactly 0 and at
    exactly equal distances from every other item, so that tied distances rank as ties (the Gram-matrix
    shortcut alone leaves rounding noise of 1e-16 where the distance is 0). Identity is bitwise, after the
    metric's normalisation (unit rows for cosine, centred unit rows for correlation), so a scaled copy
    usually differs in the last bit and keeps its rounding-noise distance."""
    x = x.double()
    if distance in ("cosine", "correlation"):
        if distance == "correlation":
            x = x - x.mean(dim=1, keepdim=True)
        x = x / x.norm(dim=1, keepdim=True)
    distinct, index = torch.unique(x, dim=0, return_inverse=True)
    distances = _distinct_distances(distinct, distance)
    distances = (distances + distances.T) / 2  # a symmetric matrix; the product x x^T need not be
    distances.fill_diagonal_(0)
    return distances[index][:, index]


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


def rsa_spearman(x: torch.Tensor, y: torch.Tensor, distance: str = "correlation") -> torch.Tensor:
    """Spearman correlation between the upper triangles of the two sets' pairwise distance matrices
    (representational dissimilarity matrices; by default 1 - Pearson correlation, Kriegeskorte et al. 2008)."""
    _require_items(x, 3, "RSA")
    upper = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    first = distance_matrix(x, distance)[upper[0], upper[1]]
    second = distance_matrix(y, distance)[upper[0], upper[1]]
    return pearson(average_ranks(first), average_ranks(second))


def nearest_neighbours(x: torch.Tensor, k: int, distance: str = "cosine") -> torch.Tensor:
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


def neighbourhood_recall(x: torch.Tensor, y: torch.Tensor, k: int = 10, distance: str = "cosine") -> torch.Tensor:
    """Per item (N,): |kNN_A(i) & kNN_B(i)| / k. With cosine (the default) it is the mutual k-nearest-
    neighbour alignment of Huh et al. 2024 (their ``mutual_knn``), item by item; chance is k / (N - 1)."""
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


def two_nearest_distances(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances (N,) from each item to its nearest and second-nearest other item, float64. The
    neighbours are found by the blocked search, their distances then computed from the differences (exact
    0 for a duplicate, where the Gram shortcut leaves rounding noise)."""
    x = x.double()
    neighbours = nearest_neighbours(x, 2, "euclidean")
    first = (x - x[neighbours[:, 0]]).norm(dim=1)
    second = (x - x[neighbours[:, 1]]).norm(dim=1)
    return torch.minimum(first, second), torch.maximum(first, second)


def two_nn_dimension(x: torch.Tensor, discard_fraction: float = 0.1) -> dict[str, float]:
    """TwoNN intrinsic dimension (Facco et al. 2017, Sci. Rep. 7:12140), float64.

    mu_i = r2_i / r1_i (second over first nearest-neighbour distance) follows a Pareto law of index d on a
    d-dimensional manifold, so -log(1 - F(mu)) = d log(mu): d is the slope through the origin of that line
    on the sorted mu, with the empirical F(mu_(i)) = i / N and the largest ``discard_fraction`` of mu left
    out (the paper's 10%). Items whose nearest neighbour is a duplicate (r1 = 0) are dropped and counted.
    The conventions of scikit-dimension's ``TwoNN`` (method "linear")."""
    if not 0 <= discard_fraction < 1:
        raise InputError(f"TwoNN: discard_fraction must be in [0, 1), got {discard_fraction}")
    _require_items(x, 3, "TwoNN intrinsic dimension")
    r1, r2 = two_nearest_distances(x)
    duplicates = int((r1 == 0).sum())
    mu = (r2[r1 > 0] / r1[r1 > 0]).cpu().numpy()
    count = len(mu)
    kept = int(count * (1 - discard_fraction))
    if kept < 2:
        raise InputError(f"TwoNN: {kept} item(s) left after dropping {duplicates} duplicate(s) and the largest "
                         f"{discard_fraction:.0%} of the distance ratios; it needs at least 2")
    log_mu = np.log(np.sort(mu)[:kept])
    target = -np.log(1 - np.arange(1, kept + 1) / count)
    return {"twonn": float(log_mu.dot(target) / log_mu.dot(log_mu)), "twonn_items_used": kept,
            "twonn_duplicates_dropped": duplicates}


def cosine_baselines(pred: torch.Tensor, true: torch.Tensor, step: int, context: int,
                     centred: bool = False) -> dict[str, torch.Tensor]:
    """Cosines (N,) of predicted and true latents (N, T, D) at time ``step``, beside two predictions that
    ignore the input: ``mean_prediction``, the mean over items of the true latents at that step (one
    constant vector for every item), and, with ``context`` >= 1 observed steps, ``persistence``, the last
    observed true latent (step ``context - 1``) repeated. ``per_step`` (N, T): the prediction at every step.

    ``centred``: the mean of the true latents over items and steps is subtracted from every latent first.
    Latents share a large common mean, and the uncentred cosine credits it: a constant prediction scores
    near 0.9 on such data; centred, it scores near 0."""
    pred, true = pred.double(), true.double()
    if centred:
        offset = true.mean(dim=(0, 1))
        pred, true = pred - offset, true - offset
    per_step = cosine_per_step(pred, true)
    figures = {"per_step": per_step, "prediction": per_step[:, step],
               "mean_prediction": cosine_per_step(true[:, step].mean(dim=0).expand_as(true[:, step]), true[:, step])}
    if context >= 1:
        figures["persistence"] = cosine_per_step(true[:, context - 1], true[:, step])
    return figures


def cosine_skill(prediction: torch.Tensor, reference: torch.Tensor) -> float:
    """Skill score of a forecast relative to a reference forecast (Murphy 1988), on cosine distance:
    1 - mean(1 - cos_prediction) / mean(1 - cos_reference). 0: as good as the reference, 1: perfect,
    < 0: worse."""
    reference_distance = float((1 - reference).mean())
    if reference_distance <= 0:
        raise InputError("latent_cosine skill: the reference forecast is perfect (cosine 1 for every item), "
                         "so no skill can be measured against it")
    return 1 - float((1 - prediction).mean()) / reference_distance


def _subsample(n: int, limit: int, seed: int, device: torch.device) -> torch.Tensor | None:
    """Indices of a fixed-seed subset of ``limit`` items (sorted), or None when n <= limit or limit is 0."""
    if not limit or n <= limit:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:limit].sort().values.to(device)


class LatentMetricWarning(UserWarning):
    """A caveat about one latent result (a subset used, more features than items): shown on the console
    through Python's warnings (stderr) and recorded under the result's ``details["warnings"]``."""


@dataclass
class LatentScore:
    """One file pair's result: the value, optional per-item values (their mean is the value; used for a
    bootstrap CI over items), optional per-horizon curve (horizon, step index, value), and details."""

    value: float
    item_values: torch.Tensor | None = None
    curve: list[tuple[int, int, float]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def caution(self, metric: str, pair: LatentPair, message: str) -> None:
        """Record a caveat in the details and announce it on the console."""
        self.details.setdefault("warnings", []).append(message)
        warnings.warn(f"{metric} on {pair.key}: {message}", LatentMetricWarning, stacklevel=3)


class LatentMetric(Metric):
    """A metric of a matched pair of latent sets, a sibling of the frame metrics: the latents run calls
    :meth:`score` once per file pair, so there is nothing to reset or accumulate between pairs."""

    @abstractmethod
    def score(self, pair: LatentPair) -> LatentScore:
        """The metric on one pair of latent sets."""

    def limited_matrices(self, pair: LatentPair, score: LatentScore) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair's matrices, or a fixed-``seed`` subset of ``max_items`` of their rows (0: every row) for
        the metrics with N x N memory; a subset is recorded in ``score.details`` and announced."""
        x, y = pair.matrices()
        limit, total = int(self.params["max_items"] or 0), x.shape[0]
        subset = _subsample(total, limit, int(self.params["seed"]), x.device)
        score.details.update(items_used=total if subset is None else limit, items_total=total)
        if subset is None:
            return x, y
        score.caution(self.name, pair, f"computed on a random subset of {limit} of the {total} items (seed "
                                       f"{self.params['seed']}; N x N memory); set {self.name}.max_items=0 for all")
        return x[subset], y[subset]


def _latent_info(name: str, description: str, direction: str = "higher", default: bool = True) -> MetricInfo:
    return MetricInfo(name=name, description=description, direction=direction, inputs="latents",
                      granularity="video", default=default)


def _caution_features(metric: str, pair: LatentPair, score: LatentScore, items: int, features: int) -> None:
    """Biased CKA estimates drift towards 1 for unrelated sets as the features outnumber the items."""
    if features > items / 2:
        biased, debiased = score.details["biased"], score.details.get("debiased", math.nan)
        score.caution(metric, pair, f"{features} features for {items} items: the biased CKA is inflated when "
                                    f"features exceed half the items (biased {biased:.3f}, debiased {debiased:.3f} "
                                    "here); more items narrow the debiased estimate's spread")


class _LinearCKA(LatentMetric):
    estimate: ClassVar[str]

    def score(self, pair: LatentPair) -> LatentScore:
        x, y = pair.matrices()
        estimates = linear_cka_estimates(x, y)
        if self.estimate not in estimates:
            _require_items(x, 4, "debiased CKA")
        score = LatentScore(estimates[self.estimate], details={**estimates, "items": x.shape[0],
                                                               "features_a": x.shape[1], "features_b": y.shape[1]})
        _caution_features(self.name, pair, score, x.shape[0], max(x.shape[1], y.shape[1]))
        return score


@register
class LinearCKA(_LinearCKA):
    info = _latent_info("cka", "Linear CKA with the unbiased HSIC (debiased, Song et al. 2012 / Nguyen et al. "
                               "2021; Kornblith's feature-space form, float64): near 0 for unrelated sets at any N "
                               "and D; the biased estimate is in the details and in cka_biased")
    estimate = "debiased"


@register
class BiasedCKA(_LinearCKA):
    info = _latent_info("cka_biased", "Linear CKA as Kornblith et al. 2019 (biased HSIC), feature-space form, "
                                      "float64; inflated towards 1 for unrelated sets when D is not << N",
                        default=False)
    estimate = "biased"


@register
class RBFCKA(LatentMetric):
    info = _latent_info("cka_rbf", "RBF-kernel CKA, sigma = bandwidth x sqrt(median squared distance), debiased "
                                   "(U-centred Grams) unless debiased=false; above max_items (0: all) a fixed-seed "
                                   "subset, announced (N x N memory)")
    defaults = {"bandwidth": 0.5, "debiased": True, "max_items": 5000, "seed": 0}
    choices = {"debiased": (True, False)}

    def score(self, pair: LatentPair) -> LatentScore:
        score = LatentScore(math.nan)
        x, y = self.limited_matrices(pair, score)
        _require_items(x, 4 if self.params["debiased"] else 2, "RBF CKA")
        gram_x, sigma_a = rbf_gram(x, self.params["bandwidth"])
        gram_y, sigma_b = rbf_gram(y, self.params["bandwidth"])
        score.details.update(biased=float(cka_from_grams(gram_x, gram_y)), sigma_a=sigma_a, sigma_b=sigma_b)
        if x.shape[0] >= 4:
            score.details["debiased"] = float(cka_from_grams(gram_x, gram_y, debiased=True))
        score.value = score.details["debiased" if self.params["debiased"] else "biased"]
        return score


@register
class ProbeR2(LatentMetric):
    info = _latent_info("probe_r2", "Held-out R^2 of a ridge probe A -> B, penalty chosen by inner CV, folds grouped "
                                    "by item (a clip's time steps never straddle train and test); averaged over "
                                    "outputs per `average`, mean over outer folds; shuffled-target control in details")
    defaults = {"alphas": list(DEFAULT_ALPHAS), "outer_folds": 5, "inner_folds": 5, "seed": 0,
                "average": "variance_weighted", "control": True}
    choices = {"average": ("variance_weighted", "uniform"), "control": (True, False)}

    def score(self, pair: LatentPair) -> LatentScore:
        alphas = self.params["alphas"]
        alphas = [float(a) for a in (alphas if isinstance(alphas, (list, tuple)) else [alphas])]
        x, y = pair.matrices()
        groups, seed = pair.groups(), int(self.params["seed"])
        folds = int(self.params["outer_folds"]), int(self.params["inner_folds"])
        result = probe_r2(x, y, alphas, *folds, seed, groups)
        average = self.params["average"]
        details = {"uniform": result.uniform, "variance_weighted": result.variance_weighted,
                   "alphas_chosen": result.alphas, "fold_uniform": result.fold_uniform,
                   "fold_variance_weighted": result.fold_variance_weighted,
                   "groups": int(len(np.unique(groups))), "rows": int(x.shape[0])}
        if self.params["control"]:
            # The same probe on targets whose rows are shuffled: what the procedure scores with no relation.
            shuffled = torch.from_numpy(np.random.default_rng(seed + 1).permutation(x.shape[0])).to(y.device)
            control = probe_r2(x, y[shuffled], alphas, *folds, seed, groups)
            details["shuffled_control"] = control.variance_weighted if average == "variance_weighted" else control.uniform
        return LatentScore(result.variance_weighted if average == "variance_weighted" else result.uniform,
                           details=details)


@register
class RSASpearman(LatentMetric):
    info = _latent_info("rsa_spearman", "RSA: Spearman correlation of the upper triangles of A's and B's "
                                        "dissimilarity matrices (`distance`, default 1 - Pearson correlation); above "
                                        "max_items (0: all) a fixed-seed subset, announced")
    defaults = {"distance": "correlation", "max_items": 4000, "seed": 0}
    choices = {"distance": DISTANCES}

    def score(self, pair: LatentPair) -> LatentScore:
        score = LatentScore(math.nan)
        x, y = self.limited_matrices(pair, score)
        score.value = float(rsa_spearman(x, y, self.params["distance"]))
        return score


@register
class NeighbourhoodRecall(LatentMetric):
    info = _latent_info("neighbourhood_recall", "Mutual k-nearest-neighbour alignment (Huh et al. 2024 with the "
                                                "default cosine distance): mean over items of the share of the k "
                                                "nearest in A (item excluded) also among its k nearest in B; chance "
                                                "k/(N-1) in the details")
    defaults = {"k": 10, "distance": "cosine"}
    choices = {"distance": ("cosine", "euclidean")}

    def score(self, pair: LatentPair) -> LatentScore:
        x, y = pair.matrices()
        k = int(self.params["k"])
        per_item = neighbourhood_recall(x, y, k, self.params["distance"])
        return LatentScore(float(per_item.mean()), item_values=per_item, details={"chance": k / (x.shape[0] - 1)})


class _LatentCosine(LatentMetric):
    defaults = {"k": 5, "context": 0, "centred": False}
    choices = {"centred": (True, False)}

    def figures(self, pair: LatentPair) -> tuple[int, dict[str, torch.Tensor]]:
        """The step of horizon k and :func:`cosine_baselines` there."""
        k, context = int(self.params["k"]), int(self.params["context"])
        if pair.a.shape != pair.b.shape:
            raise InputError(f"{self.name} needs the same shape on both sides: {pair.a_path} is "
                             f"{tuple(pair.a.shape)}, {pair.b_path} is {tuple(pair.b.shape)} (items, steps, features)")
        steps = pair.a.shape[1]
        if not 0 < k <= steps - context:
            raise InputError(f"{self.name}.k={k}: {pair.a_path} has {steps} time steps, so horizons "
                             f"1..{steps - context} after {context} context steps")
        step = context + k - 1
        return step, cosine_baselines(pair.a, pair.b, step, context, bool(self.params["centred"]))


@register
class LatentCosine(_LatentCosine):
    info = _latent_info("latent_cosine", "Cosine similarity of predicted (A) and true (B) latents at horizon k, "
                                         "mean over items (centred=true: the true latents' mean removed first); "
                                         "curve over every horizon; persistence and mean-prediction baselines "
                                         "in the details", default=False)

    def score(self, pair: LatentPair) -> LatentScore:
        step, figures = self.figures(pair)
        context = int(self.params["context"])
        curve = figures["per_step"].mean(dim=0).tolist()
        rows = [(index - context + 1, index, value) for index, value in enumerate(curve) if index >= context]
        details = {"mean_prediction": float(figures["mean_prediction"].mean())}
        if "persistence" in figures:
            details["persistence"] = float(figures["persistence"].mean())
            if details["persistence"] < 1:  # a perfect persistence (static truth) leaves no skill to measure
                details["skill"] = cosine_skill(figures["prediction"], figures["persistence"])
        at_k = figures["prediction"]
        return LatentScore(float(at_k.mean()), item_values=at_k, curve=rows, details=details)


@register
class LatentCosineSkill(_LatentCosine):
    info = _latent_info("latent_cosine_skill", "Skill of the latent prediction at horizon k over persistence (the "
                                               "last observed true latent repeated): 1 - mean cosine distance / "
                                               "persistence's; > 0 beats persistence. Needs context >= 1",
                        default=False)

    def score(self, pair: LatentPair) -> LatentScore:
        if int(self.params["context"]) < 1:
            raise InputError(f"{self.name} compares with the last observed latent: the files must hold the context "
                             f"steps before the horizons; set {self.name}.context to their number (>= 1)")
        _, figures = self.figures(pair)
        return LatentScore(cosine_skill(figures["prediction"], figures["persistence"]), details={
            "prediction": float(figures["prediction"].mean()), "persistence": float(figures["persistence"].mean()),
            "mean_prediction": float(figures["mean_prediction"].mean()),
            "skill_over_mean_prediction": cosine_skill(figures["prediction"], figures["mean_prediction"]),
        })


@register
class IntrinsicDimension(LatentMetric):
    info = _latent_info("intrinsic_dim", "Descriptive (no direction): intrinsic dimension of A, TwoNN (Facco et al. "
                                         "2017) or the covariance participation ratio per `estimator`; both, PCA "
                                         "components for 90%/95% variance and B's figures in the details",
                        direction="none", default=False)
    defaults = {"estimator": "twonn", "discard_fraction": 0.1}
    choices = {"estimator": ("twonn", "participation_ratio")}

    def score(self, pair: LatentPair) -> LatentScore:
        sides = {}
        for side, matrix in zip("ab", pair.matrices()):
            sides[side] = {**two_nn_dimension(matrix, float(self.params["discard_fraction"])),
                           **intrinsic_dimension(matrix)}
        return LatentScore(sides["a"][self.params["estimator"]], details=sides)
