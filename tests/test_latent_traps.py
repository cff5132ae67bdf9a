"""The traps of the latent metrics, closed: baselines and skill for latent_cosine (and the c3 gate a
constant prediction cannot pass), TwoNN against scikit-dimension, descriptive metrics never ranked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from foresight_eval.compare import PairedMetric
from foresight_eval.gates import evaluate_gates, load_gates
from foresight_eval.io.latents import LatentPair
from foresight_eval.latents import latents
from foresight_eval.metrics import latent as lm
from foresight_eval.metrics.registry import create
from tests.parity import assert_parity

CONTEXT, HORIZONS = 1, 5


def trajectories(seed=0, items=200, features=64):
    """True latents (N, 1 + 5, D) with a large mean shared by every item, each item drifting step by step,
    and three predictions of the 5 horizons after the observed step: a constant (the data set's mean), a copy
    of the observed step, and an informative one (the truth plus noise)."""
    rng = np.random.default_rng(seed)
    mean = 3.0 * rng.normal(size=features)
    steps = np.cumsum(0.6 * rng.normal(size=(items, CONTEXT + HORIZONS, features)), axis=1)
    true = mean + rng.normal(size=(items, 1, features)) + steps
    constant = np.broadcast_to(true.mean(axis=(0, 1)), true.shape).copy()
    copy = np.repeat(true[:, :CONTEXT], CONTEXT + HORIZONS, axis=1)
    informative = true + 0.9 * rng.normal(size=true.shape)
    for prediction in (constant, copy, informative):
        prediction[:, :CONTEXT] = true[:, :CONTEXT]  # the observed steps are given, not predicted
    return true, {"constant": constant, "copy": copy, "informative": informative}


def pair_of(pred, true):
    return LatentPair("k", "a.safetensors", "b.safetensors", torch.from_numpy(pred), torch.from_numpy(true))


def cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_latent_cosine_reports_baselines_and_skill():
    true, predictions = trajectories()
    step = CONTEXT + HORIZONS - 1
    persistence = cosine(true[:, 0], true[:, step])
    mean_prediction = cosine(true[:, step].mean(axis=0), true[:, step])
    values = {}
    for name, pred in predictions.items():
        result = create("latent_cosine", k=HORIZONS, context=CONTEXT).score(pair_of(pred, true))
        values[name] = result.value
        assert_parity("latent/latent_cosine persistence baseline", result.details["persistence"],
                      persistence.mean(), 1e-12)
        assert_parity("latent/latent_cosine mean-prediction baseline", result.details["mean_prediction"],
                      mean_prediction.mean(), 1e-12)
        skill = create("latent_cosine_skill", k=HORIZONS, context=CONTEXT).score(pair_of(pred, true))
        reference = 1 - (1 - cosine(pred[:, step], true[:, step])).mean() / (1 - persistence).mean()
        assert_parity("latent/latent_cosine_skill vs 1 - distance / persistence distance", skill.value, reference,
                      1e-12)
        assert result.details["skill"] == skill.value
    # The trap: the uncentred cosine passes the log's 0.65 whatever the prediction does.
    assert min(values.values()) > 0.65
    assert values["copy"] == pytest.approx(persistence.mean(), abs=1e-12)


def test_centred_cosine_gives_a_constant_prediction_no_credit():
    true, predictions = trajectories()
    centred = {name: create("latent_cosine", k=HORIZONS, context=CONTEXT, centred=True).score(pair_of(pred, true))
               for name, pred in predictions.items()}
    assert abs(centred["constant"].value) < 1e-6  # the mean of the truth minus itself: rounding noise (eps-clamped)
    assert centred["informative"].value > centred["copy"].value > 0.3
    offset = true.mean(axis=(0, 1))
    reference = cosine(predictions["informative"][:, -1] - offset, true[:, -1] - offset).mean()
    assert_parity("latent/latent_cosine centred", centred["informative"].value, reference, 1e-12)


def test_latent_cosine_skill_needs_the_observed_step():
    true, predictions = trajectories(items=20)
    with pytest.raises(lm.InputError, match="context"):
        create("latent_cosine_skill", k=HORIZONS).score(pair_of(predictions["informative"], true))
    static = np.repeat(true[:, :1], CONTEXT + HORIZONS, axis=1)
    with pytest.raises(lm.InputError, match="perfect"):
        create("latent_cosine_skill", k=HORIZONS, context=CONTEXT).score(pair_of(static, static))
    still = create("latent_cosine", k=HORIZONS, context=CONTEXT).score(pair_of(static, static))
    assert still.value == pytest.approx(1.0) and "skill" not in still.details  # the cosine itself still scores


@pytest.mark.parametrize(("prediction", "decision"), [("constant", "fail"), ("copy", "pass"), ("informative", "pass")])
def test_c3_preset_fails_a_constant_prediction(prediction, decision, tmp_path):
    true, predictions = trajectories()
    for side, array in (("pred", predictions[prediction]), ("true", true)):
        (tmp_path / side).mkdir()
        save_file({"latents": torch.from_numpy(np.ascontiguousarray(array)).float()}, tmp_path / side / "c.safetensors")
    params = {name: {"k": HORIZONS, "context": CONTEXT} for name in ("latent_cosine", "latent_cosine_skill")}
    run = latents(tmp_path / "pred", tmp_path / "true", ["latent_cosine", "latent_cosine_skill"], params=params,
                  device="cpu")
    report = evaluate_gates(run, load_gates("c3"))
    entries = {entry.metric: entry for entry in report.entries}
    assert entries["latent_cosine"].status == "pass"  # the log's criterion alone passes all three
    assert report.decision == decision
    if prediction == "constant":
        assert entries["latent_cosine_skill"].status == "fail" and entries["latent_cosine_skill"].value < -0.5
    if prediction == "copy":  # no skill: exactly on the threshold
        assert entries["latent_cosine_skill"].value == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("items", "features"), [(400, 5), (300, 40)])
def test_two_nn_matches_scikit_dimension(items, features):
    """scikit-dimension's TwoNN takes its neighbour search (D <= 25) and its chunked distances (D > 25)."""
    skdim = pytest.importorskip("skdim", reason="scikit-dimension is a test dependency (pip install .[test])")
    rng = np.random.default_rng(features)
    x = rng.normal(size=(items, 4)) @ rng.normal(size=(4, features)) + 0.01 * rng.normal(size=(items, features))
    reference = skdim.id.TwoNN().fit(x).dimension_
    ours = lm.two_nn_dimension(torch.from_numpy(x))
    assert_parity("latent/TwoNN vs scikit-dimension", ours["twonn"], reference, 1e-9)
    assert ours["twonn_duplicates_dropped"] == 0 and 3 < ours["twonn"] < 5.5


def test_two_nn_drops_duplicates_as_scikit_dimension():
    """Exact zero distances need exact arithmetic: scikit-dimension's neighbour-search path (D <= 25) has it;
    its chunked Gram path (D > 25) leaves rounding noise instead of 0 and keeps some duplicates."""
    skdim = pytest.importorskip("skdim", reason="scikit-dimension is a test dependency (pip install .[test])")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 6))
    x = np.concatenate([x, x[:3]])
    with pytest.warns(UserWarning, match="Dropping 6 points"):
        reference = skdim.id.TwoNN().fit(x).dimension_
    ours = lm.two_nn_dimension(torch.from_numpy(x))
    assert_parity("latent/TwoNN with duplicates vs scikit-dimension", ours["twonn"], reference, 1e-9)
    assert ours["twonn_duplicates_dropped"] == 6


