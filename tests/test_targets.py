"""Metrics whose best value is a target: a frozen prediction must not win a consistency metric."""

from __future__ import annotations

import pytest

from foresight_eval import ScoreOptions, score
from foresight_eval.compare import compare
from foresight_eval.gates import evaluate_gates
from foresight_eval.gates.spec import load_gates
from foresight_eval.metrics.registry import metric_classes
from foresight_eval.report import build_leaderboard, load_runs
from foresight_eval.report.compare import best_run
from foresight_eval.targets import badness, metric_target

TEMPORAL = ("tc", "tc_delta", "flicker", "flicker_delta")  # warp_error: the same rule, 10x slower to score


@pytest.fixture(scope="module")
def scored(fixtures_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    folders = {}
    for name in ("frozen_frame", "blur_mild"):
        run = score(fixtures_dir / "preds" / name, fixtures_dir / "refs", list(TEMPORAL),
                    options=ScoreOptions(context=4), device="cpu")
        folders[name] = run.write(root / name)
    return folders


def test_every_temporal_metric_declares_its_target():
    classes = metric_classes()
    for name in TEMPORAL + ("warp_error", "warp_error_delta", "flicker_score", "feature_consistency", "feature_consistency_delta"):
        target = classes[name].info.target
        assert target == (0.0 if name.endswith("_delta") else "reference"), name
    assert classes["psnr"].info.target is None and classes["frozen"].info.target is None


@pytest.mark.slow
def test_a_frozen_copy_never_ranks_first_on_a_temporal_metric(scored):
    """blur_mild is the honest prediction: blurred, but moving as the reference moves. (blur_strong is
    no honest baseline here: heavy blur also smooths motion away, so it is as far from the reference's
    tc as the frozen copy.)"""
    frozen, honest = scored["frozen_frame"], scored["blur_mild"]
    runs = load_runs([str(frozen), str(honest)])
    raw = {run.label: run.metrics for run in runs}
    # The trap: by the extreme, the frozen copy is the steadiest video there is.
    assert raw["frozen_frame"]["tc"]["mean"] > raw["blur_mild"]["tc"]["mean"]
    assert raw["frozen_frame"]["flicker"]["mean"] < raw["blur_mild"]["flicker"]["mean"]
    for metric in TEMPORAL:
        assert best_run(runs, metric).label != "frozen_frame", metric
        (table,) = build_leaderboard(runs, by=metric).tables
        assert table.entries[0].run.label != "frozen_frame", metric
    (table,) = build_leaderboard(runs).tables  # mean rank over every temporal metric
    assert table.entries[-1].run.label == "frozen_frame" and set(table.ranking_metrics) == set(TEMPORAL)
    # compare judges the distance to the target too: the frozen copy is the farther one on every clip.
    result = compare([frozen, honest], correction="none")
    for entry in result.pairs:
        assert entry.direction == "lower" and entry.diff < 0, entry.metric  # B (blur) - A (frozen) distances


@pytest.mark.slow
def test_target_gates_use_the_distance(scored, tmp_path):
    gates = tmp_path / "steady.yaml"
    gates.write_text("metrics:\n  - {metric: tc, threshold: 0.03, direction: target}\n"
                     "  - {metric: flicker_delta, threshold: 0.002, direction: target}\n"
                     "  - {metric: psnr, threshold: 1, direction: target}\n")
    loaded = load_gates(gates)
    frozen = evaluate_gates(scored["frozen_frame"], loaded)
    blur = evaluate_gates(scored["blur_mild"], loaded)
    summary = load_runs([str(scored["frozen_frame"])])[0].metrics
    assert frozen.entries[0].value == pytest.approx(abs(summary["tc_delta"]["mean"]))
    assert [e.status for e in frozen.entries][:2] == ["fail", "fail"] and [e.status for e in blur.entries][:2] == [
        "pass", "pass"]


def test_badness_and_old_runs():
    metrics = {"tc": {"direction": "higher", "mean": 0.99},  # no recorded target: an old run, the registry's
               "tc_delta": {"direction": "higher", "mean": -0.03, "target": 0.0},
               "psnr": {"direction": "higher", "mean": float("inf")},
               "flicker": {"direction": "lower", "mean": 0.0, "target": "reference"}}
    assert metric_target("tc", metrics["tc"]) == "reference"
    assert badness(metrics, "tc") == badness(metrics, "tc_delta") == pytest.approx(0.03)
    assert badness(metrics, "psnr") == float("-inf")  # identical frames: the best PSNR there is
    assert badness(metrics, "flicker") != badness(metrics, "flicker")  # NaN: no flicker_delta to judge by
