"""`leaderboard`: ranking, "not significantly different" tiers, refusing or separating runs scored
differently, and the HTML / Markdown / CSV outputs."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from foresight_eval.errors import UsageError
from foresight_eval.report import build_leaderboard, leaderboard, load_runs
from tests.report_runs import METRICS, escaped, make_report_runs, parse_page


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_report_runs(tmp_path_factory.mktemp("leaderboard_runs"))


def ranked(table):
    return [(entry.rank, entry.tier, entry.run.label) for entry in table.entries]


def test_rank_by_metric_with_tiers(runs):
    board = build_leaderboard(load_runs([str(runs.strong), str(runs.mild), str(runs.mild_again)]), by="psnr")
    (table,) = board.tables
    # Identical numbers share rank and tier; the strong noise run is significantly worse on every clip.
    assert ranked(table) == [(1, 1, "mild"), (1, 1, "mild_again"), (3, 2, "strong")]
    assert table.ranking_metrics == ["psnr"] and table.metrics == list(METRICS)


def test_rank_by_mean_rank(runs):
    (table,) = build_leaderboard(load_runs([str(runs.strong), str(runs.mild)])).tables
    assert ranked(table) == [(1, 1, "mild"), (2, 2, "strong")]
    assert [entry.mean_rank for entry in table.entries] == [1.0, 2.0]
    assert table.ranking_metrics == list(METRICS)


def test_mixed_parameters_are_refused(runs):
    with pytest.raises(UsageError, match=r"psnr\.params\.data_range: 1\.0 \(mild\), 2\.0 \(other_range\)"):
        build_leaderboard(load_runs([str(runs.mild), str(runs.other_range)]))
    result = CliRunner().invoke(main, ["leaderboard", str(runs.mild), str(runs.other_range), "-o", "unused"])
    assert result.exit_code == 2 and "--split" in result.output


def test_split_puts_mixed_runs_in_separate_tables_with_the_reason(runs, tmp_path):
    board = leaderboard([str(runs.mild), str(runs.other_range), str(runs.strong), str(runs.fewer_clips)],
                        tmp_path, split=True)
    assert [[entry.run.label for entry in table.entries] for table in board.tables] == [
        ["mild", "strong"], ["other_range"], ["fewer_clips"]]
    assert board.tables[0].separated_because == []
    assert any("data_range" in reason for reason in board.tables[1].separated_because)
    assert any(reason.startswith("clip sets differ: 6 only in mild") for reason in board.tables[2].separated_because)
    page = (tmp_path / "leaderboard.html").read_text(encoding="utf-8")
    assert "Kept apart from table 1 because" in page and "data_range" in page
    markdown = (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    assert markdown.count("## Table") == 3 and "clip sets differ" in markdown


def test_outputs(runs, tmp_path):
    label = "<i>mild</i>"
    leaderboard([f"{label}={runs.mild}", str(runs.strong)], tmp_path, by="mae", title="Board <1>")
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(csv["run"]) == [label, "strong"] and list(csv["rank"]) == [1, 2] and list(csv["tier"]) == [1, 2]
    assert {"mae", "mae_ci_low", "mae_ci_high", "psnr"} <= set(csv.columns)
    assert (csv["mae_ci_low"] <= csv["mae"]).all() and (csv["mae"] <= csv["mae_ci_high"]).all()
    page = (tmp_path / "leaderboard.html").read_text(encoding="utf-8")
    parsed = parse_page(page)
    assert "i" not in [tag for tag, _ in parsed.tags] and escaped(label) in page and "Board &lt;1&gt;" in page
    assert sum(1 for tag, _ in parsed.tags if tag == "tr") == 3
    markdown = (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    assert "| 1 | 1 | &lt;i&gt;mild&lt;/i&gt; |" in markdown


def test_by_unknown_metric(runs, tmp_path):
    result = CliRunner().invoke(main, ["leaderboard", str(runs.mild), "-o", str(tmp_path), "--by", "lpips"])
    assert result.exit_code == 2 and "--by lpips: not scored in run(s) mild" in result.output


def test_means_equal_within_float_noise_share_a_rank(tmp_path):
    from tests.fake_runs import write_run

    values = [30.0 + 0.1 * i for i in range(8)]
    a = write_run(tmp_path / "a", {"psnr": values})
    b = write_run(tmp_path / "b", {"psnr": [v + 1e-13 for v in values]})  # the same run, summed in another order
    c = write_run(tmp_path / "c", {"psnr": [v - 1.0 for v in values]})
    (table,) = build_leaderboard(load_runs([str(c), str(b), str(a)]), by="psnr").tables
    assert [(entry.rank, entry.run.label) for entry in table.entries][2] == (3, "c")
    assert {entry.rank for entry in table.entries[:2]} == {1}
    (table,) = build_leaderboard(load_runs([str(c), str(b), str(a)])).tables
    assert [entry.rank for entry in table.entries] == [1, 1, 3]
