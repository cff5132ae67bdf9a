"""Latent metrics against known answers and the reference implementations (NumPy transcriptions of
Kornblith et al.'s code, scikit-learn, SciPy, torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.metrics import make_scorer, r2_score
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neighbors import NearestNeighbors

from foresight_eval.metrics.registry import prepare_metrics
from foresight_eval.errors import InputError, UsageError
from foresight_eval.io.latents import LatentPair
from foresight_eval.metrics import latent as lm
from foresight_eval.metrics.base import FrameBatchMetric, RunContext
from foresight_eval.metrics.registry import create, metric_classes
from tests.parity import assert_parity


# --- Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", reference code
# (google-research/representation_similarity), transcribed to NumPy float64: the sample-space form.
def kornblith_gram_linear(x):
    return x.dot(x.T)


def kornblith_gram_rbf(x, threshold=1.0):
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold**2 * sq_median_distance))


def kornblith_center_gram(gram, unbiased=False):
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def kornblith_cka(gram_x, gram_y, debiased=False):
    gram_x = kornblith_center_gram(gram_x, unbiased=debiased)
    gram_y = kornblith_center_gram(gram_y, unbiased=debiased)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y))


def related_sets(rng, n=120, dx=20, dy=30):
    z = rng.normal(size=(n, 5))
    x = z @ rng.normal(size=(5, dx)) + 0.3 * rng.normal(size=(n, dx))
    y = np.tanh(z @ rng.normal(size=(5, dy))) + 0.3 * rng.normal(size=(n, dy))
    return x, y


def t(array):
    return torch.from_numpy(np.asarray(array))


def orthogonal(rng, d):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


CKA_VARIANTS = {
    "cka": lambda x, y: lm.linear_cka(x, y),
    "cka_debiased": lambda x, y: lm.linear_cka(x, y, debiased=True),
    "cka_rbf": lambda x, y: lm.rbf_cka(x, y, 0.5)[0],
}


@pytest.mark.parametrize("variant", CKA_VARIANTS)
def test_cka_of_a_set_with_itself_is_one(variant, rng):
    x, _ = related_sets(rng)
    assert_parity(f"latent/{variant}(X, X) = 1", float(CKA_VARIANTS[variant](t(x), t(x))), 1.0, atol=1e-10)


@pytest.mark.parametrize("variant", CKA_VARIANTS)
def test_cka_is_invariant_to_rotation_and_isotropic_scaling(variant, rng):
    x, y = related_sets(rng)
    base = float(CKA_VARIANTS[variant](t(x), t(y)))
    moved = x @ orthogonal(rng, x.shape[1]) * 7.5
    assert 0.2 < base < 0.99
    assert_parity(f"latent/{variant} invariance", float(CKA_VARIANTS[variant](t(moved), t(y))), base, atol=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_kornblith_sample_space_formula(debiased, rng, monkeypatch):
    monkeypatch.setattr(lm, "_CHUNK_ROWS", 17)  # exercise the streamed accumulation across uneven chunks
    for n, dx, dy in ((120, 20, 30), (40, 64, 8)):
        x, y = related_sets(rng, n, dx, dy)
        x = x + 5.0  # an offset the centring must remove
        ours = lm.linear_cka(t(x).float(), t(y).float(), debiased=debiased)
        reference = kornblith_cka(kornblith_gram_linear(x.astype(np.float32).astype(np.float64)),
                                  kornblith_gram_linear(y.astype(np.float32).astype(np.float64)), debiased=debiased)
        assert_parity(f"latent/cka{'_debiased' if debiased else ''} vs Kornblith (float64)", float(ours), reference, 1e-6)


def test_rbf_cka_matches_kornblith(rng):
    x, y = related_sets(rng, n=91)  # odd and even counts of squared distances take different median paths
    for bandwidth in (0.5, 1.0):
        for rows in (91, 90):
            ours = lm.rbf_cka(t(x[:rows]), t(y[:rows]), bandwidth)[0]
            reference = kornblith_cka(kornblith_gram_rbf(x[:rows], bandwidth), kornblith_gram_rbf(y[:rows], bandwidth))
            assert_parity("latent/cka_rbf vs Kornblith", float(ours), reference, 1e-6)


def test_debiased_cka_is_near_zero_for_independent_sets_where_biased_is_not():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(60, 200)), rng.normal(size=(60, 200))
    biased, debiased = float(lm.linear_cka(t(x), t(y))), float(lm.linear_cka(t(x), t(y), debiased=True))
    assert biased > 0.5
    assert abs(debiased) < 0.05


@pytest.mark.parametrize("steps", [1, 4])
def test_probe_r2_matches_scikit_learn_group_kfold_literally(steps, rng):
    """The README's equivalence, literally: cross_val_score over GroupKFold with the renumbered labels, for
    one row per item (every row its own group) and for the T rows of --reduce per-timestep."""
    import sklearn
    from sklearn.model_selection import GroupKFold

    x, y = related_sets(rng, n=160, dx=12, dy=6)
    groups = np.arange(160) // steps
    alphas = [1e-2, 1e-1, 1.0, 10.0, 100.0]
    ours = lm.probe_r2(t(x), t(y), alphas, outer_folds=5, inner_folds=4, seed=3, groups=groups)
    renumbered = lm.shuffled_groups(groups, 3)
    with sklearn.config_context(enable_metadata_routing=True):
        for scoring, value in (("r2", ours.uniform),
                               (make_scorer(r2_score, multioutput="variance_weighted"), ours.variance_weighted)):
            scores = cross_val_score(RidgeCV(alphas=alphas, cv=GroupKFold(4)), x, y, cv=GroupKFold(5),
                                     params={"groups": renumbered}, scoring=scoring)
            assert_parity(f"latent/probe_r2 vs sklearn GroupKFold (T={steps})", value, scores.mean(), 1e-9)
    assert len(set(ours.alphas)) >= 1 and all(a in alphas for a in ours.alphas)


def test_group_kfold_matches_scikit_learn_on_unequal_groups(rng):
    from sklearn.model_selection import GroupKFold

    groups = rng.integers(0, 17, size=200)
    folds = lm.group_kfold(groups, 5)
    for fold, (_, test) in enumerate(GroupKFold(5).split(groups, groups=groups)):
        assert np.array_equal(np.flatnonzero(folds == fold), test)
    with pytest.raises(InputError, match="at least 5 groups"):
        lm.group_kfold(np.zeros(50), 5)


def leak_case(rng, clips=20, steps=6, features=32):
    """Per clip, A and B are each a clip-specific point plus small noise per time step, with no relation
    between A and B across clips: a probe can only score by recognising the clip (features >= clips, so a
    linear map from A's clip points to any B's exists)."""
    a = rng.normal(size=(clips, 1, features)) + 0.1 * rng.normal(size=(clips, steps, features))
    b = rng.normal(size=(clips, 1, features)) + 0.1 * rng.normal(size=(clips, steps, features))
    return a, b


def test_probe_r2_grouped_folds_close_the_per_timestep_leak():
    a, b = leak_case(np.random.default_rng(5))
    pair = pair_of(a, b, reduce="per-timestep")
    x, y = pair.matrices()
    assert np.array_equal(pair.groups(), np.repeat(np.arange(20), 6))
    leaky = lm.probe_r2(x, y)  # every row its own group: steps of one clip on both sides
    assert leaky.variance_weighted > 0.5
    result = create("probe_r2").score(pair)
    assert result.value <= 0 and result.details["groups"] == 20 and result.details["rows"] == 120
    assert result.details["shuffled_control"] <= 0


def test_kornblith_reference_vectors():
    """The printed results of Kornblith et al.'s reference notebook (seed 1337, X ~ N(0, 1) 100 x 10, Y = noise + X)."""
    legacy = np.random.RandomState(1337)
    x = legacy.randn(100, 10)
    y = legacy.randn(100, 10) + x
    assert round(lm.linear_cka(t(x), t(y)), 5) == 0.55761
    assert round(lm.rbf_cka(t(x), t(y), 0.5)[0], 5) == 0.65483
    assert round(lm.linear_cka(t(x), t(y), debiased=True), 5) == 0.51346


