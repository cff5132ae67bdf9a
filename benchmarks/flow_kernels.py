"""warp_error's GPU time per batch: Farnebäck's refinement in flow_kernels' fused Triton kernels against torch ops.

    python benchmarks/flow_kernels.py [--frames 17] [--size 640x360,320x240,176x144] [--replays 20] [--rounds 5]
                                      [--profile]

Per size: one batch of ``--frames`` camera-like frames (16 frame pairs, 32 flows), warp_error's torch path
(``temporal._consecutive_warp_error_torch``, occlusion "lai", ``fused_flow`` on and off) replayed from one
CUDA graph per setting,
``--replays`` replays timed by CUDA events per round, the two settings alternating over ``--rounds`` rounds;
medians in ms per batch, the ratio, and the largest difference of the two settings' warp errors (relative).
``--profile``: then torch.profiler's kernel table of one eager call with the fused kernels (the first size).
Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse_sizes, synthetic  # noqa: E402
from foresight_eval.metrics.graphs import GraphedFunction  # noqa: E402
from foresight_eval.metrics.temporal import _consecutive_warp_error_torch  # noqa: E402

SETTINGS = {"fused kernels": True, "torch ops": False}


def batch_of_frames(frames: int, width: int, height: int) -> torch.Tensor:
    clip = synthetic.camera_like_clip(0, frames, height=height, width=width)
    return torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous().cuda()


def time_replays(graphed: GraphedFunction, frames: torch.Tensor, fused: bool, replays: int) -> float:
    """ms per call of ``graphed`` on ``frames`` (replayed from its graph), by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graphed(frames, occlusion="lai", fused_flow=fused)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=parse_sizes, default=parse_sizes("640x360,320x240,176x144"))
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    print(f"device: {torch.cuda.get_device_name()}; warp_error per batch of {args.frames} frames, ms (CUDA events)")
    for width, height in args.size:
        frames = batch_of_frames(args.frames, width, height)
        graphed = GraphedFunction(_consecutive_warp_error_torch)
        # three calls each: run eagerly, capture, replay
        errors = {name: [graphed(frames, occlusion="lai", fused_flow=fused) for _ in range(3)][-1]
                  for name, fused in SETTINGS.items()}
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for round_index in range(args.rounds):
            order = list(SETTINGS) if round_index % 2 == 0 else list(SETTINGS)[::-1]
            for name in order:
                times[name].append(time_replays(graphed, frames, SETTINGS[name], args.replays))
        medians = {name: statistics.median(values) for name, values in times.items()}
        relative = ((errors["fused kernels"] - errors["torch ops"]) / errors["torch ops"]).abs().max().item()
        print(f"{width}x{height}: " + ", ".join(f"{name} {value:.2f}" for name, value in medians.items())
              + f"; torch ops / fused {medians['torch ops'] / medians['fused kernels']:.2f}x;"
              f" warp_error relative difference max {relative:.2e}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        frames = batch_of_frames(args.frames, *args.size[0])
        _consecutive_warp_error_torch(frames, occlusion="lai", fused_flow=True)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            _consecutive_warp_error_torch(frames, occlusion="lai", fused_flow=True)
            torch.cuda.synchronize()
        print(profiler.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=48))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
