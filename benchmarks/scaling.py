"""Scaling of `score` over GPUs: wall time of the same run under `torchrun` with 1, 2, ... ranks (one
GPU each), the throughput ratio, and whether every world size wrote the same results.

    python benchmarks/scaling.py --ranks 1,2 --clips 64 --frames 48 --size 256x256

Goal (two H200s): at least 1.8x the single-rank throughput with 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import ensure_alexnet_weights, make_pairs


def _make_shard(args: tuple[Path, int, int, int, int, int]) -> None:
    root, first, count, frames, height, width = args
    make_pairs(root / f"shard{first}", count, frames, height, width, first_index=first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    parser.add_argument("--metrics", default="psnr,ssim,lpips")
    parser.add_argument("--device", default="cuda", help="cuda: one GPU per rank; cpu for a dry run")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ensure_alexnet_weights(tmp)
        workers = os.cpu_count() or 1
        per_worker = -(-args.clips // workers)
        jobs = [(tmp / "data", first, min(per_worker, args.clips - first), args.frames, height, width)
                for first in range(0, args.clips, per_worker)]
        with ProcessPoolExecutor(workers) as pool:  # encoding the clips is single-threaded per clip
            list(pool.map(_make_shard, jobs))
        preds, refs = tmp / "preds", tmp / "refs"
        for side in (preds, refs):
            side.mkdir()
            for shard in (tmp / "data").iterdir():
                for clip in (shard / side.name).iterdir():
                    clip.rename(side / clip.name)
        results = {}
        for ranks in (int(r) for r in args.ranks.split(",")):
            out = tmp / f"run{ranks}"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                       "-m", "foresight_eval", "score", str(preds), str(refs), "-m", args.metrics, "--device", args.device,
                       "--out", str(out), "--json"]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "4"})
            seconds = time.perf_counter() - start
            summary = json.loads((out / "summary.json").read_text())
            results[ranks] = (seconds, {name: m["mean"] for name, m in summary["metrics"].items()},
                              (out / "per_frame.csv").read_text())
        frames = args.clips * args.frames
        base = min(results)
        print(f"{args.clips} clips x {args.frames} frames at {width}x{height}, metrics {args.metrics}")
        for ranks, (seconds, means, per_frame) in sorted(results.items()):
            same = means == results[base][1] and per_frame == results[base][2]
            print(f"  {ranks} rank(s): {seconds:7.1f} s wall, {frames / seconds:8.1f} frames/s, "
                  f"{results[base][0] / seconds:.2f}x of {base} rank(s), results identical: {same}")


if __name__ == "__main__":
    main()
