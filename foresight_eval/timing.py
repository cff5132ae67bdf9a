"""Frame rate, duration and time alignment of a clip pair.

A video's frame times come from its packets' presentation timestamps (:meth:`VideoReader.timestamps`);
frame folders and arrays carry no time: they take the frame rate of their sidecar ``<clip>.fps.json``
(``{"fps": 24}`` beside ``clip.npy`` or the folder ``clip/``), else ``--fps`` (frame ``i`` at ``i / fps``).
A clip is variable-frame-rate (VFR) when a frame interval differs from the median interval by more than
``VFR_TOLERANCE`` of it (and more than ``VFR_FLOOR``, the container's tick rounding); its frame rate is
then its average (frames / duration).

Alignment of a prediction to its reference:

* by index (the default): prediction frame ``i`` against reference frame ``i``;
* by time, when either clip is VFR, or their frame rates differ and ``--fps-mismatch resample-pred``:
  for every reference frame at time ``t``, the prediction frame whose timestamp is nearest ``t``
  (ties to the earlier frame). A reference frame later than the prediction's last frame by more
  than half a prediction frame interval has no prediction frame: the prediction is then shorter than
  the reference, handled by ``--frame-mismatch`` like a frame-count mismatch.

``--horizon-seconds S`` scores the horizon frames whose reference time is less than ``S`` seconds after
the first horizon frame's (``ceil(S x fps)`` frames at a constant rate, as Physics-IQ's 5 s window).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foresight_eval.errors import InputError

VFR_TOLERANCE = 0.05  # a frame interval this far (relative) from the median makes a clip variable-rate
# ... and at least this far (seconds): Matroska's millisecond ticks put 60 fps frames 16 or 17 ms apart.
VFR_FLOOR = 0.0015
FPS_TOLERANCE = 1e-3  # relative: 29.97 and 30 differ, 30 and 30.0001 do not
FPS_MISMATCH_MODES = ("error", "resample-pred", "ignore")
FPS_SIDECAR = ".fps.json"
# Per-clip columns of per_video.csv, in order (the prediction's with a pred_ prefix).
MEDIA_COLUMNS = ("fps", "duration", "width", "height", "pred_fps", "pred_duration", "pred_width", "pred_height",
                 "alignment")


@dataclass(frozen=True)
class Timing:
    """When a clip's frames play: ``times`` in seconds from the first frame (None: unknown)."""

    times: np.ndarray | None
    fps: float | None
    vfr: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds the clip plays: the last frame's time plus one (average) frame interval."""
        if self.times is None or not self.fps:
            return None
        return float(self.times[-1]) + 1.0 / self.fps


def clip_timing(reader, fps: float | None = None) -> Timing:
    """A clip's timing: a video's own timestamps; a frame folder or array at its sidecar's rate, else ``fps``
    (``--fps``), else unknown."""
    if hasattr(reader, "timestamps"):
        times = reader.timestamps()
        if len(times) < 2:
            return Timing(times, getattr(reader, "fps", None) or fps)
        intervals = np.diff(times)
        median = float(np.median(intervals))
        vfr = bool(median > 0 and np.max(np.abs(intervals - median)) > max(VFR_TOLERANCE * median, VFR_FLOOR))
        # A constant-rate clip keeps its stream's declared rate (exact, e.g. 30000/1001); a VFR one its average.
        rate = (len(times) - 1) / float(times[-1]) if vfr else (getattr(reader, "fps", None) or 1.0 / median)
        return Timing(times, rate, vfr)
    fps = sidecar_fps(reader.path) or fps
    if fps is None or reader.num_frames is None:
        return Timing(None, None)
    return Timing(np.arange(reader.num_frames) / fps, float(fps))


