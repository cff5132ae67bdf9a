"""What reports and leaderboards show of a study (:mod:`foresight_eval.study`): whether a run scored only
a subset of its clips, its seeds, and its per-category means as a category x metric table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from foresight_eval.report.render import metric_cell, metric_header
from foresight_eval.runs import Run
from foresight_eval.report.runs import as_number


def subset_note(run: Run) -> str:
    """"subset: 20 of 311 clips (--limit 20)" for a subset run, else ""."""
    subset = run.summary.get("study", {}).get("subset") or {}
    if not subset.get("is_subset"):
        return ""
    how = [f"--limit {subset['limit']}"] if subset.get("limit") else []
    how += [f"--include {g}" for g in subset.get("include", [])] + [f"--exclude {g}" for g in subset.get("exclude", [])]
    return f"subset: {subset['selected']} of {subset['found']} clips" + (f" ({' '.join(how)})" if how else "")


def seeds_note(run: Run) -> str:
    names = run.summary.get("study", {}).get("seeds", {}).get("names") or []
    return f"{len(names)} seeds ({', '.join(names)}): clip values are means over seeds" if names else ""


def categories_of(runs: Sequence[Run], metric: str) -> list[str]:
    return list(dict.fromkeys(label for run in runs for label in run.metrics.get(metric, {}).get("by_category", {})))


def category_tables(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per metric with categories: rows are categories, worst first (by the first run that has them:
    its mean, in the metric's direction), cells each run's mean and CI over that category's clips."""
    tables = []
    for metric in dict.fromkeys(name for run in runs for name in run.metrics):
        labels = categories_of(runs, metric)
        if not labels:
            continue
        definition = next(run.metrics[metric] for run in runs if metric in run.metrics)
        first = next(run for run in runs if run.metrics.get(metric, {}).get("by_category"))
        rows = []
        for label in sorted(labels, key=lambda label: _badness(first, metric, label)):
            cells = [metric_cell((run.metrics.get(metric, {}).get("by_category") or {}).get(label)) for run in runs]
            n = [(run.metrics.get(metric, {}).get("by_category") or {}).get(label, {}).get("n") for run in runs]
            rows.append({"category": label, "cells": cells, "n": n})
        tables.append({**metric_header(metric, definition), "rows": rows})
    return tables


def _badness(run: Run, metric: str, label: str) -> tuple[bool, float]:
    figures = (run.metrics[metric].get("by_category") or {}).get(label) or {}
    mean = as_number(figures.get("mean"))
    if math.isnan(mean):
        return True, 0.0
    return False, -mean if run.metrics[metric].get("direction") == "lower" else mean


def category_columns(run: Run, metrics: Sequence[str]) -> dict[str, float]:
    """Leaderboard CSV columns: ``<metric>[<category>]`` -> the run's mean over that category's clips."""
    return {f"{metric}[{label}]": as_number(figures.get("mean"))
            for metric in metrics
            for label, figures in (run.metrics.get(metric, {}).get("by_category") or {}).items()}
