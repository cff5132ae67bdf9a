"""Frames per second of the spatial metrics that need no annotations, driven as the engine drives them
(batches of --batch-size frames of one clip, state kept across batches), with same-run ratios:

    python benchmarks/spatial_metrics.py                            # CPU, 128x96 and 256x256
    python benchmarks/spatial_metrics.py --device cuda --sizes 256x256,512x512,1024x576

  motion_iou_st      the metric on --device (CPU: OpenCV backend; GPU: torch backend) against Physics-IQ's
                     OpenCV calls alone (CPU, one frame at a time: cvtColor, GaussianBlur,
                     accumulateWeighted, absdiff, threshold, open, close) for both clips and a NumPy IoU.
                     motion_iou and motion_iou_weighted share the masks and cost the same.
  edge_f1 exact      scikit-image Canny + one-to-one matching (max flow, SciPy Dinic), CPU whatever --device
  edge_f1 approx     scikit-image Canny + distance transform; ratio to exact

Frames are synthetic moving shapes (fixtures/synthetic.py), already on the device: decoding is not
timed. "shapes" clips have few edge pixels; "textured" clips add a fixed smoothed-noise texture, whose
dense edges (~25% of pixels) are where exact one-to-one matching gets expensive. Each measurement runs once untimed first. A frame is one predicted/reference pair.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy import ndimage

from foresight_eval import create
from foresight_eval.metrics.motion import motion_masks
from temporal_metrics import drive, frames_per_second, make_clip  # benchmarks/ is on sys.path when run as a script


def opencv_motion_iou(pred: torch.Tensor, ref: torch.Tensor):
    """Physics-IQ's OpenCV calls on both clips (what backend="opencv" runs) and a NumPy IoU per frame."""
    def run() -> None:
        (a, _), (b, _) = motion_masks(pred.cpu(), backend="opencv"), motion_masks(ref.cpu(), backend="opencv")
        for x, y in zip(a.numpy(), b.numpy()):
            union = np.logical_or(x, y).sum()
            _ = np.logical_and(x, y).sum() / union if union else 1.0
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="128x96,256x256", help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}  torch threads {torch.get_num_threads()}  frames/clip {args.frames}  batch {args.batch_size}")
    print(f"{'size':>9}  {'measure':<40} {'frames/s':>10}  ratio")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        ref = make_clip(args.frames, width, height, device)
        pred = make_clip(args.frames + 2, width, height, device)[2:]  # the same scene two frames later

        def fps(fn) -> float:
            return frames_per_second(fn, args.frames, device, args.repeats)

        rows = []
        motion = fps(drive(create("motion_iou_st"), pred, ref, args.batch_size))
        baseline = fps(opencv_motion_iou(pred, ref))
        rows += [(f"motion_iou_st (ours, {device.type})", motion, motion / baseline),
                 ("motion IoU, Physics-IQ OpenCV loop (cpu)", baseline, 1.0)]
        texture = torch.from_numpy(ndimage.gaussian_filter(np.random.default_rng(0).random((3, height, width)),
                                                           (0, 1.5, 1.5))).float().to(device)
        for label, (p, r) in (("shapes", (pred, ref)), ("textured", ((pred + texture) / 2, (ref + texture) / 2))):
            exact = fps(drive(create("edge_f1"), p, r, args.batch_size))
            approx = fps(drive(create("edge_f1", matching="approx"), p, r, args.batch_size))
            rows += [(f"edge_f1 exact, {label}", exact, 1.0), (f"edge_f1 approx, {label}", approx, approx / exact)]
        for label, value, ratio in rows:
            print(f"{size:>9}  {label:<40} {value:>10.1f}  {ratio:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
