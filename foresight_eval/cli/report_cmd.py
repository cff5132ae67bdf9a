"""`foresight-eval report` and `foresight-eval leaderboard`: parse options, call
:func:`foresight_eval.report.report` / :func:`foresight_eval.report.leaderboard`, print where the files went."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import click
from rich.markup import escape

from foresight_eval.cli.common import EXIT_FAILED, print_json, stderr, stdout
from foresight_eval.report import leaderboard, report
from foresight_eval.report.leaderboard import leaderboard_frame
from foresight_eval.io.files import json_safe


@click.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN ...]")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and report.md (created if needed).")
@click.option("--title", help="Page title (default: the output folder's name).")
@click.option("--gates", "gate_specs", multiple=True, metavar="NAME_OR_FILE",
              help="Show each run's status against a gate preset or gate file, repeatable.")
@click.option("--worst", "worst_k", type=click.IntRange(min=0), default=3, show_default=True,
              help="Worst clips shown per run and metric as frame strips (0: none).")
@click.option("--horizons", type=click.IntRange(min=1), default=3, show_default=True,
              help="Horizons shown per frame strip: the first, the last and evenly spaced ones between.")
@click.option("--inputs-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that relative clip paths recorded in the runs start from (default: the working directory).")
@click.option("--horizon-tail", is_flag=True,
              help="Draw horizon curves past the last horizon every clip reaches (dashed: fewer clips there).")
@click.option("--strict", is_flag=True, help="Exit 1 when a frame strip could not be shown (a clip file not found).")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def report_command(runs, out_dir, title, gate_specs, worst_k, horizons, inputs_root, horizon_tail, strict,
                   as_json) -> None:
    """Write a comparison report of RUN folders (each DIR or LABEL=DIR; the label names the run,
    by default the folder's name): one self-contained HTML page and a Markdown twin.

    The page holds the summary table (best mean per metric highlighted, CIs, direction arrows), gate
    badges with --gates, metric-versus-horizon curves, per-clip distributions, the worst clips as
    reference/prediction frame strips, and each run's manifest. Every figure is embedded, so the file
    opens offline and can be attached to a CI job.
    """
    with stderr.status("writing report") if stderr.is_terminal else nullcontext():
        files = report(runs, out_dir, title=title, gates=gate_specs, worst_k=worst_k, horizons=horizons,
                       inputs_root=inputs_root, horizon_tail=horizon_tail)
    for problem in files.strip_problems:  # loud: a report without its frames is easy to miss
        stderr.print(f"[yellow]frame strip incomplete[/] {escape(problem)}", soft_wrap=True)
    if files.strip_problems:
        stderr.print("[yellow]run the report from the folder the runs were scored in, or give --inputs-root[/]")
    if as_json:
        print_json({"html": str(files.html), "markdown": str(files.markdown),
                    "strip_problems": list(files.strip_problems)})
    else:
        stdout.print(f"report: {escape(str(files.html))}\nmarkdown: {escape(str(files.markdown))}")
    if strict and files.strip_problems:
        sys.exit(EXIT_FAILED)


@click.command("leaderboard")
@click.argument("runs", nargs=-1, required=True, metavar="RUN_DIR [RUN_DIR ...]")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for leaderboard.html, leaderboard.md and leaderboard.csv.")
@click.option("--by", metavar="METRIC",
              help="Rank by this metric's mean (default: the mean rank over every metric all runs scored).")
@click.option("--split", is_flag=True,
              help="Put runs scored differently (metric parameters, scoring options, clip sets, reference files) "
                   "in separate tables, with the reason shown, instead of refusing them.")
@click.option("--title", default="Leaderboard", show_default=True, help="Page title.")
@click.option("--json", "as_json", is_flag=True, help="Print the ranked rows as JSON.")
def leaderboard_command(runs, out_dir, by, split, title, as_json) -> None:
    """Rank RUN_DIR folders (each DIR or LABEL=DIR) and write the leaderboard as HTML, Markdown and CSV.

    Runs are ranked by --by METRIC, or by their mean rank over metrics. Runs whose difference is not
    significant (exact paired test over the clips both scored, Holm-corrected) share a tier. Runs scored with different
    metric parameters, scoring options, clip sets or reference files are refused, or kept in separate
    tables with --split: their numbers do not measure the same thing.
    """
    board = leaderboard(runs, out_dir, by=by, split=split, title=title)
    if as_json:
        print_json(json_safe(leaderboard_frame(board).to_dict(orient="records")))
        return
    for number, table in enumerate(board.tables, start=1):
        if table.separated_because:
            stdout.print(f"[yellow]table {number}[/], scored differently: {escape('; '.join(table.separated_because))}",
                         soft_wrap=True)
        for entry in table.entries:
            stdout.print(f"{entry.rank:>3}  tier {entry.tier}  {escape(entry.run.label)}")
    stdout.print(f"leaderboard: {escape(str(Path(out_dir)))}/leaderboard.{{html,md,csv}}")

