"""The options of a scoring run that are not metric parameters: context frames, how mismatched clips are
handled, frame rates, batch size. One frozen object, validated when it is made, recorded with every run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any, Literal

from foresight_eval.errors import UsageError, field_ref
from foresight_eval.timing import FPS_MISMATCH_MODES


@dataclass(frozen=True)
class ScoreOptions:
    context: int = 0  # conditioning frames skipped at the start of every clip
    frame_mismatch: Literal["error", "min"] = "error"  # frame-count mismatch: error row, or score the shorter length
    resize: Literal["error", "ref"] = "error"  # size mismatch: error row, or resize predictions to the reference
    batch_size: int = 16
    fps: float | None = None  # frame rate of frame folders and arrays, which carry none (foresight_eval.timing)
    fps_mismatch: Literal["error", "resample-pred", "ignore"] = "error"  # pred and ref frame rates differ
    horizon_seconds: float | None = None  # score only this many seconds of horizon frames
    frames: InitVar[str | None] = None  # frame_mismatch's old name, still taken (not stored, not recorded)
    # processes for metrics' CPU-bound work (foresight_eval.workers); 0: inline; None: by device (0 on the CPU)
    workers: int | None = None

    def __post_init__(self, frames: str | None) -> None:
        if frames is not None:
            if self.frame_mismatch != "error" and self.frame_mismatch != frames:
                raise UsageError(f"give {field_ref('frame_mismatch')} ({field_ref('frames')} is its old name), not both")
            object.__setattr__(self, "frame_mismatch", frames)
        if self.context < 0:
            raise UsageError(f"{field_ref('context')} must be >= 0")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise UsageError(f"{field_ref('workers')} must be a whole number >= 0 (0: inline)")
        if self.batch_size < 1:
            raise UsageError(f"{field_ref('batch_size')} must be >= 1")
        if self.frame_mismatch not in ("error", "min"):
            raise UsageError(f"{field_ref('frame_mismatch')} must be 'error' or 'min'")
        if self.resize not in ("error", "ref"):
            raise UsageError(f"{field_ref('resize')} must be 'error' or 'ref'")
        if self.fps_mismatch not in FPS_MISMATCH_MODES:
            raise UsageError(f"{field_ref('fps_mismatch')} must be one of {', '.join(FPS_MISMATCH_MODES)}")
        for name, value, unit in (("fps", self.fps, "frames per second"),
                                  ("horizon_seconds", self.horizon_seconds, "seconds")):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{field_ref(name)} must be a positive number of {unit}")


# Whether a run caches the frame metrics' reference side (``resources["frame_cache"]``; feature_cache.open_run_cache):
# "auto" on the CPU only, where reading it back is faster than computing it, and not on a GPU, where it is slower.
FRAME_CACHE_MODES = ("auto", "on", "off")


# Options renamed since run folders were first written: old name -> current name. Summaries, journal headers,
# config files and profiles that use an old name are read under the current one.
RENAMED_OPTIONS = {"frames": "frame_mismatch"}


def current_option_names(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` (a recorded or written mapping of option -> value) with old option names replaced by
    today's (:data:`RENAMED_OPTIONS`); a mapping giving both keeps the current name's value."""
    renamed = {}
    for name, value in options.items():
        current = RENAMED_OPTIONS.get(name, name)
        if current == name or current not in options:
            renamed[current] = value
    return renamed
