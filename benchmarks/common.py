"""Shared by the benchmark scripts: synthetic clip pairs on disk, LPIPS weights, best-of timing."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for fixtures.synthetic
from fixtures import synthetic  # noqa: E402
from foresight_eval.io.video import write_video  # noqa: E402
from foresight_eval.errors import WeightsNotFound  # noqa: E402
from foresight_eval.metrics.perceptual import LPIPS_BACKBONES  # noqa: E402

T = TypeVar("T")


def make_pairs(root: Path, clips: int, frames: int, height: int, width: int, first_index: int = 0) -> tuple[Path, Path]:
    """Reference clips of moving shapes and predictions of them (blurred, noisy), as H.264 files."""
    for index in range(first_index, first_index + clips):
        scene = synthetic.make_scene(seed=index, height=height, width=width)
        truth, _ = synthetic.render_clip(scene, frames)
        write_video(root / "refs" / f"clip{index:03d}.mp4", synthetic.to_uint8(truth))
        pred = synthetic.add_noise(synthetic.blur(truth, 1.0), 0.02, seed=index)
        write_video(root / "preds" / f"clip{index:03d}.mp4", synthetic.to_uint8(pred))
    return root / "preds", root / "refs"


def ensure_alexnet_weights(tmp: Path) -> None:
    """Use the cached AlexNet checkpoint, or else write seeded random weights under its name into a
    temporary $TORCH_HOME: throughput does not depend on the weights' values."""
    spec = LPIPS_BACKBONES["alex"]
    try:
        spec.locate()
    except WeightsNotFound:
        import torchvision

        os.environ["TORCH_HOME"] = str(tmp / "torch_home")
        path = Path(torch.hub.get_dir()) / "checkpoints" / spec.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), path)
        print("note: random AlexNet weights (throughput only; values are not LPIPS scores)", file=sys.stderr)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``--size`` / ``--sizes``: ``WIDTHxHEIGHT``, or several comma-separated, as (width, height) pairs.

    >>> parse_sizes("640x360,176x144")
    [(640, 360), (176, 144)]
    """
    return [(int(width), int(height)) for width, height in (size.split("x") for size in text.split(","))]


def best_time(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Seconds of the fastest of ``repeats`` timed calls, after one untimed warm-up call, and its result."""
    fn()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
