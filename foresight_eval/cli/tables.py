"""Command output as plain tables, written as a rich table, CSV, Markdown or JSON (``--format``).

A :class:`TextTable` holds plain-text cells (no rich markup), so every format shows the same text.
Rich tables fold long cells instead of cutting them: a p-value or a status is never shortened to ``0.…``.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from foresight_eval.cli.common import print_json

FORMATS = ("table", "csv", "json", "markdown")
STATUS_STYLE = {"pass": "green", "accepted": "yellow", "fail": "red", "missing": "red"}


@dataclass
class TextTable:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: tuple[str, ...] = ()  # columns aligned left; the rest (numbers) right
    status_column: str | None = None  # coloured by STATUS_STYLE in the rich table
    notes: list[str] = field(default_factory=list)  # lines printed below the table

    def add_row(self, *cells: str) -> None:
        self.rows.append([str(cell) for cell in cells])

    def rich(self) -> Table:
        """Column rules only, one space between columns; cells fold rather than being cut."""
        table = Table(title=escape(self.title), title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True,
                      pad_edge=False)
        for column in self.columns:
            table.add_column(escape(column), justify="left" if column in self.left else "right", overflow="fold")
        status = self.columns.index(self.status_column) if self.status_column in self.columns else None
        for row in self.rows:
            cells = [escape(cell) for cell in row]
            if status is not None:
                word = row[status].split()[0] if row[status] else ""
                # An informational entry that missed is shown dim: it cannot fail anything.
                informational = row[status].endswith("(info)") and word not in ("pass", "accepted")
                if word in STATUS_STYLE:
                    cells[status] = f"[{'dim' if informational else STATUS_STYLE[word]}]{cells[status]}[/]"
            table.add_row(*cells)
        return table

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"**{cell(self.title)}**", "", "| " + " | ".join(map(cell, self.columns)) + " |",
                 "|" + "|".join(":---" if c in self.left else "---:" for c in self.columns) + "|"]
        lines += ["| " + " | ".join(map(cell, row)) + " |" for row in self.rows]
        lines += [""] + [f"- {cell(note)}" for note in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"


def csv_text(tables: Sequence[TextTable]) -> str:
    """One CSV: a ``table`` column (the title) before each table's own columns; tables with different
    columns get their own header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = None
    for table in tables:
        if table.columns != header:
            header = table.columns
            writer.writerow(["table", *header])
        writer.writerows([table.title, *row] for row in table.rows)
    return buffer.getvalue()


def emit(tables: Sequence[TextTable], output_format: str, console, json_payload: object = None) -> None:
    """Write ``tables`` in ``output_format``: rich tables (and their notes) on ``console``; CSV or Markdown
    on stdout; JSON (``json_payload``) on stdout. In the machine formats the notes go to stderr."""
    from foresight_eval.cli.common import stderr

    if output_format == "table":
        for table in tables:
            console.print(table.rich())
            for note in table.notes:
                console.print(escape(note), soft_wrap=True)
        return
    if output_format == "csv":
        click.echo(csv_text(tables), nl=False)
    elif output_format == "markdown":
        click.echo("\n".join(table.markdown() for table in tables), nl=False)
    else:
        print_json(json_payload)
    for table in tables:
        if output_format != "markdown":
            for note in table.notes:
                stderr.print(escape(note), soft_wrap=True)


def format_option(command: Callable) -> Callable:
    """``--format table|csv|json|markdown``, and ``--json`` kept as the short form of ``--format json``;
    the command receives ``output_format``."""

    @click.option("--format", "output_format", type=click.Choice(FORMATS), default=None,
                  help="Output: a table for people (default), or csv, json or markdown on stdout for programs "
                       "and pull-request comments.")
    @click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
    @functools.wraps(command)
    def wrapper(*args, output_format: str | None, as_json: bool, **kwargs):
        if as_json and output_format not in (None, "json"):
            raise click.UsageError(f"--json and --format {output_format} disagree: choose one")
        return command(*args, output_format="json" if as_json else output_format or "table", **kwargs)

    return wrapper
