"""Run folders as the reports see them: :class:`foresight_eval.runs.Run` (name, summary, per-video
values) plus the folder itself, whose per_frame.csv and recorded input paths the frame strips need."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from foresight_eval import runs as run_folders
from foresight_eval.errors import UsageError
from foresight_eval.results import PER_FRAME_FILE


def as_number(value: Any) -> float:
    """A number from summary.json, where NaN is stored as null and infinities as "inf" / "-inf"."""
    if value is None:
        return math.nan
    return float(value)


@dataclass
class Run(run_folders.Run):
    path: Path = field(default_factory=Path)

    @property
    def label(self) -> str:
        return self.name

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.summary.get("metrics", {})

    @cached_property
    def per_frame(self) -> pd.DataFrame:
        """Read only when frame strips need it: it is the largest file of a run folder."""
        path = self.path / PER_FRAME_FILE
        if not path.exists():
            return pd.DataFrame(columns=["video", "horizon", "frame", "metric", "value"])
        try:
            return run_folders.read_run_csv(path, text=("video", "metric"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: {exc}") from exc


def parse_run_spec(spec: str) -> tuple[str, Path]:
    """``PATH`` (labelled by the folder's name) or ``LABEL=PATH``; an existing path containing '=' is a path."""
    label, sep, path = spec.partition("=")
    if not sep or Path(spec).exists():
        return Path(spec).resolve().name, Path(spec)
    if not label or not path:
        raise UsageError(f"expected RUN_DIR or LABEL=RUN_DIR, got {spec!r}")
    return label, Path(path)


def load_run(path: Path, label: str | None = None) -> Run:
    loaded = run_folders.load_run(Path(path), label)
    return Run(loaded.name, loaded.summary, loaded.per_video, Path(path))


def load_runs(specs: Sequence[str]) -> list[Run]:
    if not specs:
        raise UsageError("give at least one run folder")
    runs = [load_run(path, label) for label, path in map(parse_run_spec, specs)]
    labels = [run.label for run in runs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"two runs share the label {duplicates[0]!r}; name them with LABEL=RUN_DIR")
    return runs
