"""`foresight-eval compare`: parse options, run :func:`foresight_eval.compare.compare`, print the table."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from foresight_eval.cli.common import EXIT_OK, fmt, handle_errors, print_json, split_names, stderr, stdout
from foresight_eval.compare import DEFAULT_ALPHA, Comparison, compare
from foresight_eval.stats import PAIRED_TESTS, BootstrapConfig


def paired_test_options(command: Callable) -> Callable:
    """Options shared by `compare` and `check --baseline`: which test, its level, the bootstrap, --force."""

    @click.option("--metrics", "-m", "metric_names", metavar="NAMES",
                  help="Comma-separated metrics for the paired comparison (default: every metric the runs share).")
    @click.option("--test", type=click.Choice(PAIRED_TESTS), default="bootstrap", show_default=True,
                  help="p-value of the paired difference: seeded paired bootstrap, or SciPy's Wilcoxon "
                       "signed-rank test (the CI is the bootstrap's either way).")
    @click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULT_ALPHA,
                  show_default=True, help="A difference is significant when p < alpha.")
    @click.option("--bootstrap-resamples", type=click.IntRange(min=100), default=2000, show_default=True,
                  help="Resamples of the paired bootstrap.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the paired bootstrap.")
    @click.option("--force", is_flag=True,
                  help="Compare runs scored with different metric parameters or options anyway (they are listed).")
    @functools.wraps(command)
    def wrapper(*args, bootstrap_resamples: int, seed: int, **kwargs):
        return command(*args, bootstrap=BootstrapConfig(n_resamples=bootstrap_resamples, seed=seed), **kwargs)

    return wrapper


def print_parameter_differences(differences: list[str], console) -> None:
    for difference in differences:
        console.print(f"[yellow]parameters differ (--force)[/] {escape(difference)}", soft_wrap=True)


def compact_table(title: str) -> Table:
    """Column rules only, one space between columns: these tables fit 80 columns (CI logs)."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)


def diff_with_ci(diff: float | None, low: float | None, high: float | None) -> str:
    if diff is None:
        return "–"
    return f"{diff:+.3g}" + ("" if low is None else f" [{low:.3g}, {high:.3g}]")


def render_comparison(result: Comparison) -> list[Table]:
    """One table per pair of runs: B − A per metric; "wins" names the better run when p < alpha."""
    confidence = int(round(result.bootstrap["confidence"] * 100))
    tables = {}
    for entry in result.pairs:
        table = tables.get((entry.a, entry.b))
        if table is None:
            table = tables[entry.a, entry.b] = compact_table(
                f"A = {escape(entry.a)}, B = {escape(entry.b)}: paired difference over shared videos, "
                f"p from the {result.test} test, significant at p < {result.alpha:g}")
            for column in ("metric", "mean A", "mean B", f"B − A [{confidence}% CI]", "p", "n", "wins"):
                table.add_column(column, justify="left" if column in ("metric", "wins") else "right",
                                 no_wrap=column != "wins")
        winner = result.winner(entry)
        table.add_row(
            escape(entry.metric), fmt(entry.mean_a), fmt(entry.mean_b),
            diff_with_ci(entry.diff, entry.ci_low, entry.ci_high), fmt(entry.p_value, 3), str(entry.n),
            f"[green]{escape(winner)}[/]" if winner else ("–" if entry.p_value is None else "neither"),
        )
    return list(tables.values())


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@paired_test_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the comparison as JSON on stdout (the tables go to stderr).")
@handle_errors
def compare_command(runs, metric_names, test, alpha, bootstrap, force, as_json) -> None:
    """Compare run folders RUN_A RUN_B [RUN_C ...] metric by metric, every pair of runs.

    Videos pair by name (the video column of per_video.csv; scored in both runs). Per metric: the mean
    paired difference B − A with its seeded paired-bootstrap 95% CI, the p-value of "no difference"
    (--test bootstrap or wilcoxon), the number of shared videos, and which run wins (the better one by
    the metric's direction, when p < --alpha). Runs scored with different metric parameters or scoring
    options (context, frames, resize) are refused unless --force; the differences are listed.

    Exit status: 0 compared, 2 usage error (unreadable run, mismatched parameters).
    """
    result = compare(runs, split_names(metric_names), test=test, alpha=alpha, bootstrap=bootstrap, force=force)
    console = stderr if as_json else stdout
    print_parameter_differences(result.parameter_differences, console)
    for table in render_comparison(result):
        console.print(table)
    for run, lacking in result.unshared_metrics.items():
        console.print(f"[yellow]not compared[/] (only in {escape(run)}): {escape(', '.join(lacking))}", soft_wrap=True)
    for entry in result.pairs:
        if entry.note:
            console.print(f"[yellow]note[/] {escape(entry.metric)} {escape(entry.a)} vs {escape(entry.b)}: "
                          f"{escape(entry.note)}", soft_wrap=True)
    if as_json:
        print_json(result.to_dict())
    sys.exit(EXIT_OK)
