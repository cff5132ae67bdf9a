"""Reading finished run folders back: the summary and the per-video values, for gates and comparisons."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pandas as pd

from foresight_eval.errors import UsageError
from foresight_eval.results import PER_VIDEO_FILE, RunResult, load_summary

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
    """A finished run: its name (the folder's), summary, and per-video values (one row per clip pair)."""

    name: str
    summary: dict[str, Any]
    per_video: pd.DataFrame

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
    return Run(name or path.resolve().name, summary, per_video)
