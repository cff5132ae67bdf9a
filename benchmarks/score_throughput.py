"""Throughput of `foresight-eval score` (PSNR + SSIM + LPIPS) against the per-frame loop a user would
write by hand (PyAV decode, scikit-image SSIM and PSNR per frame, the `lpips` package per batch), on the
same clip pairs in the same run. Prints frames per second of both and their ratio.

LPIPS needs torchvision's AlexNet checkpoint; without one in the cache (this machine is offline) the
benchmark writes seeded random weights into a temporary $TORCH_HOME: throughput does not depend on the
weights' values, and both sides load the same file.

    python benchmarks/score_throughput.py [--clips 8 --frames 24 --size 256x256 --device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import best_time, ensure_alexnet_weights, make_pairs
from foresight_eval import ScoreOptions, score


def hand_loop(preds: Path, refs: Path, device: torch.device, batch_size: int,
              with_lpips: bool = True) -> tuple[int, dict[str, float]]:
    """What a user writes today: decode both clips, score frame by frame, LPIPS per batch (``with_lpips``)."""
    import av
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if with_lpips:
        import lpips

        model = lpips.LPIPS(net="alex", verbose=False).to(device)
    totals = {"psnr": [], "ssim": [], **({"lpips": []} if with_lpips else {})}
    frames_scored = 0
    for pred_path in sorted(preds.glob("*.mp4")):
        with av.open(str(pred_path)) as p, av.open(str(refs / pred_path.name)) as r:
            pred = [f.to_ndarray(format="rgb24") for f in p.decode(video=0)]
            ref = [f.to_ndarray(format="rgb24") for f in r.decode(video=0)]
        for a, b in zip(pred, ref):
            totals["psnr"].append(peak_signal_noise_ratio(b, a, data_range=255))
            totals["ssim"].append(structural_similarity(
                b, a, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False))
        for start in range(0, len(pred) if with_lpips else 0, batch_size):
            to_tensor = lambda frames: torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            with torch.no_grad():
                values = model(to_tensor(pred[start:start + batch_size]).to(device),
                               to_tensor(ref[start:start + batch_size]).to(device))
            totals["lpips"].extend(values.flatten().tolist())
        frames_scored += len(pred)
    return frames_scored, {name: float(np.mean(values)) for name, values in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of each side; the best is kept")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ensure_alexnet_weights(tmp)
        preds, refs = make_pairs(tmp, args.clips, args.frames, height, width)
        options = ScoreOptions(batch_size=args.batch_size)

        def ours() -> tuple[int, dict[str, float]]:
            run = score(preds, refs, ["psnr", "ssim", "lpips"], options=options, device=device)
            return sum(p.frames for p in run.pairs), {n: s.mean for n, s in run.metrics.items()}

        timings = {}
        for label, fn in (("hand loop", lambda: hand_loop(preds, refs, device, args.batch_size)), ("foresight-eval", ours)):
            seconds, (frames, means) = best_time(fn, args.repeats)
            timings[label] = (frames / seconds, means)
    print(f"{args.clips} clips x {args.frames} frames at {width}x{height}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    for label, (fps, means) in timings.items():
        print(f"  {label:<15} {fps:8.1f} frames/s   " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(means.items())))
    ratio = timings["foresight-eval"][0] / timings["hand loop"][0]
    print(f"  speed-up: {ratio:.2f}x (goal: at least 3x on CPU)")


if __name__ == "__main__":
    main()
