"""Paired statistics, run comparison and baseline regression checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from foresight_eval import ScoreOptions, score
from foresight_eval.compare import ParameterMismatch, Tolerance, check_regression, compare, parse_tolerances
from foresight_eval.errors import UsageError
from foresight_eval.stats import BootstrapConfig, paired_bootstrap, paired_test, wilcoxon_p
from tests.fake_runs import make_run, write_run
from tests.parity import assert_parity

CONFIG = BootstrapConfig(n_resamples=500, seed=3)


def test_paired_bootstrap_ci_matches_scipys_paired_bootstrap(rng):
    a, b = rng.normal(30, 2, 15), rng.normal(31, 2, 15)
    ours = paired_bootstrap(b - a, CONFIG)
    reference = scipy_stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True,
                                      n_resamples=CONFIG.n_resamples, method="percentile",
                                      rng=np.random.default_rng(CONFIG.seed))
    assert_parity("paired bootstrap CI vs scipy.stats.bootstrap(paired=True)", [ours.ci_low, ours.ci_high],
                  [reference.confidence_interval.low, reference.confidence_interval.high], atol=1e-9)
    assert ours.mean == pytest.approx(np.mean(b - a)) and ours.n == 15


def test_wilcoxon_p_is_scipys(rng):
    diffs = rng.normal(0.3, 1, 12)
    assert_parity("wilcoxon p vs scipy.stats.wilcoxon", wilcoxon_p(diffs), scipy_stats.wilcoxon(diffs).pvalue, atol=0)
    assert wilcoxon_p(np.zeros(5)) == 1.0 and wilcoxon_p(np.array([1.0])) is None


def test_paired_bootstrap_p_value_holds_its_level_and_has_power():
    """Under no difference, p < 0.05 about 5% of the time; a one-SD shift over 20 videos is nearly always found."""
    config = BootstrapConfig(n_resamples=400)
    null = [paired_bootstrap(np.random.default_rng(s).normal(0, 1, 20), config).p_value for s in range(150)]
    shifted = [paired_bootstrap(np.random.default_rng(s).normal(1, 1, 20), config).p_value for s in range(50)]
    assert 0.0 < np.mean(np.array(null) < 0.05) < 0.12
    assert np.mean(np.array(shifted) < 0.05) > 0.9


def test_paired_bootstrap_is_seeded_and_handles_degenerate_samples():
    diffs = np.array([0.5, -0.2, 0.9, 0.1, 0.4])
    assert paired_bootstrap(diffs, CONFIG) == paired_bootstrap(diffs, CONFIG)
    assert paired_bootstrap(diffs, CONFIG) != paired_bootstrap(diffs, BootstrapConfig(n_resamples=500, seed=4))
    constant = paired_bootstrap(np.full(4, -1.0), CONFIG)
    assert (constant.ci_low, constant.ci_high) == (-1.0, -1.0) and constant.p_value < 0.01
    assert paired_bootstrap(np.zeros(4), CONFIG).p_value == 1.0
    assert paired_bootstrap(np.array([2.0]), CONFIG).p_value is None
    with pytest.raises(ValueError, match="paired test"):
        paired_test(diffs, CONFIG, test="t-test")


def test_compare_pairs_shared_ok_videos_and_names_the_winner(tmp_path):
    a = write_run(tmp_path / "a", {"psnr": [30.0, 31.0, 29.0, 32.0, 30.5, 99.0]},
                  videos=["v0", "v1", "v2", "v3", "v4", "only_a"], errors=("broken",))
    b = write_run(tmp_path / "b", {"psnr": [31.0, 32.1, 29.9, 33.2, 31.4]},
                  videos=["v0", "v1", "v2", "v3", "v4"])
    broken_in_b = write_run(tmp_path / "c", {"psnr": [31.0, 32.1, 29.9, 33.2]},
                            videos=["v0", "v1", "v2", "v3"], errors=("v4",))
    result = compare([a, b, broken_in_b], bootstrap=CONFIG)
    ab, ac, bc = result.pairs
    assert (ab.a, ab.b, ab.n) == ("a", "b", 5) and ab.diff == pytest.approx(1.02) and ab.ci_low > 0
    # b is better on all 5 shared videos, but 5 pairs cannot reach 0.05 with an exact paired test.
    assert ab.p_value == pytest.approx(0.0625) and ab.p_min == pytest.approx(0.0625) and result.winner(ab) is None
    assert "5 videos cannot show a significant difference at 0.05" in ab.note
    assert ac.n == 4 and bc.n == 4 and bc.diff == pytest.approx(0.0) and result.winner(bc) is None
    many = 8  # enough pairs: the exact test can reach 2 / 2^8, Holm over the family still below 0.05
    lower = compare([write_run(tmp_path / "l1", {"lpips": [0.2 + 0.01 * i for i in range(many)]}),
                     write_run(tmp_path / "l2", {"lpips": [0.3 + 0.011 * i for i in range(many)]})], bootstrap=CONFIG)
    assert lower.winner(lower.pairs[0]) == "l1"  # lower is better
    assert lower.to_dict()["pairs"][0]["winner"] == "l1" and lower.to_dict()["correction"] == "holm"


def test_compare_refuses_different_parameters_unless_forced(tmp_path):
    values = {"ssim": [0.9, 0.8, 0.85]}
    wang = write_run(tmp_path / "wang", values, params={"ssim": {"mode": "wang"}})
    skimage = write_run(tmp_path / "skimage", values, params={"ssim": {"mode": "skimage"}}, context=4)
    with pytest.raises(ParameterMismatch) as raised:
        compare([wang, skimage], bootstrap=CONFIG)
    assert "ssim.params.mode: 'wang' (wang), 'skimage' (skimage)" in str(raised.value)
    assert "options.context: 0 (wang), 4 (skimage)" in str(raised.value)
    forced = compare([wang, skimage], bootstrap=CONFIG, force=True)
    assert len(forced.parameter_differences) == 2 and forced.pairs[0].n == 3


def test_compare_needs_shared_metrics(tmp_path):
    a = write_run(tmp_path / "a", {"psnr": [30.0, 31.0]})
    b = write_run(tmp_path / "b", {"ssim": [0.9, 0.8]})
    with pytest.raises(UsageError, match="share no metric"):
        compare([a, b])
    with pytest.raises(UsageError, match="'ssim' is not in run a"):
        compare([a, b], metrics=["ssim"])


BASE = [30.0, 31.0, 29.0, 32.0, 30.0, 31.0, 29.5, 30.5]


def test_a_large_but_noisy_regression_is_not_flagged_and_a_consistent_one_is():
    baseline = make_run({"psnr": BASE})
    noisy = make_run({"psnr": [b + d for b, d in zip(BASE, [-9.0, 5.0, -8.0, 4.5, -2.5, -4.0, 3.0, -5.0])]})  # -2 dB
    consistent = make_run({"psnr": [b + d for b, d in zip(BASE, [-0.50, -0.55, -0.45, -0.52, -0.48, -0.5, -0.5, -0.5])]})
    not_flagged = check_regression(noisy, baseline, bootstrap=CONFIG).entries[0]
    flagged = check_regression(consistent, baseline, bootstrap=CONFIG).entries[0]
    assert not_flagged.worse_by == pytest.approx(2.0) and not_flagged.status == "pass" and not_flagged.within_noise
    assert not_flagged.comparison.p_value > 0.05 and not_flagged.comparison.ci_low < 0 < not_flagged.comparison.ci_high
    assert flagged.status == "fail" and flagged.comparison.p_value < 0.05 and flagged.comparison.ci_high < 0
    assert flagged.comparison.p_value == pytest.approx(2 / 2**8)  # exact sign flips: every pair worse
    assert not_flagged.comparison.mde > 2.0 and flagged.comparison.mde < 0.1  # the noisy run could hide -2 dB
    few = check_regression(make_run({"psnr": [b - 0.5 for b in BASE[:5]]}), make_run({"psnr": BASE[:5]}),
                           bootstrap=CONFIG, test="wilcoxon").entries[0]
    assert few.comparison.p_value == pytest.approx(0.0625)  # exact test: n=5 cannot reach 0.05
    assert few.status == "pass" and few.comparison.mde == float("inf")


def test_tolerances_absolute_relative_and_per_metric():
    lpips = [0.20, 0.22, 0.21, 0.19, 0.20, 0.21, 0.20, 0.22]
    baseline = make_run({"psnr": BASE, "lpips": lpips})
    run = make_run({"psnr": [b - 0.5 + 0.01 * i for i, b in enumerate(BASE)], "lpips": [v + 0.01 for v in lpips]})
    default, per_metric = parse_tolerances(["1%", "psnr=0.6"])
    assert default == Tolerance(0.01, relative=True) and per_metric == {"psnr": Tolerance(0.6)}
    report = check_regression(run, baseline, default, per_metric, bootstrap=CONFIG)
    statuses = {entry.metric: (entry.status, entry.note) for entry in report.entries}
    assert statuses["psnr"] == ("pass", "within the tolerance")  # 0.48 dB worse, 0.6 allowed
    assert statuses["lpips"][0] == "fail"  # 0.01 worse is 4.8% of 0.206, beyond 1%
    relaxed = check_regression(run, baseline, Tolerance(0.05, relative=True), per_metric, bootstrap=CONFIG)
    assert relaxed.decision == "pass"
    for bad in (["psnr=abc"], ["-1"]):
        with pytest.raises(UsageError, match="max_regression"):
            parse_tolerances(bad)


def test_regression_marks_metrics_a_run_lacks_as_missing():
    report = check_regression(make_run({"psnr": BASE}), make_run({"psnr": BASE, "ssim": [0.9] * len(BASE)}),
                              metrics=["psnr", "ssim"], bootstrap=CONFIG)
    assert [(e.metric, e.status) for e in report.entries] == [("psnr", "pass"), ("ssim", "missing")]
    assert report.decision == "fail"


@pytest.mark.slow
def test_end_to_end_blur_mild_beats_blur_strong(fixtures_dir, tmp_path):
    runs = []
    for name in ("blur_mild", "blur_strong"):
        run = score(fixtures_dir / "preds" / name, fixtures_dir / "refs", ["psnr", "ssim"],
                    options=ScoreOptions(context=4), device="cpu")
        runs.append(run.write(tmp_path / name))
    # 6 clips, mild blur better on every one: the exact test's smallest p, 2 / 2^6, is below 0.05 on one metric...
    result = compare(runs, correction="none")
    assert {entry.metric: result.winner(entry) for entry in result.pairs} == {"psnr": "blur_mild", "ssim": "blur_mild"}
    assert all(entry.n == 6 and entry.ci_high < 0 and entry.p_value == 2 / 2**6 for entry in result.pairs)
    # ...but not once Holm corrects for testing two metrics: 6 clips are too few for two claims at 0.05.
    held = compare(runs)
    assert [entry.p_adjusted for entry in held.pairs] == [pytest.approx(4 / 2**6)] * 2
    assert all(held.winner(entry) is None for entry in held.pairs)
