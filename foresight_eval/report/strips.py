"""Worst clips as frame strips: reference, prediction and their difference at a few horizons.

Each clip that is among a run's worst on any metric gets one strip, listing the metrics it is worst on
and its value on every metric. Frames are read from the input paths the run recorded (per_video.csv
``pred`` / ``ref``); a relative path is looked up under ``inputs_root`` (default: the working directory)
and, failing that, under the folder the run was scored from (the manifest's ``cwd``), so a report run
from another folder still finds them. A file that is missing or cannot be decoded becomes a note on the
page (and in :func:`strip_problems`), never an error of the report.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from foresight_eval.io.clips import open_clip
from foresight_eval.report.plots import data_uri
from foresight_eval.runs import Run
from foresight_eval.targets import judged_direction, judged_values

THUMB_HEIGHT = 72
JPEG_QUALITY = 75
DIFF_GAIN = 4  # |pred - ref| on [0, 1] frames times 4: an error of 0.25 is full scale, the same in every strip


@dataclass
class StripColumn:
    horizon: int
    frame: int
    ref: str | None = None  # data: URIs
    pred: str | None = None
    diff: str | None = None


@dataclass
class ClipStrip:
    run: str
    video: str
    pred_path: str  # as recorded
    ref_path: str
    worst_on: list[str] = field(default_factory=list)  # metrics on which the clip is among the run's worst k
    values: dict[str, float] = field(default_factory=dict)  # the clip's value on every metric of the run
    columns: list[StripColumn] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pred_file: Path | None = None  # where the recorded paths were found (or looked for)
    ref_file: Path | None = None


def worst_clips(run: Run, metric: str, k: int) -> list[tuple[str, float]]:
    """The k clips with the worst finite value of ``metric`` (lowest when higher is better; farthest from
    the target for a metric with one, see foresight_eval.targets), with their values. A descriptive
    figure (direction "none") has no worst."""
    if judged_direction(run.metrics, metric) not in ("higher", "lower"):
        return []
    judged = judged_values(run.metrics, metric, run.per_video)
    judged = judged[np.isfinite(judged.to_numpy(dtype=float))]
    higher = judged_direction(run.metrics, metric) == "higher"
    ordered = judged.sort_values(ascending=higher, kind="stable")
    values = run.video_values(metric)
    return [(str(video), float(values.get(video, math.nan))) for video in ordered.head(k).index]


def build_strips(runs: Sequence[Run], metrics: Sequence[str], k: int = 3, horizons: int = 3,
                 inputs_root: Path | None = None) -> list[ClipStrip]:
    """One strip per run and clip that is among the run's worst k on some metric, in run order."""
    root = Path.cwd() if inputs_root is None else Path(inputs_root)
    strips: list[ClipStrip] = []
    for run in runs:
        paths = run.per_video.drop_duplicates("video").set_index("video").reindex(columns=["pred", "ref"])
        scored_from = run.summary.get("manifest", {}).get("cwd")
        by_video: dict[str, ClipStrip] = {}
        for metric in metrics:
            if metric not in run.metrics:
                continue
            for video, _ in worst_clips(run, metric, k):
                strip = by_video.get(video)
                if strip is None:
                    pred, ref = (_recorded_path(paths.at[video, column]) for column in ("pred", "ref"))
                    strip = by_video[video] = ClipStrip(run.label, video, pred, ref)
                    strip.values = {m: float(run.video_values(m).get(video, math.nan)) for m in metrics
                                    if m in run.metrics}
                    strip.pred_file, strip.ref_file = (_locate(path, root, scored_from) for path in (pred, ref))
                    if not (pred and ref):
                        strip.problems.append("no input paths recorded for this clip in per_video.csv")
                    else:
                        strip.columns = [StripColumn(h, f) for h, f in _chosen_frames(run, metric, video, horizons)]
                        if not strip.columns:
                            strip.problems.append("no per-frame records for this clip in per_frame.csv")
                strip.worst_on.append(metric)
        strips.extend(by_video.values())
    _fill_frames(strips)
    return strips