def unbiased_hsic(k, l):
    """Song et al. 2012's unbiased HSIC estimator, eq. (5), written out (independent of U-centring)."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    ones = np.ones(n)
    return (np.trace(k @ l) + ones @ k @ ones * (ones @ l @ ones) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))


def test_debiased_rbf_cka_matches_song_et_al_unbiased_hsic(rng):
    x, y = related_sets(rng, n=70)
    gram_x, gram_y = kornblith_gram_rbf(x, 0.5), kornblith_gram_rbf(y, 0.5)
    reference = unbiased_hsic(gram_x, gram_y) / np.sqrt(unbiased_hsic(gram_x, gram_x) * unbiased_hsic(gram_y, gram_y))
    assert_parity("latent/cka_rbf debiased vs Song et al. unbiased HSIC", lm.rbf_cka(t(x), t(y), 0.5, True)[0],
                  reference, 1e-10)
    assert_parity("latent/cka_rbf debiased vs Kornblith cka(debiased=True)", lm.rbf_cka(t(x), t(y), 0.5, True)[0],
                  kornblith_cka(gram_x, gram_y, debiased=True), 1e-10)


def test_cka_headline_is_near_zero_and_warns_when_features_dwarf_items():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(100, 4096)), rng.normal(size=(100, 4096))
    with pytest.warns(lm.LatentMetricWarning, match=r"4096 features for 100 items.*biased 0\.9"):
        score = create("cka").score(pair_of(x, y))
    assert abs(score.value) < 0.05 and score.details["biased"] > 0.9
    assert score.details["warnings"] and score.details["debiased"] == score.value
    rbf = create("cka_rbf").score(pair_of(x, y))
    assert abs(rbf.value) < 0.05 and rbf.details["biased"] > 0.9
    with pytest.warns(lm.LatentMetricWarning):
        assert create("cka_biased").score(pair_of(x, y)).value > 0.9


def test_probe_r2_chooses_the_penalty_by_inner_cv(rng):
    x, _ = related_sets(rng, n=100, dx=40)
    y = rng.normal(size=(100, 3))  # unrelated target: a strong penalty predicts best
    result = lm.probe_r2(t(x), t(y), [1e-3, 1e5])
    assert result.alphas == [1e5] * 5
    assert result.variance_weighted < 0.05


def test_probe_r2_needs_enough_items(rng):
    with pytest.raises(InputError, match="at least 25 items"):
        lm.probe_r2(t(rng.normal(size=(10, 3))), t(rng.normal(size=(10, 3))))


@pytest.mark.parametrize("distance", lm.DISTANCES)
def test_rsa_spearman_matches_scipy(distance, rng):
    x, y = related_sets(rng, n=80)
    reference = spearmanr(pdist(x, metric=distance), pdist(y, metric=distance)).statistic
    assert_parity(f"latent/rsa_spearman {distance} vs scipy", float(lm.rsa_spearman(t(x), t(y), distance)), reference, 1e-9)


def test_average_ranks_match_scipy_with_ties():
    from scipy.stats import rankdata

    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 0.5])
    assert_parity("latent/average ranks vs scipy rankdata", lm.average_ranks(t(values)), rankdata(values), 0.0)


def pair_of(x, y, reduce=None) -> LatentPair:
    x, y = t(x), t(y)
    return LatentPair("k", "a.safetensors", "b.safetensors", x if x.ndim == 3 else x[:, None],
                      y if y.ndim == 3 else y[:, None], reduce)


def test_rsa_subsamples_above_max_items_with_a_fixed_seed_and_says_so(rng):
    x, y = related_sets(rng, n=300)
    metric = create("rsa_spearman", max_items=100)
    with pytest.warns(lm.LatentMetricWarning, match="random subset of 100 of the 300 items"):
        first, second = metric.score(pair_of(x, y)), metric.score(pair_of(x, y))
    assert first.value == second.value and first.details["items_used"] == 100
    assert first.details["items_total"] == 300 and "max_items=0" in first.details["warnings"][0]
    subset = lm._subsample(300, 100, 0, torch.device("cpu")).numpy()
    reference = spearmanr(pdist(x[subset], "correlation"), pdist(y[subset], "correlation")).statistic
    assert_parity("latent/rsa_spearman subsample vs scipy", first.value, reference, 1e-9)
    everything = create("rsa_spearman", max_items=0).score(pair_of(x, y))
    assert everything.details["items_used"] == 300 and "warnings" not in everything.details


def test_distances_of_identical_items_are_exact_ties(rng):
    x, y = related_sets(rng, n=60)
    duplicates = [3, 17, 17, 40]
    x, y = np.concatenate([x, x[duplicates]]), np.concatenate([y, y[duplicates]])
    for distance in lm.DISTANCES:
        matrix = lm.distance_matrix(t(x), distance)
        assert matrix[60, 3] == 0 and matrix[61, 17] == 0 and matrix[61, 62] == 0
        assert torch.equal(matrix[61], matrix[62]) and torch.equal(matrix[63], matrix[40])
        assert torch.equal(matrix, matrix.T)
        assert bool((matrix.diagonal() == 0).all())
    # Reference: SciPy's distances with the rounding noise of identical items snapped to exact ties.
    reference = spearmanr(np.round(pdist(x, "correlation"), 12), np.round(pdist(y, "correlation"), 12)).statistic
    assert_parity("latent/rsa_spearman with exact ties vs scipy (snapped)", float(lm.rsa_spearman(t(x), t(y))),
                  reference, 1e-12)


def huh_mutual_knn(feats_a, feats_b, k):
    """Huh et al. 2024 (platonic-rep, metrics.py ``mutual_knn``), transcribed to NumPy float64: neighbours
    by inner product of L2-normalised features, self excluded, accuracy = mean share of shared neighbours."""
    def knn(feats):
        unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -1e8)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    first, second = knn(feats_a), knn(feats_b)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(first, second)])


def test_recall_and_rsa_defaults_are_the_published_definitions(rng):
    x, y = related_sets(rng, n=150)
    recall = create("neighbourhood_recall").score(pair_of(x, y))
    assert_parity("latent/neighbourhood_recall default vs Huh et al. mutual_knn", recall.value,
                  huh_mutual_knn(x, y, 10), 1e-12)
    assert recall.details["chance"] == 10 / 149
    rsa = create("rsa_spearman").score(pair_of(x, y)).value
    reference = spearmanr(pdist(x, "correlation"), pdist(y, "correlation")).statistic  # 1 - Pearson RDMs
    assert_parity("latent/rsa_spearman default vs 1 - Pearson RDM (scipy)", rsa, reference, 1e-12)
    # Same directions, random norms: the published definitions see identical geometry, Euclidean does not.
    rescaled = x * rng.uniform(0.2, 5.0, size=(150, 1))
    assert create("neighbourhood_recall").score(pair_of(x, rescaled)).value == 1.0
    assert create("rsa_spearman", distance="cosine").score(pair_of(x, rescaled)).value == pytest.approx(1.0, abs=1e-12)
    assert create("neighbourhood_recall", distance="euclidean").score(pair_of(x, rescaled)).value < 0.6


def test_neighbourhood_recall_is_one_for_identical_sets_and_matches_scikit_learn(rng, monkeypatch):
    monkeypatch.setattr(lm, "_DISTANCE_BLOCK", 1000)  # several row blocks
    x, y = related_sets(rng, n=150)
    assert float(lm.neighbourhood_recall(t(x), t(x), k=10).min()) == 1.0
    for distance in ("euclidean", "cosine"):
        neighbours = [NearestNeighbors(n_neighbors=11, metric=distance).fit(s).kneighbors(s)[1][:, 1:] for s in (x, y)]
        reference = [len(set(a) & set(b)) / 10 for a, b in zip(*neighbours)]
        ours = lm.neighbourhood_recall(t(x), t(y), k=10, distance=distance)
        assert_parity(f"latent/neighbourhood_recall {distance} vs sklearn", ours, reference, 0.0)
        assert 0.1 < float(ours.mean()) < 0.9


def test_cosine_matches_torch(rng):
    pred, true = rng.normal(size=(20, 6, 16)), rng.normal(size=(20, 6, 16))
    reference = F.cosine_similarity(t(pred), t(true), dim=-1)
    assert_parity("latent/latent_cosine vs torch cosine_similarity", lm.cosine_per_step(t(pred).float(), t(true).float()),
                  reference, 1e-6)


def test_latent_cosine_curve_horizons_and_value_at_k(rng):
    true = rng.normal(size=(30, 8, 16))
    pred = true + rng.normal(size=true.shape) * np.linspace(0.1, 3.0, 8)[None, :, None]
    metric = create("latent_cosine", k=3, context=2)
    result = metric.score(pair_of(pred, true))
    assert [h for h, _, _ in result.curve] == [1, 2, 3, 4, 5, 6]
    assert [s for _, s, _ in result.curve] == [2, 3, 4, 5, 6, 7]
    curve = [v for _, _, v in result.curve]
    assert curve == sorted(curve, reverse=True)
    expected = F.cosine_similarity(t(pred[:, 4]), t(true[:, 4]), dim=-1).mean()
    assert_parity("latent/latent_cosine at k vs torch", result.value, float(expected), 1e-12)
    with pytest.raises(InputError, match="horizons 1..6"):
        create("latent_cosine", k=7, context=2).score(pair_of(pred, true))
    with pytest.raises(InputError, match="same shape"):
        metric.score(pair_of(pred, true[:, :, :8]))


def test_intrinsic_dimension_matches_scikit_learn_pca(rng):
    for n, d in ((200, 30), (25, 60)):
        x = rng.normal(size=(n, 6)) @ rng.normal(size=(6, d)) + 0.05 * rng.normal(size=(n, d))
        ours = lm.intrinsic_dimension(t(x))
        pca = PCA().fit(x)
        for level in (0.90, 0.95):
            assert ours[f"pca{round(level * 100)}"] == PCA(n_components=level, svd_solver="full").fit(x).n_components_
        variance = pca.explained_variance_
        assert_parity("latent/participation ratio vs sklearn PCA", ours["participation_ratio"],
                      variance.sum() ** 2 / np.square(variance).sum(), 1e-8)


def test_latent_metrics_share_the_registry_and_default_selection():
    classes = metric_classes()
    names = {"cka", "cka_biased", "cka_rbf", "probe_r2", "rsa_spearman", "neighbourhood_recall",
             "latent_cosine", "latent_cosine_skill", "intrinsic_dim"}
    assert names <= set(classes)
    assert all(classes[name].info.inputs == "latents" for name in names)
    assert classes["intrinsic_dim"].info.direction == "none"  # descriptive
    metrics, skipped = prepare_metrics(None, None, RunContext(), inputs="latents")
    assert {m.name for m in metrics} == names - {"cka_biased", "latent_cosine", "latent_cosine_skill",
                                                 "intrinsic_dim"} and not skipped
    assert create("neighbourhood_recall").params["k"] == 10 and create("latent_cosine").params["k"] == 5
    # A latent metric has no frame hooks to call by mistake, and scoring frames with it is refused up front.
    assert not isinstance(create("cka"), FrameBatchMetric) and not hasattr(create("cka"), "update")
    with pytest.raises(UsageError, match="'cka' scores latents, not frames"):
        prepare_metrics(["cka"], None, RunContext(), inputs="frames")
