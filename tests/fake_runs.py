"""Hand-made run folders for gate, check and compare tests, written through the real RunResult."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from foresight_eval.results import PairResult, RunResult, summarize
from foresight_eval.stats import BootstrapConfig

DIRECTIONS = {"psnr": "higher", "ssim": "higher", "lpips": "lower", "tc": "higher", "mask_iou": "higher"}
BOOTSTRAP = BootstrapConfig(n_resamples=200)


def make_run(
    per_video: dict[str, list[float]],
    *,
    params: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    videos: list[str] | None = None,
    errors: tuple[str, ...] = (),
    context: int = 0,
) -> RunResult:
    """One ok row per video (``clip00``...) with the given values per metric, plus error rows for ``errors``."""
    count = len(next(iter(per_video.values())))
    videos = videos or [f"clip{i:02d}" for i in range(count)]
    pairs = [PairResult(video, f"p/{video}.mp4", f"r/{video}.mp4", frames=8,
                        values={name: values[i] for name, values in per_video.items()})
             for i, video in enumerate(videos)]
    pairs += [PairResult(video, f"p/{video}.mp4", f"r/{video}.mp4", status="error", error="corrupt") for video in errors]
    definitions = {name: {"direction": DIRECTIONS.get(name, "higher"), "unit": "", "granularity": "video",
                          "description": name, "params": dict((params or {}).get(name, {}))} for name in per_video}
    return RunResult(pairs, summarize(pairs, definitions, BOOTSTRAP), bootstrap=BOOTSTRAP.as_dict(),
                     options={"context": context, "frame_mismatch": "error", "resize": "error", "batch_size": 16},
                     extra=dict(extra or {}))


def write_run(folder: Path, per_video: dict[str, list[float]], **kwargs: Any) -> Path:
    return make_run(per_video, **kwargs).write(folder)