def strip_problems(strips: Sequence[ClipStrip]) -> list[str]:
    """``"run clip: problem"`` for every strip that could not be shown in full."""
    return [f"{strip.run} {strip.video}: {problem}" for strip in strips for problem in strip.problems]


def _locate(recorded: str, root: Path, scored_from: str | None) -> Path | None:
    """The recorded path itself if absolute; else under ``root``, or under the folder the run was scored
    from when it is not under ``root``."""
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_absolute():
        return path
    if not (root / path).exists() and scored_from and (Path(scored_from) / path).exists():
        return Path(scored_from) / path
    return root / path


def _recorded_path(value: object) -> str:
    return value if isinstance(value, str) else ""  # an empty CSV cell reads as NaN


def _chosen_frames(run: Run, metric: str, video: str, count: int) -> list[tuple[int, int]]:
    """(horizon, frame index) of the first, last and evenly spaced horizons in between."""
    frames = run.per_frame
    rows = frames[(frames["video"] == video) & (frames["metric"] == metric)]
    if rows.empty:  # a clip-level metric has no per-frame rows; any metric's rows give the same frames
        rows = frames[frames["video"] == video]
    pairs = sorted(set(zip(rows["horizon"].astype(int), rows["frame"].astype(int))))
    if len(pairs) <= count:
        return pairs
    picks = np.unique(np.linspace(0, len(pairs) - 1, count).round().astype(int))
    return [pairs[i] for i in picks]


def _fill_frames(strips: list[ClipStrip]) -> None:
    """Decode every clip once, keeping only the frames some strip shows."""
    wanted: dict[Path, set[int]] = defaultdict(set)
    for strip in strips:
        for column in strip.columns:
            wanted[strip.pred_file].add(column.frame)
            wanted[strip.ref_file].add(column.frame)
    decoded = {path: _read_frames(path, indices) for path, indices in wanted.items()}
    for strip in strips:
        ref_frames, ref_problem = decoded.get(strip.ref_file, ({}, None))
        pred_frames, pred_problem = decoded.get(strip.pred_file, ({}, None))
        for role, path, problem in (("reference", strip.ref_path, ref_problem),
                                    ("prediction", strip.pred_path, pred_problem)):
            if problem:
                strip.problems.append(f"{role} {path}: {problem}")
        for column in strip.columns:
            ref, pred = ref_frames.get(column.frame), pred_frames.get(column.frame)
            column.ref = _thumbnail(ref) if ref is not None else None
            column.pred = _thumbnail(pred) if pred is not None else None
            if ref is not None and pred is not None:
                column.diff = _thumbnail(_difference(pred, ref))


def _read_frames(path: Path, indices: set[int]) -> tuple[dict[int, np.ndarray], str | None]:
    last = max(indices)
    kept: dict[int, np.ndarray] = {}
    count = 0
    try:
        for index, frame in enumerate(open_clip(path).frames()):
            count = index + 1
            if index in indices:
                kept[index] = _to_uint8(frame)
            if index >= last:
                break
    # The report shows whatever can be shown: any failure to open or decode a clip (missing file, corrupt
    # container, unknown format, decoder error) is reported beside its strip instead of aborting the page.
    except Exception as exc:  # noqa: BLE001
        return kept, str(exc) or type(exc).__name__
    absent = sorted(indices - set(kept))
    if absent:
        return kept, f"frame(s) {', '.join(map(str, absent))} not in the clip ({count} frames)"
    return kept, None


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    return (np.clip(frame, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _difference(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    if pred.shape != ref.shape:  # scored with --resize ref: compare at the reference size, as the metrics did
        pred = np.asarray(Image.fromarray(pred).resize((ref.shape[1], ref.shape[0]), Image.Resampling.BICUBIC))
    error = np.abs(pred.astype(np.float32) - ref.astype(np.float32)).mean(axis=2) / 255.0
    return (colormaps["magma"](np.clip(error * DIFF_GAIN, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def _thumbnail(frame: np.ndarray) -> str:
    image = Image.fromarray(frame)
    if image.height > THUMB_HEIGHT:
        width = max(1, math.floor(image.width * THUMB_HEIGHT / image.height))
        image = image.resize((width, THUMB_HEIGHT), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return data_uri(buffer.getvalue(), mime="image/jpeg")
