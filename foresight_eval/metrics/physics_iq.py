"""The Physics-IQ pipeline's conventions as switchable pieces: time window, 1/4 resize, mp4v mask round trip.

Physics-IQ (Motamed et al. 2025; google-deepmind/physics-IQ-benchmark, commit e457754,
``code/binary_mask_generator.py`` and ``code/calculate_and_write_metrics_to_csv.py``) scores a clip as follows:

* **window**: only the first 5 seconds, at the clip's frame rate (``process_videos``: frame index < fps x 5).
  Here frames are counted after ``--context`` (the switch frame), and a frame is in the window when its start
  time ``(horizon - 1) / fps`` is below ``window_seconds``: ``ceil(fps x seconds)`` frames.
* **frame rate**: the ``fps`` parameter when given; else the reference clip's own rate (PyAV's average rate of
  its video stream); frame folders and arrays carry none and fall back to 30 fps, the rate of Physics-IQ's
  testing videos and of its scripts' runs.
* **mask round trip** (``roundtrip="mp4v"``): the motion masks are written as an ``mp4v`` video by OpenCV's
  ``VideoWriter`` and read back with ``VideoCapture``, so they arrive with the codec's ringing at their edges.
  :class:`Mp4vRoundTrip` streams the same encoding through PyAV's libavcodec ``mpeg4`` encoder with the settings
  OpenCV's FFmpeg backend gives it (``cap_ffmpeg_impl.hpp``: bit rate ``2 x fps x W x H`` also as tolerance,
  ``qmin`` 3, GOP 12, time base ``1/round(fps)``, global headers, one encoder thread, gray to yuv420p through
  swscale's bicubic path) and decodes each packet at once to BGR as ``VideoCapture`` does. One thread matters:
  with the threading PyAV otherwise asks for, the encoder writes resync markers, a different bitstream. On the
  golden clips the packets were measured byte-identical to ``cv2.VideoWriter``'s; tests/test_physics_iq.py checks
  the decoded masks against OpenCV's own round trip.
* **1/4 resolution** (``downscale=4``): frames and masks ``cv2.resize``-d to ``(W // 4, H // 4)`` with OpenCV's
  default bilinear interpolation on 8-bit values; masks re-binarised at > 127 (2 of the 4 pixels a quarter pixel
  samples suffice: 127.5 rounds up).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from foresight_eval.errors import UsageError
from foresight_eval.metrics.base import FrameBatch, FrameMetric

FALLBACK_FPS = 30  # clips without a frame rate (frame folders, arrays): the rate of Physics-IQ's testing videos
PIPELINE_DEFAULTS: dict[str, Any] = {"downscale": 1, "window_seconds": None, "fps": None}


def check_pipeline_params(name: str, params: dict[str, Any]) -> None:
    """Refuse impossible window, frame rate and downscale settings with a message naming the parameter."""
    downscale = params["downscale"]
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise UsageError(f"{name}.downscale must be an integer >= 1, got {downscale!r}")
    for key in ("window_seconds", "fps"):
        value = params[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise UsageError(f"{name}.{key} must be a positive number or null, got {value!r}")


def clip_fps(batch: FrameBatch, params: dict[str, Any]) -> Fraction:
    """The frame rate a clip is scored at: the ``fps`` parameter, else the clip's own, else 30."""
    rate = params["fps"] if params["fps"] is not None else batch.fps
    return Fraction(rate if rate is not None else FALLBACK_FPS).limit_denominator(1_000_000)


def window_stop(batch: FrameBatch, params: dict[str, Any]) -> int:
    """How many leading frames of ``batch`` fall inside the clip's scoring window (all without one)."""
    if params["window_seconds"] is None:
        return len(batch.horizon)
    # The window as the decimal it was written as: Fraction(0.2) is the binary float's value, 0.2000...01, and
    # 10 fps x that would round up to a third frame whose start (0.2 s) lies outside the window.
    frames = math.ceil(clip_fps(batch, params) * Fraction(str(params["window_seconds"])))
    return int((batch.horizon <= frames).sum())


