"""The results schema: one run's per-frame, per-video and summary results, and the run folder on disk.

A run folder holds ``summary.json`` (aggregates with CIs, each metric's definition, the manifest),
``per_video.csv`` (one row per clip pair, error rows included) and ``per_frame.csv``
(video, horizon, frame, metric, value). Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foresight_eval.io.files import csv_quoting, json_safe, write_atomic, write_json_atomic
from foresight_eval.options import current_option_names
from foresight_eval.stats import BootstrapConfig, means_with_ci

SCHEMA = "foresight-eval/run/v1"
SUMMARY_FILE, PER_VIDEO_FILE, PER_FRAME_FILE = "summary.json", "per_video.csv", "per_frame.csv"


@dataclass
class PairResult:
    video: str
    pred: str
    ref: str
    status: str = "ok"  # "ok" or "error"
    error: str | None = None
    frames: int = 0  # frames scored (after the context frames)
    values: dict[str, float] = field(default_factory=dict)
    # metric -> [(horizon, frame index, value)]
    per_frame: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)
    # set-granular metric -> this clip's contribution to the run-level value (see Metric.compute_set)
    set_parts: dict[str, Any] = field(default_factory=dict)
    # SHA-256 of the pair's input files: {"pred": {relative path: hash}, "ref": {...}}
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    seed: str = ""  # the prediction set of a seeded study (foresight_eval.study); "" for a single set
    # frame rate, duration and size of the clips (foresight_eval.timing.MEDIA_COLUMNS)
    media: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# Terminal colour and cursor codes (CSI and OSC sequences) that library error texts may carry.
_ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def fail_pair(result: PairResult, reason: str) -> None:
    """Turn ``result`` into an error row: the reason, and no values."""
    result.status, result.error = "error", _ANSI_ESCAPE.sub("", reason)
    result.values, result.per_frame, result.set_parts, result.frames = {}, {}, {}, 0


@dataclass
class MetricSummary:
    name: str
    definition: dict[str, Any]
    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int
    per_horizon: list[dict[str, Any]] = field(default_factory=list)
    # Run-level figures of the metric (set-granular metrics: the value itself, e.g. COCO mAP per category).
    set_values: dict[str, Any] | None = None
    # Study figures written beside the headline: "by_category", "seeds" (see foresight_eval.study).
    breakdown: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return self.definition["direction"]


@dataclass
class RunResult:
    pairs: list[PairResult]
    metrics: dict[str, MetricSummary]
    skipped_metrics: dict[str, str] = field(default_factory=dict)
    unmatched_preds: list[str] = field(default_factory=list)
    unmatched_refs: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None  # the compatibility profile it was scored under (Profile.record())
    study: dict[str, Any] = field(default_factory=dict)  # subset, seeds, categories, timing (foresight_eval.study)

    @property
    def failed(self) -> list[PairResult]:
        return [pair for pair in self.pairs if not pair.ok]

    def summary_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "schema": SCHEMA,
                "metrics": {
                    name: {
                        **summary.definition,
                        "mean": summary.mean,
                        "ci_low": summary.ci_low,
                        "ci_high": summary.ci_high,
                        "n": summary.n,
                        "per_horizon": summary.per_horizon,
                        **({"set": summary.set_values} if summary.set_values is not None else {}),
                        **summary.breakdown,
                    }
                    for name, summary in self.metrics.items()
                },
                "skipped_metrics": self.skipped_metrics,
                "videos": {
                    "total": len(self.pairs),
                    "ok": len(self.pairs) - len(self.failed),
                    "error": len(self.failed),
                    "errors": {pair.video: pair.error for pair in self.failed},
                },
                "unmatched": {"predictions": self.unmatched_preds, "references": self.unmatched_refs},
                "options": self.options,
                "profile": self.profile,
                "bootstrap": self.bootstrap,
                "extra": self.extra,
                "manifest": self.manifest,
                **({"study": self.study} if self.study else {}),
            }
        )

    def write(self, run_dir: Path) -> Path:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        names = list(self.metrics)
        # A seeded study adds a seed column; clips with a known frame rate add their media columns.
        seed = ["seed"] if any(p.seed for p in self.pairs) else []
        labels = self.study.get("categories", {}).get("labels")  # a categorised run: a category column
        category = ["category"] if labels else []
        media = list(dict.fromkeys(key for p in self.pairs for key in p.media))
        write_atomic(run_dir / PER_VIDEO_FILE, _csv(
            ["video", *seed, *category, "status", "error", "frames", "pred", "ref", *media, *names],
            ([p.video, *([p.seed] if seed else []), *([";".join(labels.get(p.video, []))] if labels else []),
              p.status, p.error or "", p.frames, p.pred, p.ref,
              *(_media_cell(p.media.get(k)) for k in media), *(_cell(p.values.get(n)) for n in names)]
             for p in self.pairs),
        ))
        write_atomic(run_dir / PER_FRAME_FILE, _per_frame_csv(self.pairs, seeded=bool(seed)))
        # The summary goes last: its presence marks a complete run folder.
        write_json_atomic(run_dir / SUMMARY_FILE, self.summary_dict())
        return run_dir


def summarize(
    pairs: list[PairResult],
    definitions: dict[str, dict[str, Any]],
    bootstrap: BootstrapConfig,
    set_values: dict[str, dict[str, Any] | None] | None = None,
) -> dict[str, MetricSummary]:
    """Mean and bootstrap CI over videos (successful pairs only) per metric, overall and per horizon.

    A set-granular metric's headline is its run-level ``value``; it has no CI over videos. Every metric's
    samples (its values over videos, and at each horizon) go to one :func:`means_with_ci` call: one SciPy
    bootstrap per sample length for the whole run, not two per metric (the same resamples)."""
    summaries = {}
    ok_pairs = [pair for pair in pairs if pair.ok]
    set_values = set_values or {}
    samples: list[list[float]] = []
    frame_metrics: list[tuple[str, list[int], int]] = []  # name, its horizons, index of its first sample
    for name, definition in definitions.items():
        if definition["granularity"] == "set":
            figures = set_values.get(name) or {}
            # A set metric's own CI (e.g. FVD's bootstrap over clips on both sides), when it gives one, and
            # its per-horizon values when they come as the horizon curves' rows (horizon, mean, ci_low, ci_high, n).
            rows = figures.get("per_horizon") or []
            curve = rows if all("mean" in row for row in rows) else []
            summaries[name] = MetricSummary(name, definition, figures.get("value", math.nan), figures.get("ci_low"),
                                            figures.get("ci_high"), len(ok_pairs), curve, set_values=figures)
            continue
        by_horizon: dict[int, list[float]] = defaultdict(list)
        for pair in ok_pairs:
            for horizon, _, value in pair.per_frame.get(name, ()):
                by_horizon[horizon].append(value)
        horizons = sorted(by_horizon)
        frame_metrics.append((name, horizons, len(samples)))
        samples.append([pair.values[name] for pair in ok_pairs if name in pair.values])
        samples.extend(by_horizon[horizon] for horizon in horizons)
    estimates = means_with_ci(samples, bootstrap)
    for name, horizons, first in frame_metrics:
        estimate, by_horizon_estimates = estimates[first], estimates[first + 1:first + 1 + len(horizons)]
        per_horizon = [{"horizon": horizon, "mean": h.mean, "ci_low": h.ci_low, "ci_high": h.ci_high, "n": h.n}
                       for horizon, h in zip(horizons, by_horizon_estimates)]
        summaries[name] = MetricSummary(name, definitions[name], estimate.mean, estimate.ci_low, estimate.ci_high,
                                        estimate.n, per_horizon, set_values.get(name))
    return {name: summaries[name] for name in definitions}  # in the definitions' order


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return repr(float(value))


def _media_cell(value: Any) -> str:
    return "" if value is None else str(value)


def _csv_writers(buffer: io.StringIO) -> dict[int, Any]:
    """A csv writer into ``buffer`` for each quoting :func:`csv_quoting` may choose."""
    return {quoting: csv.writer(buffer, lineterminator="\n", quoting=quoting)
            for quoting in (csv.QUOTE_MINIMAL, csv.QUOTE_ALL)}


def _csv(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writers = _csv_writers(buffer)
    for row in (header, *rows):
        writers[csv_quoting(row)].writerow(row)
    return buffer.getvalue()


def _per_frame_csv(pairs: list[PairResult], *, seeded: bool) -> str:
    """``per_frame.csv``: video, [seed,] horizon, frame, metric, value; one row per frame of each clip and
    metric. Written a (clip, metric) block at a time: the block's text cells are those of every row, so its
    quoting is chosen once, and the csv module's ``writerows`` writes the rows. Twice as fast as row by row
    (256 clips x 48 frames x 15 metrics: 0.41-0.62 -> 0.26 s on two cores): after a multi-GPU run rank 0
    writes every rank's rows alone."""
    buffer = io.StringIO()
    writers = _csv_writers(buffer)
    header = ["video", *(["seed"] if seeded else []), "horizon", "frame", "metric", "value"]
    writers[csv.QUOTE_MINIMAL].writerow(header)
    for pair in pairs:
        text = (pair.video, pair.seed) if seeded else (pair.video,)
        for name, rows in pair.per_frame.items():
            if not rows:
                continue
            horizons, frames, values = zip(*rows)
            repeated = [itertools.repeat(cell) for cell in text]
            writers[csv_quoting((*text, name))].writerows(
                zip(*repeated, horizons, frames, itertools.repeat(name), map(_cell, values)))
    return buffer.getvalue()


def load_summary(run_dir: Path) -> dict[str, Any]:
    """The summary of a finished run folder (a folder without summary.json is not a finished run)."""
    path = Path(run_dir) / SUMMARY_FILE
    with open(path, encoding="utf-8") as handle:
        summary = json.load(handle)
    if summary.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {summary.get('schema')!r} is not {SCHEMA!r}")
    _numbers_from_strings(summary)
    if isinstance(summary.get("options"), dict):  # options renamed since the run was written
        summary["options"] = current_option_names(summary["options"])
    return summary


def _numbers_from_strings(summary: dict[str, Any]) -> None:
    """Run folders written before infinities were stored as numbers hold "inf" / "-inf" strings in the
    numeric fields of their metrics: read them as the floats they stand for."""
    for figures in summary.get("metrics", {}).values():
        for entry in [figures, *(figures.get("per_horizon") or [])]:
            for key in ("mean", "ci_low", "ci_high"):
                if isinstance(entry.get(key), str):
                    entry[key] = float(entry[key])
