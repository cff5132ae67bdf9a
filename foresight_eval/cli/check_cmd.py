"""`foresight-eval check`: parse options, run :func:`foresight_eval.check.check`, print the verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from foresight_eval.check import CheckResult, check, github_annotations, junit_xml
from foresight_eval.cli.common import EXIT_FAILED, EXIT_OK, fmt, handle_errors, print_json, split_names, stderr, stdout
from foresight_eval.cli.compare_cmd import compact_table, diff_with_ci, paired_test_options, print_parameter_differences
from foresight_eval.compare import RegressionReport, parse_tolerances
from foresight_eval.gates import GateReport, preset_names
from foresight_eval.io.files import write_atomic

STATUS_STYLE = {"pass": "green", "accepted": "yellow", "fail": "red", "missing": "red"}
OPERATORS = {"higher": "≥", "lower": "≤"}


def _status(status: str, required: bool = True) -> str:
    if required:
        return f"[{STATUS_STYLE[status]}]{status}[/]"
    return f"[{STATUS_STYLE[status] if status in ('pass', 'accepted') else 'dim'}]{status}[/] (info)"


def render_gates(report: GateReport) -> Table:
    table = compact_table(f"gates {escape(report.gate_set)}: {_status(report.decision)}")
    for column in ("gate", "metric", "value", "needs", "status"):
        table.add_column(column, justify="right" if column in ("value", "needs") else "left", no_wrap=True)
    for entry in report.entries:
        tolerance = f" (−{entry.tolerance:.1%})" if entry.tolerance else ""
        table.add_row(escape(entry.gate), escape(entry.metric), fmt(entry.value),
                      f"{OPERATORS[entry.direction]} {entry.threshold:.4g}{tolerance}",
                      _status(entry.status, entry.required))
    return table


def render_regression(report: RegressionReport) -> Table:
    title = (f"regression vs baseline {escape(report.baseline)}: {_status(report.decision)} "
             f"(fails when worse beyond the tolerance and p < {report.alpha:g}, {report.test} test)")
    table = compact_table(title)
    for column in ("metric", "baseline", "run", "diff [95% CI]", "p", "n", "status"):
        table.add_column(column, justify="left" if column in ("metric", "status") else "right", no_wrap=True)
    for entry in report.entries:
        paired = entry.comparison
        table.add_row(escape(entry.metric), fmt(paired.mean_a), fmt(paired.mean_b),
                      diff_with_ci(paired.diff, paired.ci_low, paired.ci_high), fmt(paired.p_value, 3),
                      str(paired.n), _status(entry.status))
    return table


def print_result(result: CheckResult, console) -> None:
    for report in result.gate_reports:
        console.print(render_gates(report))
        for entry in report.entries:
            if entry.note:
                console.print(f"  {escape(entry.gate)} {escape(entry.metric)}: {escape(entry.note)}", soft_wrap=True)
    if result.regression is not None:
        print_parameter_differences(result.regression.parameter_differences, console)
        console.print(render_regression(result.regression))
        for entry in result.regression.entries:
            console.print(f"  {escape(entry.metric)}: {escape(entry.note)} (tolerance {escape(entry.tolerance)})",
                          soft_wrap=True)
    console.print(f"decision: {_status(result.decision)}")


@click.command("check")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--gates", "-g", "gates", multiple=True, metavar="PRESET|FILE",
              help=f"A gate preset or YAML gate file, repeatable. Presets: {', '.join(preset_names())}.")
@click.option("--baseline", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A run folder to check against: a metric fails when it got worse beyond --max-regression "
                   "and the paired difference over shared videos is significant.")
@click.option("--max-regression", "max_regression", multiple=True, metavar="[METRIC=]VALUE[%]",
              help="Allowed worsening against --baseline, repeatable: 1% (of the baseline's value, every metric), "
                   "psnr=0.5 (dB, one metric). Default 0: any significant worsening fails.")
@paired_test_options
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write JUnit XML: one test case per metric, failures for failing required entries.")
@click.option("--github", is_flag=True, help="Print GitHub Actions annotations (::error / ::warning) on stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON on stdout (the tables go to stderr).")
@handle_errors
def check_command(run, gates, baseline, max_regression, metric_names, test, alpha, bootstrap, force,
                  junit_file, github, as_json) -> None:
    """Check run folder RUN against gates and/or a baseline run.

    Each gate metric is pass (at or beyond its threshold), accepted (short of it by at most the gate's
    tolerance, a fraction of the threshold), fail, or missing (not in the run). Informational metrics
    never fail a gate. Values come from the run's metric means, or from run-level figures recorded
    with `score --extra NAME=VALUE`.

    Exit status: 0 every required metric passes or is accepted and nothing regressed, 1 otherwise,
    2 unusable input (no run folder, malformed gate file, runs scored with different parameters).
    """
    if max_regression and baseline is None:
        raise click.UsageError("--max-regression needs --baseline")
    if github and as_json:
        raise click.UsageError("--github and --json both write to stdout: choose one")
    default, per_metric = parse_tolerances(max_regression)
    result = check(run, gates, baseline, default, per_metric, split_names(metric_names),
                   test=test, alpha=alpha, bootstrap=bootstrap, force=force)
    print_result(result, stderr if as_json or github else stdout)
    if junit_file is not None:
        write_atomic(junit_file, junit_xml(result))
    if github:
        for line in github_annotations(result):
            click.echo(line)
    if as_json:
        print_json(result.to_dict())
    sys.exit(EXIT_FAILED if result.decision == "fail" else EXIT_OK)
