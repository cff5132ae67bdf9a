"""Leaderboards: runs ranked by one metric or by their mean rank over metrics, with "not significantly
different" tiers, split into separate tables when runs were not scored the same way.

Tiers: walking down the ranking, a run joins the current tier when it is not significantly different
(exact paired sign-flip test over shared clips, :mod:`foresight_eval.report.compare`) from the tier's
first run, and starts a new tier otherwise. Every pair of runs is tested on every ranking metric, and
the family of those tests is Holm-corrected, so more runs or metrics do not manufacture tiers. Ranked
by mean rank, two runs differ when any ranking metric differs. A metric with a target ranks by the
distance to it (:mod:`foresight_eval.targets`); +inf (PSNR of identical frames) ranks first.
Means equal within floating-point noise share a rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from foresight_eval.errors import UsageError, field_ref
from foresight_eval.io.files import csv_quoting, write_atomic
from foresight_eval.report.compare import all_metrics, best_run, incompatibilities, separations, shared_metrics
from foresight_eval.report.render import metric_cell, metric_header, render
from foresight_eval.runs import Run, load_runs
from foresight_eval.report.runs import as_number
from foresight_eval.report.study import categories_of, category_columns, subset_note
from foresight_eval.targets import badness

LEADERBOARD_FILES = ("leaderboard.html", "leaderboard.md", "leaderboard.csv")


@dataclass
class Entry:
    run: Run
    rank: int
    tier: int
    mean_rank: float | None  # only when ranked by mean rank


@dataclass
class Table:
    entries: list[Entry]
    metrics: list[str]  # columns: every metric any run of the table scored
    ranking_metrics: list[str]
    separated_because: list[str]  # empty for the first table

    @property
    def best(self) -> dict[str, Run]:
        """Metric -> the run with the best mean on it."""
        runs = [entry.run for entry in self.entries]
        return {metric: best for metric in self.metrics if (best := best_run(runs, metric)) is not None}

    @property
    def headers(self) -> list[dict[str, str]]:
        runs = [entry.run for entry in self.entries]
        return [metric_header(m, next(run.metrics[m] for run in runs if m in run.metrics)) for m in self.metrics]


@dataclass
class Leaderboard:
    title: str
    by: str | None
    tables: list[Table]


def build_leaderboard(runs: Sequence[Run], by: str | None = None, split: bool = False,
                      title: str = "Leaderboard") -> Leaderboard:
    """Rank ``runs``; runs scored differently from the first are refused, unless ``split`` puts them in
    tables of their own."""
    groups = _compatible_groups(runs)
    if len(groups) > 1 and not split:
        reasons = "; ".join(reason for _, because in groups[1:] for reason in because)
        raise UsageError(f"these runs were not scored the same way and cannot be ranked together: {reasons}. "
                         f"Rank each group separately, or pass --split for one table per group")
    return Leaderboard(title, by, [_rank(members, by, because) for members, because in groups])


def leaderboard(run_specs: Sequence[str], out_dir: Path, by: str | None = None, split: bool = False,
                title: str = "Leaderboard") -> Leaderboard:
    """Load run folders (``DIR`` or ``LABEL=DIR``), rank them, and write leaderboard.{html,md,csv} to ``out_dir``."""
    board = build_leaderboard(load_runs(run_specs), by=by, split=split, title=title)
    write_leaderboard(board, Path(out_dir))
    return board


def write_leaderboard(board: Leaderboard, out_dir: Path) -> list[Path]:
    html, markdown, csv = (Path(out_dir) / name for name in LEADERBOARD_FILES)
    context = {"board": board, "title": board.title, "cell": metric_cell, "subset_note": subset_note,
               "categories_of": categories_of}
    write_atomic(html, render("leaderboard.html", **context))
    write_atomic(markdown, render("leaderboard.md", **context))
    frame = leaderboard_frame(board)
    quoting = csv_quoting([*frame.columns, *frame.to_numpy().ravel()])
    write_atomic(csv, frame.to_csv(index=False, lineterminator="\n", quoting=quoting))
    return [html, markdown, csv]


def leaderboard_frame(board: Leaderboard) -> pd.DataFrame:
    """One row per run: table, rank, tier, label, folder, mean rank, and mean / CI of every metric."""
    rows = []
    for number, table in enumerate(board.tables, start=1):
        for entry in table.entries:
            row = {"table": number, "rank": entry.rank, "tier": entry.tier, "run": entry.run.label,
                   "run_dir": str(entry.run.path), "subset": subset_note(entry.run), "mean_rank": entry.mean_rank}
            for metric in table.metrics:
                figures = entry.run.metrics.get(metric, {})
                for key in ("mean", "ci_low", "ci_high"):
                    row[metric if key == "mean" else f"{metric}_{key}"] = as_number(figures.get(key))
            row.update(category_columns(entry.run, table.metrics))
            rows.append(row)
    return pd.DataFrame(rows)


def _compatible_groups(runs: Sequence[Run]) -> list[tuple[list[Run], list[str]]]:
    """Runs grouped with the first run they can be ranked against; each later group carries why it is apart."""
    groups: list[tuple[list[Run], list[str]]] = []
    for run in runs:
        for members, _ in groups:
            if not incompatibilities(members[0], run):
                members.append(run)
                break
        else:
            groups.append(([run], incompatibilities(groups[0][0][0], run) if groups else []))
    return groups


def _rank(runs: list[Run], by: str | None, because: list[str]) -> Table:
    if by is not None:
        lacking = [run.label for run in runs if by not in run.metrics]
        if lacking:
            raise UsageError(f"{field_ref('by', by)}: not scored in run(s) {', '.join(lacking)}")
        if runs[0].metrics[by]["direction"] == "none":
            raise UsageError(f"{field_ref('by', by)}: a descriptive metric (no direction) ranks nothing")
        ranking = [by]
    else:
        # Every metric each run can be judged on (an infinite PSNR included; a NaN mean is not).
        ranking = [m for m in shared_metrics(runs) if not any(math.isnan(badness(run.metrics, m)) for run in runs)]
        if not ranking:
            raise UsageError(f"no metric has a mean every run can be ranked on; choose one with {field_ref('by')}")
    # Badness per run and metric: lower is better (see foresight_eval.targets.badness); NaN ranks last.
    scores = np.array([[_badness(run, metric) for metric in ranking] for run in runs]).reshape(len(runs), -1)
    if by is not None:
        keys, mean_ranks = scores[:, 0], None
    else:
        mean_ranks = np.mean([rankdata(_denoise(scores[:, j])) for j in range(len(ranking))], axis=0)
        keys = mean_ranks
    order = sorted(range(len(runs)), key=lambda i: keys[i])
    separated = separations([(runs[i], runs[j], m) for position, i in enumerate(order)
                             for j in order[position + 1:] for m in ranking])
    entries: list[Entry] = []
    leader, tier = order[0], 1
    for position, i in enumerate(order):
        tied = entries and _same(keys[i], keys[order[position - 1]])
        rank = entries[-1].rank if tied else position + 1
        if any(separated[runs[leader].label, runs[i].label, m] for m in ranking if leader != i):
            leader, tier = i, tier + 1
        entries.append(Entry(runs[i], rank, tier, None if mean_ranks is None else float(mean_ranks[i])))
    return Table(entries, all_metrics(runs), ranking, because)


def _same(a: float, b: float) -> bool:
    """Equal within floating-point noise (sums of the same values in another order differ in the last bits)."""
    return a == b or bool(np.isclose(a, b, rtol=1e-9, atol=1e-12))


def _denoise(values: np.ndarray) -> np.ndarray:
    """Values equal within floating-point noise made exactly equal, so that they share a rank."""
    result = values.copy()
    order = np.argsort(values, kind="stable")
    for previous, current in zip(order, order[1:]):
        if _same(result[previous], values[current]):
            result[current] = result[previous]
    return result


def _badness(run: Run, metric: str) -> float:
    value = badness(run.metrics, metric)
    return math.inf if math.isnan(value) else value

