"""`foresight-eval physics-iq`: parse options, run :func:`foresight_eval.iq_score.score_physics_iq`, print the score."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from foresight_eval.cli.common import (
    DEVICE_OPTION, EXIT_FAILED, EXIT_OK, config_file_option, frame_pairing_options, print_json, stderr, stdout,
)
from foresight_eval.formatting import fmt
from foresight_eval.cli.score_cmd import _run_config, print_notes, run_with_progress
from foresight_eval.config import PhysicsIQConfig
from foresight_eval.iq_score import RESULT_FILE
from foresight_eval.io.files import json_safe

_TERMS = {"spatial_iou": "spatial", "weighted_spatial_iou": "weighted", "spatiotemporal_iou": "spatiotemporal",
          "mse": "mse"}


def render_score(result: dict) -> Table:
    table = Table(title="Physics IQ Score (model terms / physical variance)", title_justify="left")
    for column in ("set", "score", "variance", "clips", *_TERMS.values()):
        table.add_column(column, justify="left" if column == "set" else "right")
    rows = [("all", result), *((escape(name), part) for name, part in result.get("categories", {}).items())]
    for name, part in rows:
        terms = (f"{fmt(part['terms'][t])} / {fmt(part['physical_variance'][t])}" for t in _TERMS)
        table.add_row(name, fmt(part["physics_iq_score"], 2), fmt(part["physical_variance_all_metrics"]),
                      str(part["clips"]), *terms)
    return table


@click.command("physics-iq")
@click.argument("preds", type=click.Path(exists=True, path_type=Path), required=False)
@click.argument("refs", type=click.Path(exists=True, path_type=Path), required=False)
@config_file_option("PREDS and REFS as preds and refs")
@click.option("--ref-take2", type=click.Path(exists=True, path_type=Path),
              help="A second real take of every reference clip (same relative names): the physical variance. Required.")
@click.option("--categories", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of clip -> scenario category ('clip' or 'generated_video_name' column, and 'category'), "
                   "e.g. Physics-IQ's descriptions.csv: adds a score per category.")
@click.option("--fps", type=float, default=None,
              help="Frame rate of the 5 s window for every clip (default: each reference clip's own; frame "
                   "folders and arrays: 30).")
@frame_pairing_options("Frames before the switch frame in every clip, not scored.")
@DEVICE_OPTION
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help=f"Write OUT/model and OUT/variance (run folders) and OUT/{RESULT_FILE}.")
@click.option("--json", "as_json", is_flag=True, help="Print the score as JSON on stdout (the table goes to stderr).")
def physics_iq_command(config_file, as_json, **given) -> None:
    """The Physics IQ Score of the predictions in PREDS against the references in REFS.

    Scores PREDS against REFS and --ref-take2 against REFS with the physics-iq profile's metrics
    (mp4v mask round trip, 1/4 resolution, first 5 s), then normalises the four metrics by the physical
    variance between the two real takes, as Physics-IQ's calculate_iq_score does: overall, and per
    category with --categories. Name each clip identically in the three folders.

    Exit status: 0 every pair scored, 1 some pair failed (the score leaves those clips out), 2 usage error.
    """
    config = _run_config(config_file, given, PhysicsIQConfig)
    out_dir = None if config.out is None else config.resolve(config.out)
    console = stderr if as_json else stdout
    result, model, variance = run_with_progress(_score, config)
    console.print(render_score(result))
    for run in (model, variance):
        print_notes(run, console)
    if result["missing"]:
        console.print(f"[yellow]left out of the score[/] ({len(result['missing'])}, not scored in both runs): "
                      f"{escape(', '.join(result['missing']))}", soft_wrap=True)
    if result.get("reason"):
        console.print(f"[yellow]no score[/]: {escape(result['reason'])}", soft_wrap=True)
    if result.get("uncategorised"):
        console.print(f"[yellow]uncategorised[/] ({len(result['uncategorised'])}): "
                      f"{escape(', '.join(result['uncategorised']))}", soft_wrap=True)
    if out_dir is not None:
        console.print(f"written: {escape(str(out_dir / RESULT_FILE))}")
    if as_json:
        print_json(json_safe(result))
    sys.exit(EXIT_FAILED if result["missing"] else EXIT_OK)


def _score(config: PhysicsIQConfig, *, on_start, **kwargs):
    totals = []

    def start(total: int) -> None:  # one progress bar over both runs: the model run's pairs, then the variance run's
        totals.append(total)
        on_start(sum(totals))

    return config.run(on_start=start, **kwargs)
