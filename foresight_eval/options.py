"""The options of a scoring run that are not metric parameters: context frames, how mismatched clips are
handled, frame rates, batch size. One frozen object, validated when it is made, recorded with every run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from foresight_eval.errors import UsageError
from foresight_eval.timing import FPS_MISMATCH_MODES


@dataclass(frozen=True)
class ScoreOptions:
    context: int = 0  # conditioning frames skipped at the start of every clip
    frames: Literal["error", "min"] = "error"  # frame-count mismatch: error row, or score the shorter length
    resize: Literal["error", "ref"] = "error"  # size mismatch: error row, or resize predictions to the reference
    batch_size: int = 16
    fps: float | None = None  # frame rate of frame folders and arrays, which carry none (foresight_eval.timing)
    fps_mismatch: Literal["error", "resample-pred", "ignore"] = "error"  # pred and ref frame rates differ
    horizon_seconds: float | None = None  # score only this many seconds of horizon frames
    # processes for metrics' CPU-bound work (foresight_eval.workers); 0: inline; None: by device (0 on the CPU)
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.context < 0:
            raise UsageError("--context must be >= 0")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise UsageError("--workers must be a whole number >= 0 (0: inline)")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        if self.frames not in ("error", "min"):
            raise UsageError("--frames must be 'error' or 'min'")
        if self.resize not in ("error", "ref"):
            raise UsageError("--resize must be 'error' or 'ref'")
        if self.fps_mismatch not in FPS_MISMATCH_MODES:
            raise UsageError(f"--fps-mismatch must be one of {', '.join(FPS_MISMATCH_MODES)}")
        for name, value, unit in (("--fps", self.fps, "frames per second"),
                                  ("--horizon-seconds", self.horizon_seconds, "seconds")):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a positive number of {unit}")