def to_u8(frames: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) frames in [0, 1] to (B, H, W, 3) uint8, exact for frames decoded from 8-bit files."""
    # NumPy, not torch: on small CPU tensors torch's per-op thread dispatch costs more than the work.
    return np.rint(np.clip(frames.detach().permute(0, 2, 3, 1).cpu().numpy(), 0, 1) * 255).astype(np.uint8)


def downscale_u8(images: np.ndarray, factor: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """(B, H, W[, C]) uint8 resized to ``size`` = (W', H') (default (W // factor, H // factor)) by ``cv2.resize``
    with its default bilinear interpolation, as Physics-IQ resizes frames and masks."""
    height, width = images.shape[1:3]
    size = size or (width // factor, height // factor)
    if min(size) < 1:
        raise UsageError(f"frames of {width}x{height} are too small to downscale by {factor}")
    return np.stack([cv2.resize(image, size) for image in images])


class Mp4vRoundTrip:
    """Masks of one clip through a lossy mp4v encode and decode, frame by frame, as OpenCV's VideoWriter and
    VideoCapture do it (module docstring). (B, H, W) uint8 masks in, the decoded (B, H', W') uint8 out, where
    H', W' are H, W rounded down to even (OpenCV's writer drops an odd last row or column)."""

    def __init__(self, width: int, height: int, fps: Fraction):
        rate = max(1, round(fps))  # the mask writer's rate: round(CAP_PROP_FPS)
        self.width, self.height = width - width % 2, height - height % 2
        encoder = av.CodecContext.create("mpeg4", "w")
        encoder.width, encoder.height, encoder.pix_fmt = self.width, self.height, "yuv420p"
        encoder.time_base, encoder.framerate = Fraction(1, rate), Fraction(rate)
        # OpenCV asks for round(fps W H) and adds half of it twice (when configuring and when opening).
        nominal = rate * self.width * self.height
        encoder.bit_rate = encoder.bit_rate_tolerance = nominal + nominal // 2 + nominal // 2
        encoder.gop_size, encoder.qmin, encoder.codec_tag = 12, 3, "mp4v"
        encoder.thread_count = 1
        encoder.flags |= av.codec.context.Flags.global_header  # as the mp4 muxer makes OpenCV set it
        encoder.open()
        decoder = av.CodecContext.create("mpeg4", "r")
        decoder.extradata, decoder.thread_count = encoder.extradata, 1
        self.encoder, self.decoder, self.frames = encoder, decoder, 0
        # one converter each way, kept: a frame's own builds FFmpeg's scaling context anew (io/video.py, RGB_CONVERSION)
        self.to_yuv, self.to_bgr = VideoReformatter(), VideoReformatter()

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        decoded = []
        for mask in masks:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(mask[:self.height, :self.width]), format="gray")
            # BICUBIC: OpenCV's sws_getContext flag
            frame = self.to_yuv.reformat(frame, format="yuv420p", interpolation="BICUBIC")
            frame.pts = self.frames
            self.frames += 1
            for packet in self.encoder.encode(frame):
                # Gray in, so chroma stays 128 and B = G = R after decoding: one channel keeps every value.
                decoded.extend(self.to_bgr.reformat(image, format="bgr24").to_ndarray()[:, :, 0]
                               for image in self.decoder.decode(packet))
        if len(decoded) != len(masks):  # mpeg4 without B-frames, one thread: neither side holds frames back
            raise RuntimeError(f"mp4v round trip returned {len(decoded)} masks for {len(masks)}")
        return np.stack(decoded)


def nan_padded(values: torch.Tensor, total: int) -> torch.Tensor:
    """Per-frame values of the first frames of a batch, NaN (no value) for the frames after the window."""
    padded = torch.full((total,), math.nan, dtype=torch.float64)
    padded[: len(values)] = values.detach().double().cpu()
    return padded


class WindowedFrameMetric(FrameMetric):
    """A frame metric scored only over each clip's window (``window_seconds``; all frames when null). Frames after
    it get no value: no per-frame row and no part in the clip's value."""

    defaults: dict[str, Any] = dict(PIPELINE_DEFAULTS)

    def __init__(self, **params: Any):
        super().__init__(**params)
        check_pipeline_params(self.name, self.params)

    def update(self, batch: FrameBatch) -> torch.Tensor:
        stop = window_stop(batch, self.params)
        if stop == 0:
            return torch.full((len(batch.horizon),), math.nan, dtype=torch.float64)
        # per_frame sees the window's frames only, as a batch of their own.
        values = super().update(batch.head(stop))
        return values if stop == len(batch.horizon) else nan_padded(values, len(batch.horizon))
