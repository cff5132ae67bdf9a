"""`foresight-eval metrics` and `foresight-eval weights`: what can run here, and the weight files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from foresight_eval.cli.common import print_json, stdout

WEIGHTS_DIR_OPTION = click.option(
    "--weights-dir", type=click.Path(file_okay=False, path_type=Path), envvar="FORESIGHT_WEIGHTS",
    help="Extra folder searched first for weight files (also $FORESIGHT_WEIGHTS).",
)


@click.command("metrics")
@WEIGHTS_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as JSON.")
def metrics_command(weights_dir: Path | None, as_json: bool) -> None:
    """List every registered metric (built-in and plugin), what it needs, and whether it can run here."""
    from foresight_eval.catalog import metric_catalog

    catalog = metric_catalog(weights_dir)
    if as_json:
        print_json(catalog)
        return
    table = Table()
    table.add_column("metric", no_wrap=True)
    for column in ("inputs", "better", "granularity", "needs", "available"):
        table.add_column(column)
    for name, entry in catalog["metrics"].items():
        status = "[green]yes[/]" if entry["available"] else "[yellow]no[/]"
        table.add_row(escape(name), entry["inputs"], entry["direction"], entry["granularity"],
                      ", ".join(entry["needs"]) or "–", status)
    stdout.print(table)
    for name, entry in catalog["metrics"].items():
        if not entry["available"]:
            stdout.print(f"[yellow]{escape(name)}[/]: {escape(entry['reason'])}", soft_wrap=True)
    for plugin, error in catalog["plugin_errors"].items():
        stdout.print(f"[red]plugin {escape(plugin)} failed to load[/]: {escape(error)}", soft_wrap=True)


@click.group("weights")
def weights_group() -> None:
    """Weight files the metrics need: where they are looked for, and fetching them when online."""


@weights_group.command("list")
@WEIGHTS_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def weights_list(weights_dir: Path | None, as_json: bool) -> None:
    """Show each weight file, the places searched, and whether it was found."""
    from foresight_eval.weights import weights_status

    rows = weights_status(weights_dir)
    if as_json:
        print_json([{**asdict(row), "found_at": str(row.found_at) if row.found_at else None} for row in rows])
        return
    table = Table()
    for column in ("name", "used by", "file", "status", "searched"):
        table.add_column(column)
    for row in rows:
        status = f"[green]found[/] {escape(str(row.found_at))}" if row.found_at else "[yellow]missing[/]"
        table.add_row(row.name, row.used_by, row.filename, status, escape("\n".join(row.searched)))
    stdout.print(table)


@weights_group.command("fetch")
@click.argument("name")
@WEIGHTS_DIR_OPTION
def weights_fetch(name: str, weights_dir: Path | None) -> None:
    """Download weight file NAME (see `weights list`) into its library's standard cache (converted files such
    as i3d-k400: into --weights-dir, else foresight-eval's cache). Needs network access."""
    from foresight_eval.weights import fetch_weights

    path = fetch_weights(name, weights_dir)
    stdout.print(f"{name}: {escape(str(path))}")
