"""`foresight-eval compare`: parse options, run :func:`foresight_eval.compare.compare`, print the table."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich.markup import escape

from foresight_eval.cli.common import EXIT_OK, split_names, stderr, stdout
from foresight_eval.cli.tables import TextTable, emit, format_option
from foresight_eval.formatting import decimals_for, estimate, fixed, p_cell
from foresight_eval.compare import DEFAULT_ALPHA, Comparison, compare
from foresight_eval.stats import CORRECTIONS, DEFAULT_CORRECTION, DEFAULT_TEST, PAIRED_TESTS, BootstrapConfig


def paired_test_options(command: Callable) -> Callable:
    """Options shared by `compare` and `check --baseline`: which test, its level, the bootstrap, --force."""

    @click.option("--metrics", "-m", "metric_names", metavar="NAMES",
                  help="Comma-separated metrics for the paired comparison (default: every metric the runs share).")
    @click.option("--test", type=click.Choice(PAIRED_TESTS), default=DEFAULT_TEST, show_default=True,
                  help="p-value of the paired difference: exact sign-flip permutation test (valid at any n), "
                       "SciPy's Wilcoxon signed-rank test, or the paired bootstrap (too small below 20 videos). "
                       "The CI is the bootstrap's either way.")
    @click.option("--correction", type=click.Choice(CORRECTIONS), default=DEFAULT_CORRECTION, show_default=True,
                  help="Multiple-comparison correction over every test of the command: Holm (family-wise "
                       "error), bh (Benjamini-Hochberg, false discovery rate) or none. JSON keeps both p-values.")
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


CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}


def family_sentence(test: str, correction: str, family: int, alpha: float) -> str:
    """How significance was decided, stated under every table that uses it."""
    corrected = ("uncorrected" if correction == "none"
                 else f"{CORRECTION_NAMES[correction]}-corrected over {family} tests")
    return (f"p: {test} test (paired over shared videos), {corrected}; p adj. decides at < {alpha:g}; "
            f"p min: the smallest p this n allows")


def render_comparison(result: Comparison) -> list[TextTable]:
    """One table per pair of runs: B − A per metric; "wins" names the better run when p adj. < alpha."""
    confidence = int(round(result.bootstrap["confidence"] * 100))
    family = sum(entry.p_value is not None for entry in result.pairs)
    tables: dict[tuple[str, str], TextTable] = {}
    for entry in result.pairs:
        table = tables.get((entry.a, entry.b))
        if table is None:
            table = tables[entry.a, entry.b] = TextTable(
                f"A = {entry.a}, B = {entry.b}: paired difference over shared videos",
                ["metric", "mean A", "mean B", f"B − A [{confidence}% CI]", "p", "p adj.", "p min", "n", "wins"],
                left=("metric", "wins"),
                notes=[family_sentence(result.test, result.correction, family, result.alpha)])
        winner = result.winner(entry)
        places = decimals_for(entry.ci_low, entry.ci_high)
        diff, ci = estimate(entry.diff, entry.ci_low, entry.ci_high, signed=True)
        table.add_row(entry.metric, fixed(entry.mean_a, places), fixed(entry.mean_b, places),
                      diff if entry.ci_low is None else f"{diff} {ci}", p_cell(entry.p_value),
                      p_cell(entry.p_adjusted), p_cell(entry.p_min), str(entry.n),
                      winner or ("–" if entry.p_value is None else "neither"))
    return list(tables.values())


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@paired_test_options
@format_option
def compare_command(runs, metric_names, test, correction, alpha, bootstrap, force, output_format) -> None:
    """Compare run folders RUN_A RUN_B [RUN_C ...] metric by metric, every pair of runs.

    Videos pair by name (the video column of per_video.csv; scored in both runs). Per metric: the mean
    paired difference B − A with its seeded paired-bootstrap 95% CI, the p-value of "no difference"
    (--test permutation, wilcoxon or bootstrap), that p corrected over every test of the comparison
    (--correction), the smallest p the test can reach with this many videos, the number of shared
    videos, and which run wins (the better one by the metric's direction, or the one closer to its
    target, when the corrected p < --alpha). Runs scored with different metric parameters or scoring
    options (context, frame_mismatch, resize) are refused unless --force; the differences are listed.

    Exit status: 0 compared, 2 usage error (unreadable run, mismatched parameters).
    """
    result = compare(runs, split_names(metric_names), test=test, alpha=alpha, bootstrap=bootstrap, force=force,
                     correction=correction)
    console = stdout if output_format == "table" else stderr
    print_parameter_differences(result.parameter_differences, console)
    emit(render_comparison(result), output_format, console, result.to_dict())
    for run, lacking in result.unshared_metrics.items():
        console.print(f"[yellow]not compared[/] (only in {escape(run)}): {escape(', '.join(lacking))}", soft_wrap=True)
    for entry in result.pairs:
        if entry.note:
            console.print(f"[yellow]note[/] {escape(entry.metric)} {escape(entry.a)} vs {escape(entry.b)}: "
                          f"{escape(entry.note)}", soft_wrap=True)
    sys.exit(EXIT_OK)
