"""Paired tests that hold their level at small n, their smallest attainable p, family corrections and the
minimum detectable effect."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from foresight_eval import stats
from foresight_eval.stats import (
    BootstrapConfig, adjust_p_values, mean_with_ci, means_with_ci, minimum_detectable_effect, paired_bootstrap,
    paired_test, sign_flip_p, small_n_warning, wilcoxon_p, wilcoxon_p_min,
)
from tests.parity import assert_parity

ALPHA = 0.05


def brute_force_sign_flip(diffs: np.ndarray) -> float:
    """Every one of the 2^n sign patterns, counted by hand: the share whose |mean| reaches the observed one."""
    observed = abs(diffs.mean())
    means = [abs(np.mean(np.array(signs) * diffs)) for signs in itertools.product((1, -1), repeat=diffs.size)]
    return float(np.mean(np.array(means) >= observed - 1e-12))


def test_exact_sign_flip_p_matches_enumeration(rng):
    for n in (3, 6, 9):
        diffs = rng.normal(0.4, 1, n)
        assert_parity(f"sign-flip p vs enumeration of 2^{n} patterns", sign_flip_p(diffs)[0],
                      brute_force_sign_flip(diffs), atol=1e-12)


def test_smallest_attainable_p_is_reported_and_warned_about():
    three = np.array([0.1, 0.2, 0.3])  # every pair better: the most extreme outcome 3 pairs can give
    assert sign_flip_p(three) == (0.25, 0.25)
    assert wilcoxon_p(three) == pytest.approx(0.25) and wilcoxon_p_min(three) == pytest.approx(0.25)
    assert paired_bootstrap(three, BootstrapConfig(n_resamples=2000)).p_value < 0.01  # the old, wrong answer
    result = paired_test(three)
    assert (result.p_value, result.p_min) == (0.25, 0.25)
    assert small_n_warning("permutation", 3, result.p_min, ALPHA) == (
        "3 videos cannot show a significant difference at 0.05 (the smallest p the permutation test can give is 0.25)")
    assert small_n_warning("permutation", 8, 2 / 2**8, ALPHA) == ""
    assert "too small below 20 videos" in small_n_warning("bootstrap", 12, 1 / 2001, ALPHA)
    # A zero difference flips to itself: 2 of 3 nonzero differences allow p = 0.5 at best.
    assert sign_flip_p(np.array([0.0, 0.2, 0.3]))[1] == 0.5
    assert sign_flip_p(np.zeros(4)) == (1.0, 1.0) and sign_flip_p(np.array([1.0])) == (None, None)


def _false_positive_rate(test, n: int, studies: int) -> float:
    """Share of simulated studies with no true difference (paired differences ~ N(0, 1), and a skewed
    centred distribution for half of them) in which ``test`` reports p < alpha."""
    hits = 0
    for seed in range(studies):
        rng = np.random.default_rng(seed)
        diffs = rng.normal(0, 1, n) if seed % 2 else rng.laplace(0, 1, n)
        hits += test(diffs, seed) < ALPHA
    return hits / studies


@pytest.mark.slow
@pytest.mark.parametrize("n", [3, 5, 10, 30])
def test_false_positive_rate_stays_at_alpha_for_small_studies(n, monkeypatch):
    """Coverage: with no true effect, p < 0.05 in at most 5% of studies, within Monte Carlo error
    (3 standard errors of a proportion over 300 studies: 0.05 + 0.038). Fewer sign patterns make the
    Monte Carlo path (used from n = 10 here) quick; its (k + 1) / (R + 1) p-value is valid for any R."""
    monkeypatch.setattr(stats, "PERMUTATION_RESAMPLES", 999)
    studies = 300
    bound = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / studies)
    permutation = _false_positive_rate(lambda d, seed: sign_flip_p(d, seed)[0], n, studies)
    wilcoxon = _false_positive_rate(lambda d, seed: wilcoxon_p(d), n, studies)
    assert permutation <= bound and wilcoxon <= bound
    if n == 3:  # never below 0.25 at n = 3: no false positive is possible
        assert permutation == wilcoxon == 0.0
        # The bootstrap p-value the tool used to give: far above alpha, the defect this default fixes.
        bootstrap = _false_positive_rate(
            lambda d, seed: paired_bootstrap(d, BootstrapConfig(n_resamples=200, seed=seed)).p_value, n, 100)
        assert bootstrap > 0.2


def test_a_real_effect_is_found_at_moderate_n():
    found = [sign_flip_p(np.random.default_rng(s).normal(1.0, 1, 12), s)[0] < ALPHA for s in range(25)]
    assert np.mean(found) > 0.8


def naive_holm(p: list[float]) -> list[float]:
    """Holm 1979 from its definition: the i-th smallest p times (m - i + 1), running maximum, capped at 1."""
    m, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_holm_and_benjamini_hochberg(rng):
    p = list(rng.uniform(0, 0.2, 9))
    assert_parity("Holm-adjusted p vs the step-down definition", adjust_p_values(p, "holm"), naive_holm(p), atol=1e-15)
    assert_parity("BH-adjusted p vs scipy.stats.false_discovery_control", adjust_p_values(p, "bh"),
                  scipy_stats.false_discovery_control(p), atol=1e-15)
    assert adjust_p_values([0.01, None, 0.04, 0.03]) == [0.03, None, 0.06, 0.06]  # None: no test, not in the family
    assert adjust_p_values([0.01, 0.2], "none") == [0.01, 0.2]
    with pytest.raises(ValueError, match="correction"):
        adjust_p_values([0.1], "bonferroni-ish")


def test_minimum_detectable_effect():
    diffs = np.random.default_rng(1).normal(0, 0.5, 20)
    mde = minimum_detectable_effect(diffs, ALPHA)
    expected = (scipy_stats.t.ppf(0.975, 19) + scipy_stats.t.ppf(0.8, 19)) * diffs.std(ddof=1) / np.sqrt(20)
    assert mde == pytest.approx(expected) and mde > 0
    assert minimum_detectable_effect(diffs[:5], ALPHA) == np.inf  # 5 pairs cannot reach 0.05
    assert minimum_detectable_effect(diffs[:1], ALPHA) is None
    # Simulated: a true shift of the MDE is detected by the sign-flip test about 80% of the time.
    spread = np.random.default_rng(2)
    detected = [sign_flip_p(spread.normal(mde, diffs.std(ddof=1), 20), s)[0] < ALPHA for s in range(60)]
    assert 0.6 < np.mean(detected) <= 1.0


@pytest.mark.parametrize("split", [None, "memory", "count"])
@pytest.mark.parametrize("method", ["percentile", "BCa", "basic"])
def test_per_horizon_estimates_equal_one_bootstrap_per_sample(method, split, monkeypatch):
    """means_with_ci (one SciPy call per sample length, or per few rows of a length where the resamples would
    take too much memory or the rows are many; calls in parallel threads) gives what mean_with_ci gives for
    each sample alone: lengths 0 to 7, constant samples, a NaN, infinities, repeated lengths in any order; and
    for long samples each mean to the bit (the means of a stacked array's rows)."""
    from foresight_eval import stats

    monkeypatch.setattr(stats, "usable_cpus", lambda: stats.BOOTSTRAP_THREADS)  # threads, whatever this machine has
    if split == "memory":  # the memory bound of a call: 2 samples of length 7 (more of shorter ones)
        monkeypatch.setattr(stats, "RESAMPLED_BYTES_PER_CALL", 8 * 500 * 7 * 2)
    if split == "count":  # calls of at most 3 samples, whatever their length
        monkeypatch.setattr(stats, "SAMPLES_PER_CALL", 3)
    rng = np.random.default_rng(3)
    samples = [rng.normal(size=int(n)) for n in rng.integers(0, 8, size=60)]
    samples += [np.full(4, 0.5), np.array([1.0, np.nan, 2.0]), np.array([2.0]), np.array([np.inf, 1.0, 2.0]),
                np.array([np.inf, np.inf])]
    config = BootstrapConfig(method=method, n_resamples=500, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an infinity's spread (inf - inf) must not be computed
        together = means_with_ci(samples, config)
    alone = [mean_with_ci(sample, config) for sample in samples]
    assert [repr(e) for e in together] == [repr(e) for e in alone]
    # Long samples (a run's clips): the same resamples, NumPy's summation order over a stacked array aside.
    long_samples = [rng.normal(size=256) for _ in range(5)]
    together, alone = means_with_ci(long_samples, config), [mean_with_ci(s, config) for s in long_samples]
    assert_parity(f"means_with_ci vs mean_with_ci, 256 values ({method})",
                  [[e.mean, e.ci_low, e.ci_high] for e in together], [[e.mean, e.ci_low, e.ci_high] for e in alone],
                  atol=1e-14)
    if split is None and method == "percentile":  # the means alone, at lengths where NumPy sums pairwise
        long_samples = [rng.normal(size=n) * 1e3 for n in (9, 37, 128, 129, 256, 1000, 4099) for _ in range(3)]
        together = means_with_ci(long_samples, BootstrapConfig(n_resamples=20))
        assert [e.mean for e in together] == [float(sample.mean()) for sample in long_samples]
