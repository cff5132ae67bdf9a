"""Writing small clips in every supported format, for reader, pairing and engine tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def gradient_clip(n_frames: int = 6, height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames with smooth content (codec-friendly) that changes over time."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, size=3)
    frames = [(base + 2.0 * xx[..., None] + 1.5 * yy[..., None] + 7 * t) % 256 for t in range(n_frames)]
    return np.stack(frames).astype(np.uint8)


def write_frames_folder(path: Path, frames: np.ndarray, suffix: str = ".png") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(path / f"frame{index}{suffix}")
    return path


def write_container(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, fps: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "gif":  # FFmpeg's encoder needs a palette step PyAV lacks; Pillow writes animated GIFs
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
        return path
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


# suffix -> (codec, pixel format, lossless)
CONTAINERS = {
    ".mp4": ("libx264", "yuv420p", False),
    ".webm": ("libvpx-vp9", "yuv420p", False),
    ".mkv": ("ffv1", "bgr0", True),
    ".avi": ("png", "rgb24", True),
    ".mov": ("png", "rgb24", True),
    ".gif": ("gif", "pal8", False),
}
