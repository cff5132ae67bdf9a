"""How close scoring comes to the cost of decoding: frames per second of the pixel suite
(PSNR + SSIM + LPIPS) through the engine, against decode-only throughput of the same files through
the same pipeline (background decoding, batching, upload to the device), at several frame sizes.

    python benchmarks/pipeline_throughput.py --device cuda --sizes 256x256,768x512 [--clips 8 --frames 48]

Goal on an H100: scoring within 1.5x of decode-only time.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from common import best_time, ensure_alexnet_weights, make_pairs
from foresight_eval import ScoreOptions, score
from foresight_eval.engine import _to_device
from foresight_eval.distributed import resolve_device
from foresight_eval.io.clips import open_clip
from foresight_eval.io.pairing import pair_clips
from foresight_eval.decoding import PairFrames


def decode_only(preds: Path, refs: Path, options: ScoreOptions, device: torch.device) -> int:
    frames = 0
    for pair in pair_clips(preds, refs).pairs:
        stream = PairFrames(open_clip(pair.pred).frames(), open_clip(pair.ref).frames(), context=0,
                            batch_size=options.batch_size, frames_mode="error", pin_memory=device.type == "cuda")
        for host in stream:
            _to_device(host.pred, device), _to_device(host.ref, device)
            frames += len(host.frame_index)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default="256x256,768x512", help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), {args.clips} clips x {args.frames} frames, batch {args.batch_size}")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ensure_alexnet_weights(tmp)
            preds, refs = make_pairs(tmp, args.clips, args.frames, height, width)
            options = ScoreOptions(batch_size=args.batch_size)
            decode_s, frames = best_time(lambda: decode_only(preds, refs, options, device), args.repeats)
            score_s, _ = best_time(lambda: score(preds, refs, ["psnr", "ssim", "lpips"], options=options,
                                                 device=device), args.repeats)
        print(f"  {width}x{height}: decode-only {frames / decode_s:8.1f} frames/s, scoring {frames / score_s:8.1f} "
              f"frames/s, scoring/decode time {score_s / decode_s:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