def test_two_nn_of_a_uniform_square_and_line():
    rng = np.random.default_rng(0)
    square = rng.uniform(size=(2000, 2)) @ rng.normal(size=(2, 10))
    line = np.outer(rng.uniform(size=1000), rng.normal(size=8))
    assert lm.two_nn_dimension(torch.from_numpy(square))["twonn"] == pytest.approx(2.0, abs=0.15)
    assert lm.two_nn_dimension(torch.from_numpy(line))["twonn"] == pytest.approx(1.0, abs=0.1)


def test_intrinsic_dim_is_descriptive_and_never_better_or_worse():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)) @ rng.normal(size=(6, 20))
    pair = LatentPair("k", "a.npy", "b.npy", torch.from_numpy(x)[:, None], torch.from_numpy(x)[:, None])
    result = create("intrinsic_dim").score(pair)
    assert result.value == result.details["a"]["twonn"] and 4 < result.value < 7
    ratio = create("intrinsic_dim", estimator="participation_ratio").score(pair)
    assert ratio.value == ratio.details["a"]["participation_ratio"]
    paired = PairedMetric("intrinsic_dim", "none", "a", "b", 5.0, 9.0, 4.0, 3.0, 5.0, 0.0001, 30)
    assert paired.better(0.05) is None


def test_descriptive_metrics_are_never_ranked_nor_judged(tmp_path, monkeypatch):
    from foresight_eval.compare import check_regression
    from foresight_eval.errors import UsageError
    from foresight_eval.report import build_leaderboard, load_runs
    from foresight_eval.report.compare import best_run
    from tests import fake_runs

    monkeypatch.setitem(fake_runs.DIRECTIONS, "intrinsic_dim", "none")
    low = fake_runs.write_run(tmp_path / "low", {"psnr": [30.0, 31.0, 29.0, 30.5],
                                                 "intrinsic_dim": [4.0, 4.1, 3.9, 4.0]})
    high = fake_runs.write_run(tmp_path / "high", {"psnr": [20.0, 21.0, 19.0, 20.5],
                                                   "intrinsic_dim": [9.0, 9.2, 8.8, 9.1]})
    runs = load_runs([str(low), str(high)])
    (table,) = build_leaderboard(runs).tables
    assert table.ranking_metrics == ["psnr"] and [entry.run.path for entry in table.entries] == [low, high]
    assert set(table.best) == {"psnr"}
    assert best_run(runs, "intrinsic_dim") is None and best_run(runs, "psnr").path == low
    with pytest.raises(UsageError, match="descriptive"):
        build_leaderboard(runs, by="intrinsic_dim")
    report = check_regression(high, low, metrics=["intrinsic_dim"])
    assert report.entries[0].status == "pass" and "descriptive" in report.entries[0].note
