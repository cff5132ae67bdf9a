"""`report`: one self-contained HTML page (every figure and frame embedded as a data: URI, styles
inline, no scripts, nothing fetched) and its Markdown twin, comparing one or more runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foresight_eval.io.files import write_atomic
from foresight_eval.report import plots
from foresight_eval.report.compare import all_metrics, best_run, incompatibilities, separations
from foresight_eval.report.render import metric_cell, metric_header, render
from foresight_eval.runs import Run, load_runs
from foresight_eval.report.strips import DIFF_GAIN, build_strips, strip_problems
from foresight_eval.report.study import category_tables, seeds_note, subset_note

REPORT_HTML, REPORT_MARKDOWN = "report.html", "report.md"


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    # Frame strips that could not be shown in full ("run clip: why"), also shown on the page.
    strip_problems: tuple[str, ...] = ()


def report(run_specs: Sequence[str], out_dir: Path, title: str | None = None, gates: Sequence[str] = (),
           worst_k: int = 3, horizons: int = 3, inputs_root: Path | None = None,
           horizon_tail: bool = False) -> ReportFiles:
    """Load run folders (``DIR`` or ``LABEL=DIR``), check them against ``gates`` (preset names or gate
    files), and write report.html and report.md into ``out_dir``."""
    runs = load_runs(run_specs)
    out_dir = Path(out_dir)
    context = build_report_context(runs, title or out_dir.resolve().name, evaluate_run_gates(runs, gates),
                                   worst_k=worst_k, horizons=horizons, inputs_root=inputs_root,
                                   horizon_tail=horizon_tail)
    files = ReportFiles(out_dir / REPORT_HTML, out_dir / REPORT_MARKDOWN, tuple(strip_problems(context["strips"])))
    write_atomic(files.html, render("report.html", **context))
    write_atomic(files.markdown, render("report.md", **context))
    return files


def evaluate_run_gates(runs: Sequence[Run], gate_specs: Sequence[str]) -> dict[str, list[tuple[str, Any]]]:
    """Run label -> [(gate spec, GateReport)] for every gate file or preset given."""
    if not gate_specs:
        return {}
    # Imported here: reports without gates must not depend on the gates package.
    from foresight_eval.gates import evaluate_gates, load_gates

    loaded = [(spec, load_gates(spec)) for spec in gate_specs]
    return {run.label: [(spec, evaluate_gates(run.path, gates)) for spec, gates in loaded] for run in runs}


def build_report_context(runs: Sequence[Run], title: str, gate_reports: dict[str, list[tuple[str, Any]]] | None = None,
                         worst_k: int = 3, horizons: int = 3, inputs_root: Path | None = None,
                         horizon_tail: bool = False) -> dict[str, Any]:
    """Everything the report templates print; ``gate_reports`` is :func:`evaluate_run_gates`' result;
    ``horizon_tail`` draws horizon curves past the last horizon every clip reaches (dashed)."""
    metrics = all_metrics(runs)
    return {
        "title": title,
        "runs": [_run_view(index, run) for index, run in enumerate(runs)],
        "gates": _gate_tables(runs, gate_reports or {}),
        "summary": _summary_rows(runs, metrics),
        "confidence": round(100 * float(runs[0].summary.get("bootstrap", {}).get("confidence", 0.95))),
        "warnings": [reason for run in runs[1:] for reason in incompatibilities(runs[0], run)],
        "figures": [{"metric": metric, "curve": plots.horizon_curve(runs, metric, tail=horizon_tail),
                     "distribution": plots.clip_distribution(runs, metric)} for metric in metrics],
        "strips": build_strips(runs, metrics, k=worst_k, horizons=horizons, inputs_root=inputs_root)
        if worst_k > 0 else [],
        "worst_k": worst_k,
        "diff_gain": DIFF_GAIN,
        "categories": category_tables(runs),
    }


def _gate_tables(runs: Sequence[Run], gate_reports: dict[str, list[tuple[str, Any]]]) -> list[dict[str, Any]]:
    """One table per gate file: a row per (gate, metric), a column per run with its value and status."""
    tables = []
    for spec in dict.fromkeys(spec for reports in gate_reports.values() for spec, _ in reports):
        results = {label: result for label, reports in gate_reports.items() for s, result in reports if s == spec}
        # A gate may judge one metric on several categories: (metric, category) names a row.
        entries = {(label, entry.gate, (entry.metric, getattr(entry, "category", None))): entry
                   for label, result in results.items() for entry in result.entries}
        rows = []
        for gate, key in dict.fromkeys((gate, key) for _, gate, key in entries):
            metric = key[0] if key[1] is None else f"{key[0]} [{key[1]}]"
            cells = [entries.get((run.label, gate, key)) for run in runs]
            first = next(cell for cell in cells if cell is not None)
            rows.append({"gate": gate, "metric": metric, "label": getattr(first, "label", metric),
                         "threshold": first.threshold, "direction": first.direction, "required": first.required,
                         "cells": cells})
        decisions = [results[run.label].decision if run.label in results else None for run in runs]
        tables.append({"spec": spec, "decisions": decisions, "rows": rows})
    return tables


def _summary_rows(runs: Sequence[Run], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """A row per metric; the best run's cell marked, and the runs not significantly different from it
    (paired test over shared clips, Holm-corrected over every run-versus-best test of the table) shaded."""
    best = {metric: best_run(runs, metric) for metric in metrics}
    separated = separations([(best[metric], run, metric) for metric in metrics for run in runs
                             if best[metric] is not None and run is not best[metric] and metric in run.metrics])
    rows = []
    for metric in metrics:
        definition = next(run.metrics[metric] for run in runs if metric in run.metrics)
        cells = []
        for run in runs:
            cell = metric_cell(run.metrics.get(metric))
            cell["best"] = run is best[metric]
            cell["tied"] = (run.label, metric) in {(b, m) for (_, b, m), apart in separated.items() if not apart}
            cells.append(cell)
        rows.append({**metric_header(metric, definition), "cells": cells})
    return rows


def _run_view(index: int, run: Run) -> dict[str, Any]:
    summary = run.summary
    return {
        "label": run.label,
        "path": str(run.path),
        "subset": subset_note(run),
        "seeds": seeds_note(run),
        "colour": plots.run_colour(index),
        "videos": summary.get("videos", {}),
        "options": summary.get("options", {}),
        "errors": summary.get("videos", {}).get("errors", {}),
        "skipped": summary.get("skipped_metrics", {}),
        "unmatched": {side: names for side, names in summary.get("unmatched", {}).items() if names},
        "extra": summary.get("extra", {}),
        "bootstrap": summary.get("bootstrap", {}),
        "manifest": summary.get("manifest", {}),
        "params": {name: figures.get("params", {}) for name, figures in run.metrics.items()},
        "has_problems": bool(summary.get("videos", {}).get("errors") or summary.get("skipped_metrics")
                             or any(summary.get("unmatched", {}).values())),
    }