def sidecar_fps(path: Path) -> float | None:
    """The ``fps`` of ``<clip>.fps.json`` beside a frame folder or array file, if there is one."""
    path = Path(path)
    sidecar = path.parent / f"{path.stem if path.is_file() else path.name}{FPS_SIDECAR}"
    if not sidecar.is_file():
        return None
    try:
        value = json.loads(sidecar.read_text(encoding="utf-8"))["fps"]
        rate = float(value)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{sidecar}: expected {{\"fps\": <frames per second>}} ({exc})") from exc
    if not (math.isfinite(rate) and rate > 0):
        raise InputError(f"{sidecar}: fps must be a positive number, got {value!r}")
    return rate


def fps_differ(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) > FPS_TOLERANCE * max(a, b)


def alignment(pred: Timing, ref: Timing, mode: str) -> str:
    """"index" or "time" (see the module docstring); raises InputError for a refused frame-rate mismatch."""
    if pred.vfr or ref.vfr:
        if pred.times is None or ref.times is None:
            raise InputError("a variable-frame-rate clip is paired with one of unknown frame rate (give --fps)")
        return "time"
    if not fps_differ(pred.fps, ref.fps) or mode == "ignore":
        return "index"
    if mode == "resample-pred":
        return "time"
    raise InputError(f"prediction is {pred.fps:.6g} fps, reference is {ref.fps:.6g} fps "
                     "(--fps-mismatch resample-pred resamples the prediction by timestamp; ignore pairs frames by index)")


def nearest_frames(pred_frames: Iterable[np.ndarray], pred_times: np.ndarray, ref_times: np.ndarray
                   ) -> Iterator[np.ndarray]:
    """For each reference time, the prediction frame nearest it, streaming (at most two frames held).

    Stops at the first reference time beyond the prediction's last frame by more than half a frame interval."""
    frames = iter(pred_frames)
    last = len(pred_times) - 1
    interval = float(np.median(np.diff(pred_times))) if last > 0 else math.inf
    index, current = 0, next(frames, None)
    following = next(frames, None) if last > 0 else None
    for t in ref_times:
        if current is None or t > pred_times[last] + interval / 2:
            return
        # Advance while the next prediction frame is strictly nearer to t.
        while following is not None and index < last and abs(pred_times[index + 1] - t) < abs(pred_times[index] - t):
            index, current = index + 1, following
            following = next(frames, None) if index < last else None
        yield current


def horizon_frame_count(ref: Timing, context: int, seconds: float) -> int:
    """Frames of the reference (context included) up to ``seconds`` after the first horizon frame."""
    if ref.times is None:
        raise InputError("--horizon-seconds needs the reference's frame rate (frame folders and arrays: give --fps)")
    times = ref.times[context:]
    if not len(times):
        return context
    # A hair under S so that a frame exactly S seconds in (S x fps an integer) is left out, as time < S asks.
    return context + int(np.count_nonzero(times - times[0] < seconds - 1e-9))


class PairStreams:
    """A clip pair's frame streams, aligned and cut to ``--horizon-seconds``; its media record goes to ``media``.

    Raises InputError for a refused frame-rate mismatch, or a frame-count mismatch under ``frame_mismatch="error"``
    when the counts are known before decoding."""

    def __init__(self, pred_clip, ref_clip, *, media: dict, fps: float | None, fps_mismatch: str, context: int,
                 horizon_seconds: float | None, frames: str):
        self.pred_timing, self.ref_timing = clip_timing(pred_clip, fps), clip_timing(ref_clip, fps)
        # Filled in place before any check can fail, so that an error row keeps the clips' frame rates.
        self.media = media
        self.media.update(dict.fromkeys(MEDIA_COLUMNS))
        self.media.update(fps=_rounded(self.ref_timing.fps), duration=_rounded(self.ref_timing.duration),
                          pred_fps=_rounded(self.pred_timing.fps), pred_duration=_rounded(self.pred_timing.duration))
        self.alignment = self.media["alignment"] = alignment(self.pred_timing, self.ref_timing, fps_mismatch)
        limit = None
        if horizon_seconds is not None:
            limit = horizon_frame_count(self.ref_timing, context, horizon_seconds)
        counts = [None if n is None else (n if limit is None else min(n, limit))
                  for n in (pred_clip.num_frames, ref_clip.num_frames)]
        if self.alignment == "index" and frames == "error" and None not in counts and counts[0] != counts[1]:
            raise InputError(f"prediction has {counts[0]} frames, reference has {counts[1]} "
                             "(--frame-mismatch min scores the shorter length)")
        self.pred: Iterable[np.ndarray] = pred_clip.frames()
        self.ref: Iterable[np.ndarray] = ref_clip.frames()
        if self.alignment == "time":
            ref_times = self.ref_timing.times if limit is None else self.ref_timing.times[:limit]
            self.pred = nearest_frames(self.pred, self.pred_timing.times, ref_times)
        if limit is not None:
            self.pred, self.ref = itertools.islice(self.pred, limit), itertools.islice(self.ref, limit)

    def record_sizes(self, pred: Any, ref: Any) -> None:
        """Frame sizes from the first host batch: (B, H, W, 3) tensors."""
        if self.media["width"] is None:
            self.media.update(width=ref.shape[2], height=ref.shape[1], pred_width=pred.shape[2],
                              pred_height=pred.shape[1])


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
