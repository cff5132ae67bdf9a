"""`foresight-eval check`: parse options, run :func:`foresight_eval.check.check`, print the verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from foresight_eval.check import CheckResult, check, github_annotations, junit_xml
from foresight_eval.cli.common import EXIT_FAILED, EXIT_OK, split_names, stderr, stdout
from foresight_eval.cli.compare_cmd import family_sentence, paired_test_options, print_parameter_differences
from foresight_eval.cli.tables import STATUS_STYLE, TextTable, emit, format_option
from foresight_eval.formatting import decimals_for, estimate, fixed, p_cell
from foresight_eval.compare import RegressionReport, parse_tolerances
from foresight_eval.gates import GateReport, preset_names
from foresight_eval.io.files import write_atomic

OPERATORS = {"higher": "≥", "lower": "≤", "target": "|x − target| ≤"}


def _status(status: str, required: bool = True) -> str:
    if required:
        return f"[{STATUS_STYLE[status]}]{status}[/]"
    return f"[{STATUS_STYLE[status] if status in ('pass', 'accepted') else 'dim'}]{status}[/] (info)"


def render_gates(report: GateReport) -> TextTable:
    table = TextTable(f"gates {report.gate_set}: {report.decision}", ["gate", "metric", "value", "needs", "status"],
                      left=("gate", "metric", "status"), status_column="status")
    for entry in report.entries:
        tolerance = f" (−{entry.tolerance:.1%})" if entry.tolerance else ""
        table.add_row(entry.gate, entry.metric, fixed(entry.value, 4),
                      f"{OPERATORS[entry.direction]} {entry.threshold:.4g}{tolerance}",
                      entry.status if entry.required else f"{entry.status} (info)")
        if entry.note:
            table.notes.append(f"  {entry.gate} {entry.metric}: {entry.note}")
    return table


def render_regression(report: RegressionReport) -> TextTable:
    family = sum(entry.comparison.p_value is not None for entry in report.entries)
    table = TextTable(
        f"regression vs baseline {report.baseline}: {report.decision} "
        f"(fails when worse beyond the tolerance and p adj. < {report.alpha:g})",
        ["metric", "baseline", "run", "diff [95% CI]", "p", "p adj.", "p min", "n", "detectable", "status"],
        left=("metric", "status"), status_column="status",
        notes=[family_sentence(report.test, report.correction, family, report.alpha),
               "detectable: the smallest worsening this n and spread would catch 80% of the time "
               "(inf: this n cannot reach significance)"])
    for entry in report.entries:
        paired = entry.comparison
        places = decimals_for(paired.ci_low, paired.ci_high)
        diff, ci = estimate(paired.diff, paired.ci_low, paired.ci_high, signed=True)
        table.add_row(entry.metric, fixed(paired.mean_a, places), fixed(paired.mean_b, places),
                      diff if paired.ci_low is None else f"{diff} {ci}", p_cell(paired.p_value),
                      p_cell(paired.p_adjusted), p_cell(paired.p_min), str(paired.n), fixed(paired.mde, places),
                      entry.status)
        table.notes.append(f"  {entry.metric}: {entry.note} (tolerance {entry.tolerance})")
    return table


def print_result(result: CheckResult, console, output_format: str = "table") -> None:
    tables = [render_gates(report) for report in result.gate_reports]
    if result.regression is not None:
        print_parameter_differences(result.regression.parameter_differences, console)
        tables.append(render_regression(result.regression))
    emit(tables, output_format, console, result.to_dict())
    if output_format == "table":
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
@format_option
def check_command(run, gates, baseline, max_regression, metric_names, test, correction, alpha, bootstrap, force,
                  junit_file, github, output_format) -> None:
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
    if github and output_format != "table":
        raise click.UsageError(f"--github and --format {output_format} both write to stdout: choose one")
    default, per_metric = parse_tolerances(max_regression)
    result = check(run, gates, baseline, default, per_metric, split_names(metric_names),
                   test=test, alpha=alpha, bootstrap=bootstrap, force=force, correction=correction)
    print_result(result, stderr if github else stdout if output_format == "table" else stderr, output_format)
    if junit_file is not None:
        write_atomic(junit_file, junit_xml(result))
    if github:
        for line in github_annotations(result):
            click.echo(line)
    sys.exit(EXIT_FAILED if result.decision == "fail" else EXIT_OK)
