"""psnr + ssim (``mode=wang``, the loop's definition) through ``score()`` on the CPU against the hand-written
loop (``score_throughput.hand_loop`` without LPIPS: PyAV, then scikit-image per frame), issue 17's figure (b),
in interleaved rounds: wall and CPU time (user + system, all threads) of each side, the 1-minute load
average, and how far our clip means are from the loop's.

    PYTHONPATH=$PWD python benchmarks/pixel_cpu.py [--rounds 3]

To compare trees, copy it into the other tree's ``benchmarks/`` and run that copy too (``common.py`` puts its
own tree first on ``sys.path``); the clips are written once into ``--clips``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_throughput import hand_loop  # noqa: E402
from suite_speed import make_clips  # noqa: E402

import foresight_eval  # noqa: E402
from foresight_eval import ScoreOptions, score  # noqa: E402

SIZES = [(640, 360), (320, 240), (176, 144)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=Path("/tmp/foresight_pixel_cpu"))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (args.clips / "refs").is_dir():
        make_clips(args.clips, len(SIZES), args.frames, 0, 0, sizes=SIZES)
    preds, refs = args.clips / "preds", args.clips / "refs"
    options = ScoreOptions(batch_size=args.batch_size)
    sides = {
        "ours": lambda: score(preds, refs, ["psnr", "ssim"], params={"ssim": {"mode": "wang"}}, options=options,
                              device="cpu"),
        "hand": lambda: hand_loop(preds, refs, torch.device("cpu"), args.batch_size, with_lpips=False),
    }
    run, (_, loop) = sides["ours"](), sides["hand"]()  # warm-up, and the values compared
    ours = {name: np.mean([value for pair in run.pairs for _, _, value in pair.per_frame[name]])
            for name in ("psnr", "ssim")}
    print(f"tree {Path(foresight_eval.__file__).parents[1]}; torch threads {torch.get_num_threads()}")
    print("clip-mean differences from the loop: "
          + ", ".join(f"{name} {abs(ours[name] - loop[name]):.2e}" for name in ours))
    times: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(args.rounds):
        for name, side in sides.items():
            cpu, wall = time.process_time(), time.perf_counter()
            side()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            times[name].append(wall)
            print(f"round {index + 1} {name}: {wall:.3f} s wall, {cpu:.3f} s CPU, load {os.getloadavg()[0]:.2f}",
                  flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"medians: ours {medians['ours']:.3f} s, hand loop {medians['hand']:.3f} s, "
          f"ratio {medians['hand'] / medians['ours']:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
