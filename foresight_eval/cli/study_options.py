"""`score`'s study options (seeds, categories, subsets, frame rate and duration) and its per-category view;
see :mod:`foresight_eval.study` and :mod:`foresight_eval.timing`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from foresight_eval.cli.tables import TextTable
from foresight_eval.formatting import estimate

FPS_MISMATCH_CHOICES = ("error", "resample-pred", "ignore")


def study_options(command):
    options = (
        click.option("--preds-seed", "preds_seeds", multiple=True, type=click.Path(exists=True, file_okay=False,
                     path_type=Path), metavar="DIR",
                     help="Another prediction set (seed) of the same model, repeatable: PREDS is the first seed. "
                          "Each clip's value is the mean over seeds; CIs are a two-level bootstrap (docs/study.md)."),
        click.option("--seeds", "seeds_folder", is_flag=True,
                     help="PREDS holds one folder per seed (e.g. preds/seed0, preds/seed1), scored as --preds-seed."),
        click.option("--categories", metavar="FILE|folder:N|regex:RE",
                     help="Clip labels: a CSV (video,category) or JSON file, folder:N (the N-th folder of the clip "
                          "key) or regex:RE on the key. Per-category means and CIs go to summary.json; "
                          "clips without a label form the 'unlabelled' group."),
        click.option("--by", type=click.Choice(["metric", "category"]), default="metric", show_default=True,
                     help="Terminal table: one row per metric, or per category and metric (needs --categories)."),
        click.option("--limit", type=int, help="Score only the first N clips (by key, after --include/--exclude); "
                                                "the run is marked as a subset."),
        click.option("--include", multiple=True, metavar="GLOB", help="Score only clip keys matching GLOB (repeatable)."),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Leave out clip keys matching GLOB (repeatable)."),
        click.option("--fps", type=float, help="Frame rate of frame folders and arrays without a <clip>.fps.json "
                                                "sidecar (videos carry their own)."),
        click.option("--fps-mismatch", type=click.Choice(FPS_MISMATCH_CHOICES), default="error", show_default=True,
                     help="Prediction and reference frame rates differ: error row, resample the prediction to the "
                          "reference's frame times (nearest frame by timestamp), or pair frames by index."),
        click.option("--horizon-seconds", type=float, metavar="S",
                     help="Score only the first S seconds after the context (at the reference's frame times)."),
    )
    for option in reversed(options):
        command = option(command)
    return command


def category_table(run) -> TextTable:
    """Category x metric, worst category first per metric (by the metric's direction)."""
    confidence = int(round(run.bootstrap.get("confidence", 0.95) * 100))
    table = TextTable("by category", ["metric", "category", "mean", f"{confidence}% CI", "n"],
                      left=("metric", "category"))
    for name, summary in run.metrics.items():
        for label, figures in worst_first(summary.breakdown.get("by_category", {}), summary.direction):
            table.add_row(name, label, *estimate(figures["mean"], figures["ci_low"], figures["ci_high"]),
                          str(figures["n"]))
    return table


def worst_first(by_category: dict[str, dict[str, Any]], direction: str) -> list[tuple[str, dict[str, Any]]]:
    """Categories ordered worst mean first; a category without a mean goes last."""
    def badness(item):
        mean = item[1].get("mean")
        mean = math.nan if mean is None else float(mean)
        return (math.isnan(mean), -mean if direction == "lower" else mean)

    return sorted(by_category.items(), key=badness)
