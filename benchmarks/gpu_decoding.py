"""Decoding H.264 clips: PyAV with threads (what `score` uses) against torchcodec on the CPU and on the GPU
(NVDEC), when torchcodec is installed.

    python benchmarks/gpu_decoding.py [--clips 3 --frames 64 --size 640x360 --repeats 2]

torchcodec loads the system's FFmpeg libraries (4 to 8). Where there are none, PyAV's bundled FFmpeg serves:
link each ``av.libs/libNAME-HASH.so.X.Y.Z`` as ``libNAME.so.X`` into a folder and put that folder and
``av.libs`` on ``LD_LIBRARY_PATH`` (the figures in benchmarks/RESULTS.md were taken that way). Every frame
is decoded to RGB; the time includes opening each file. The frames of each decoder are compared with PyAV's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_speed import make_clips  # noqa: E402


def pyav_frames(files: list[Path]) -> list[np.ndarray]:
    clips = []
    for file in files:
        with av.open(str(file)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            clips.append(np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]))
    return clips


def torchcodec_frames(files: list[Path], device: str) -> list[np.ndarray]:
    from torchcodec.decoders import VideoDecoder

    decoded = [VideoDecoder(str(file), device=device)[:].data for file in files]
    if device == "cuda":
        torch.cuda.synchronize()
    return [clip.permute(0, 2, 3, 1).cpu().numpy() for clip in decoded]


def best_time(decode, repeats: int) -> tuple[float, list[np.ndarray]]:
    times, clips = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        clips = decode()
        times.append(time.perf_counter() - start)
    return min(times), clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as name:
        preds, refs = make_clips(Path(name), args.clips, args.frames, height, width)
        files = sorted(refs.glob("*.mp4")) + sorted(preds.glob("*.mp4"))
        seconds, reference = best_time(lambda: pyav_frames(files), args.repeats)
        count = sum(len(clip) for clip in reference)
        print(f"{count} frames of {args.size} H.264 in {len(files)} files (best of {args.repeats})")
        print(f"  PyAV, threads: {seconds:.3f} s")
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
        for device in devices:
            try:
                seconds, clips = best_time(lambda: torchcodec_frames(files, device), args.repeats)
            except Exception as exc:  # noqa: BLE001 - not installed, no FFmpeg, no NVDEC: say so and go on
                print(f"  torchcodec {device}: not available ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
                continue
            worst = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(clips, reference))
            print(f"  torchcodec {device}: {seconds:.3f} s (largest difference from PyAV's frames: {worst})")


if __name__ == "__main__":
    main()
