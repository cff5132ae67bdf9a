"""Video files through PyAV, decoded one frame at a time so a long clip is never held whole."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from foresight_eval.errors import InputError

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif"})
# Probing (frame count, rate, packet timestamps) reads the container, not pictures: without this decoder option
# FFmpeg's stream-info pass decodes the first frames, 9.5 ms against 2.9 ms per open of a 640x360 H.264 clip,
# spent on the thread that drives the GPU. The same values on every container format the tests write.
_PROBE_OPTIONS = {"skip_frame": "all"}
# RGB_CONVERSION: frames are converted to RGB by one converter per stream, not by each frame's own
# (``frame.to_ndarray(format="rgb24")``): a frame's converter builds FFmpeg's scaling context anew for every
# frame, 0.55 ms of a 1.4 ms decode of a 256x256 H.264 frame on the 2-core machine, against 0.05 ms reused.
# The same pixels: the context is rebuilt whenever a frame's size, format or colour properties change.
# MOST_DECODER_THREADS: FFmpeg's own thread count (0) for H.264 is a frame thread per CPU plus one, at most 16.
# A GPU run decodes up to six streams at once (engine.PAIRS_AHEAD_ON_DEVICE) next to the metric workers, and
# frame threading holds a stream's first frame back until that many frames are in flight. On the 16-CPU H200
# host 8 threads a stream made decode-only 3% faster and the default suite 7% (0.578 against 0.621 s; 4 threads
# as 8; benchmarks/RESULTS.md, the twelfth session). Machines of up to 7 CPUs keep FFmpeg's count.
MOST_DECODER_THREADS = 8


def decoder_threads() -> int:
    """FFmpeg's own count for H.264 (a frame thread per usable CPU plus one), at most MOST_DECODER_THREADS. (The
    CPUs are counted here, not by ``workers.usable_cpus``: the readers import nothing above ``io``.)"""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(usable + 1, MOST_DECODER_THREADS)


class VideoReader:
    """A video file, probed when opened. ``timestamps=True`` also reads its packets' timestamps then, in the
    same pass over the container: the scoring engine needs them for every clip it opens, on the thread that
    drives the GPU, where a second open of the file cost about 1 ms of a 640x360 clip's 2 ms (2-core machine)
    and more beside the decoding threads (benchmarks/RESULTS.md, issue 17's nineteenth session)."""

    def __init__(self, path: Path, *, timestamps: bool = False):
        self.path = Path(path)
        self._timestamps: np.ndarray | None = None
        try:
            with av.open(str(self.path), options=_PROBE_OPTIONS) as container:
                if not container.streams.video:
                    raise InputError(f"{self.path}: no video stream")
                stream = container.streams.video[0]
                # Containers may not record a frame count (0); treated as unknown, not as empty.
                self._declared_frames = int(stream.frames) or None
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else None
                if timestamps:
                    self._timestamps = self._read_timestamps(container)
        except av.FFmpegError as exc:
            raise InputError(f"{self.path}: not a readable video ({_ffmpeg_reason(exc)})") from exc

    @property
    def num_frames(self) -> int | None:
        return self._declared_frames

    def timestamps(self) -> np.ndarray:
        """Presentation time of every frame in seconds from the first, in display order.

        Read from the packets' timestamps without decoding (a demux pass), so variable-frame-rate
        clips are placed in time as they play, not by frame index."""
        if self._timestamps is None:
            try:
                with av.open(str(self.path), options=_PROBE_OPTIONS) as container:
                    self._timestamps = self._read_timestamps(container)
            except av.FFmpegError as exc:
                raise InputError(f"{self.path}: not a readable video ({_ffmpeg_reason(exc)})") from exc
        return self._timestamps

    def _read_timestamps(self, container: av.container.InputContainer) -> np.ndarray:
        stream = container.streams.video[0]
        ticks = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
        if not ticks:
            raise InputError(f"{self.path}: video has no frames with a timestamp")
        # int / int is correctly rounded, as float() of the Fraction (tick - first) * time_base is: the same
        # values, without building a Fraction per frame.
        numerator, denominator = stream.time_base.numerator, stream.time_base.denominator
        return np.array([(tick - ticks[0]) * numerator / denominator for tick in ticks])

    def frames(self) -> Iterator[np.ndarray]:
        count = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.thread_count = decoder_threads()
                to_rgb = VideoReformatter()  # see RGB_CONVERSION
                for frame in container.decode(stream):
                    count += 1
                    yield to_rgb.reformat(frame, format="rgb24").to_ndarray()
        except av.FFmpegError as exc:
            raise InputError(f"{self.path}: decoding failed after {count} frames ({_ffmpeg_reason(exc)})") from exc
        if count == 0:
            raise InputError(f"{self.path}: video has no decodable frames")


def _ffmpeg_reason(exc: av.FFmpegError) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def write_video(path: Path, frames: np.ndarray, fps: int = 10, crf: int = 12, preset: str = "medium",
                threads: int = 1) -> None:
    """Encode (T, H, W, 3) uint8 frames as H.264 (yuv420p). The defaults (one encoder thread) give
    byte-identical files from identical frames, as the fixtures need; ``preset="veryfast"`` with
    ``threads=0`` (x264 chooses) is several times faster for bulk output.

    Written to a temporary name and renamed, so a crash never leaves a truncated video behind.
    """
    from foresight_eval.io.files import write_atomic

    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    import io

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=path.suffix.lstrip(".") or "mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    write_atomic(path, buffer.getvalue())
