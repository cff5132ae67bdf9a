"""Reading finished run folders back: the summary and the per-video values, for gates, comparisons, reports
and leaderboards (one :class:`Run` for all of them, and one rule for naming runs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import pandas as pd

from foresight_eval.errors import UsageError
from foresight_eval.results import PER_FRAME_FILE, PER_VIDEO_FILE, RunResult, load_summary

RunLike = Union[str, Path, dict, RunResult]


def read_summary(run: RunLike) -> dict[str, Any]:
    """The summary of a run folder, a RunResult, or an already-loaded summary dict."""
    if isinstance(run, dict):
        return run
    if isinstance(run, RunResult):
        return run.summary_dict()
    path = Path(run)
    try:
        return load_summary(path)
    except FileNotFoundError:
        raise UsageError(f"{path} is not a finished run folder (no summary.json)") from None
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise UsageError(f"{path}: unreadable summary.json: {exc}") from exc


@dataclass
class Run:
    """A finished run: its name (the folder's, or the label it was given), summary, per-video values (one
    row per clip pair) and the folder it was read from (None for a run still in memory)."""

    name: str
    summary: dict[str, Any]
    per_video: pd.DataFrame
    path: Path | None = field(default=None)

    @property
    def label(self) -> str:
        return self.name

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.summary.get("metrics", {})

    @cached_property
    def per_frame(self) -> pd.DataFrame:
        """Read only when asked for (the frame strips): it is the largest file of a run folder."""
        path = None if self.path is None else self.path / PER_FRAME_FILE
        if path is None or not path.exists():
            return pd.DataFrame(columns=["video", "horizon", "frame", "metric", "value"])
        try:
            return read_run_csv(path, text=("video", "metric"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: {exc}") from exc

    def video_values(self, metric: str) -> pd.Series:
        """Per-video values of ``metric`` over the successfully scored videos, indexed by video; a seeded
        run's (several rows per video) averaged over the video's seeds."""
        if metric not in self.per_video.columns:
            return pd.Series(dtype=float)
        rows = self.per_video[self.per_video["status"] == "ok"]
        values = pd.to_numeric(rows.set_index("video")[metric], errors="coerce").dropna()
        return values.groupby(level=0, sort=False).mean() if "seed" in rows.columns else values


def read_run_csv(path: Path, text: tuple[str, ...]) -> pd.DataFrame:
    """A run folder's CSV file: the ``text`` columns as strings, taken as written (a clip named "nan",
    "NA" or "null" keeps its name; an empty cell is missing), every other column as numbers ("nan",
    "inf" included)."""
    columns = pd.read_csv(path, nrows=0).columns
    missing = {column: [""] if column in text else ["", "nan", "NaN", "-nan"] for column in columns}
    return pd.read_csv(path, dtype={column: str for column in text if column in columns},
                       keep_default_na=False, na_values=missing)


def load_run(run: str | Path | RunResult, name: str | None = None) -> Run:
    if isinstance(run, RunResult):
        seed = ["seed"] if any(p.seed for p in run.pairs) else []
        rows = [{"video": p.video, "seed": p.seed, "status": p.status, **p.values} for p in run.pairs]
        return Run(name or "run", run.summary_dict(),
                   pd.DataFrame(rows, columns=["video", *seed, "status", *run.metrics]))
    path = Path(run)
    summary = read_summary(path)
    try:
        # Video names stay strings ("007" is not 7); metric cells are floats, "inf" included.
        per_video = read_run_csv(path / PER_VIDEO_FILE, text=("video", "seed", "category", "status", "error"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path / PER_VIDEO_FILE}: {exc}") from exc
    missing = {"video", "status"} - set(per_video.columns)
    if missing:
        raise UsageError(f"{path / PER_VIDEO_FILE}: no {', '.join(sorted(missing))} column")
    return Run(name or path.resolve().name, summary, per_video, path)


def parse_run_spec(spec: str) -> tuple[str, Path]:
    """``PATH`` (named by the folder) or ``LABEL=PATH``; an existing path containing '=' is a path."""
    label, sep, path = spec.partition("=")
    if not sep or Path(spec).exists():
        return Path(spec).resolve().name, Path(spec)
    if not label or not path:
        raise UsageError(f"expected RUN_DIR or LABEL=RUN_DIR, got {spec!r}")
    return label, Path(path)


def load_runs(runs: Sequence[str | Path | RunResult | Run]) -> list[Run]:
    """Several runs, each a folder (``PATH`` or ``LABEL=PATH``), a RunResult or a loaded Run. The one naming
    rule of every command that reads several runs (compare, check, report, leaderboard): names label
    columns, plots and verdicts, so they must differ; runs named alike (the same folder name under different
    parents, or two runs in memory) are numbered in the order given, ``1:run``, ``2:run``, and
    ``LABEL=PATH`` names a run yourself."""
    if not runs:
        raise UsageError("give at least one run folder")
    loaded = []
    for run in runs:
        if isinstance(run, Run):
            loaded.append(run)
        elif isinstance(run, RunResult):
            loaded.append(load_run(run))
        else:
            label, path = parse_run_spec(str(run))
            loaded.append(load_run(path, label))
    names = [run.name for run in loaded]
    if len(set(names)) < len(names):
        for index, run in enumerate(loaded):
            run.name = f"{index + 1}:{run.name}"
    return loaded
