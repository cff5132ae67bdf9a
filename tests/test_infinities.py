"""Infinite values (PSNR of identical frames) are stored as JSON numbers, read back from old run folders,
ranked, and drawn."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from foresight_eval.io.files import dumps_json
from foresight_eval.report import build_leaderboard, load_runs, plots
from foresight_eval.report.compare import best_run
from foresight_eval.runs import Run
from foresight_eval.results import load_summary
from tests.fake_runs import write_run


def test_non_finite_numbers_round_trip_as_json_numbers():
    payload = {"mean": math.inf, "low": -math.inf, "missing": math.nan, "name": "inf", "nested": [1.5, math.inf]}
    text = dumps_json(payload)
    assert '"mean": 1e999' in text and '"low": -1e999' in text and '"missing": null' in text
    assert "Infinity" not in text and "NaN" not in text  # both invalid JSON
    # A strict parser that refuses the non-standard constants still reads the file.
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    loaded = json.loads(text, parse_constant=refuse)
    assert loaded == {"mean": math.inf, "low": -math.inf, "missing": None, "name": "inf", "nested": [1.5, math.inf]}
    assert isinstance(loaded["mean"], float) and loaded["name"] == "inf"  # strings stay strings
    assert pd.read_json(pd.io.common.StringIO(json.dumps({"x": [1.0]}).replace("1.0", "1e999")))["x"][0] == math.inf


def test_identical_run_is_written_as_numbers_and_ranks_first(tmp_path):
    itself = write_run(tmp_path / "itself", {"psnr": [math.inf, math.inf, math.inf]})
    model = write_run(tmp_path / "model", {"psnr": [31.0, 30.0, 29.0]})
    text = (itself / "summary.json").read_text()
    assert '"mean": 1e999' in text and '"inf"' not in text
    runs = load_runs([str(model), str(itself)])
    assert runs[1].metrics["psnr"]["mean"] == math.inf
    assert best_run(runs, "psnr").label == "itself"
    (table,) = build_leaderboard(runs, by="psnr").tables
    assert [entry.run.label for entry in table.entries] == ["itself", "model"]
    (table,) = build_leaderboard(runs).tables  # mean rank: psnr counts although one mean is infinite
    assert table.ranking_metrics == ["psnr"] and table.entries[0].run.label == "itself"


def test_old_run_folders_with_inf_strings_still_load(tmp_path):
    old = write_run(tmp_path / "old", {"psnr": [math.inf, 30.0]})
    summary = json.loads((old / "summary.json").read_text())
    summary["metrics"]["psnr"].update(mean="inf", ci_low="-inf", ci_high="inf")  # as version 0.1 wrote them
    summary["metrics"]["psnr"]["per_horizon"] = [{"horizon": 1, "mean": "inf", "ci_low": None, "ci_high": None, "n": 2}]
    (old / "summary.json").write_text(json.dumps(summary))
    loaded = load_summary(old)
    assert loaded["metrics"]["psnr"]["mean"] == math.inf and loaded["metrics"]["psnr"]["ci_low"] == -math.inf
    assert loaded["metrics"]["psnr"]["per_horizon"][0]["mean"] == math.inf
    assert best_run(load_runs([str(old)]), "psnr").label == "old"


@pytest.fixture
def captured(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_finish", lambda fig: figures.append(fig) or "data:")
    return figures


def _run(label: str, per_horizon: list[dict]) -> Run:
    summary = {"metrics": {"psnr": {"direction": "higher", "unit": "dB", "mean": per_horizon[0]["mean"],
                                    "per_horizon": per_horizon}}}
    return Run(label, summary, pd.DataFrame({"video": ["a", "b"], "status": ["ok", "ok"],
                                             "psnr": [per_horizon[0]["mean"]] * 2}))


def test_an_infinite_series_is_drawn_and_labelled(captured):
    itself = _run("itself", [{"horizon": h, "mean": math.inf, "ci_low": math.inf, "ci_high": math.inf, "n": 2}
                             for h in (1, 2, 3)])
    model = _run("model", [{"horizon": h, "mean": 30.0 - h, "ci_low": 29.0 - h, "ci_high": 31.0 - h, "n": 2}
                           for h in (1, 2, 3)])
    assert plots.horizon_curve([model, itself], "psnr") is not None
    ax = captured[-1].axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert len(lines["itself"]) == 3 and all(y > 30 for y in lines["itself"])  # above every finite value (30)
    assert any(text.get_text() == "∞ (identical frames)" for text in ax.texts)
    plots.clip_distribution([model, itself], "psnr")
    assert any(text.get_text() == "∞ (identical frames)" for text in captured[-1].axes[0].texts)


def test_horizon_curves_stop_where_clips_run_out_and_show_n(captured):
    points = [{"horizon": h, "mean": 30.0 - h, "ci_low": 29.0 - h, "ci_high": 31.0 - h, "n": 4 if h <= 3 else 1}
              for h in range(1, 7)]
    run = _run("model", points)
    plots.horizon_curve([run], "psnr")
    ax, counts = captured[-1].axes
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]  # horizons 4-6 hold one clip of four
    assert [patch.get_height() for patch in counts.patches] == [4, 4, 4]
    assert "up to the horizon all clips reach" in ax.get_title(loc="left")
    plots.horizon_curve([run], "psnr", tail=True)
    ax, counts = captured[-1].axes
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[1, 2, 3], [3, 4, 5, 6]]
    assert ax.get_lines()[1].get_linestyle() == "--" and len(counts.patches) == 6


def test_a_zero_one_metric_is_shown_as_counts(captured):
    frozen = Run("model", {"metrics": {"frozen": {"direction": "lower", "mean": 0.25}}},
                 pd.DataFrame({"video": list("abcd"), "status": ["ok"] * 4, "frozen": [0.0, 1.0, 0.0, 0.0]}))
    plots.clip_distribution([frozen], "frozen")
    ax = captured[-1].axes[0]
    assert [patch.get_width() for patch in ax.patches] == [0.25]  # one bar: the share flagged, no box plot
    assert [text.get_text() for text in ax.texts] == ["1 of 4 clips"]
