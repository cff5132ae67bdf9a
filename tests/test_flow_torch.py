"""The torch Farnebäck flow and warp_error's torch backend (their GPU path) against OpenCV's, on the CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fixtures import synthetic
from foresight_eval.io.clips import open_clip
from foresight_eval.metrics.flow_torch import farneback
from foresight_eval.metrics.temporal import (FARNEBACK_PARAMS, consecutive_warp_error_torch, optical_flow, to_gray_uint8,
                                             warp_error)
from tests.parity import assert_parity


def _fixture(fixtures_dir, name: str) -> torch.Tensor:
    frames = np.stack(list(open_clip(fixtures_dir / name).frames()))
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def _camera_like() -> torch.Tensor:
    clip = synthetic.to_uint8(synthetic.camera_like_clip(0, 3, height=120, width=200))
    return torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255


CLIPS = {
    "fixture shift_mild/clip01": lambda d: _fixture(d, "preds/shift_mild/clip01.mp4")[:-1:4],
    "fixture noise_strong/clip02": lambda d: _fixture(d, "preds/noise_strong/clip02.mp4")[:-1:4],
    "camera-like": lambda d: _camera_like(),
}


@pytest.mark.parametrize("clip", list(CLIPS))
def test_farneback_matches_opencv(clip, fixtures_dir):
    gray = to_gray_uint8(CLIPS[clip](fixtures_dir)[:3])
    reference = np.stack([optical_flow(a, b) for a, b in zip(gray[:-1], gray[1:])])
    ours = farneback(torch.from_numpy(gray[:-1]), torch.from_numpy(gray[1:]), **FARNEBACK_PARAMS).numpy()
    assert np.abs(reference).mean() > 0.1, "the frames must move for the check to mean anything"
    end_point_error = np.sqrt(np.square(ours - reference).sum(axis=-1))
    assert_parity("torch Farneback vs cv2.calcOpticalFlowFarneback (mean end-point error, px)",
                  end_point_error.mean(axis=(1, 2)), np.zeros(len(ours)), atol=1e-4)
    assert_parity("torch Farneback vs cv2.calcOpticalFlowFarneback (max end-point error, px)",
                  end_point_error.max(axis=(1, 2)), np.zeros(len(ours)), atol=1e-3)


def test_farneback_at_a_size_without_pyramid_levels():
    # Under 64 pixels a side, OpenCV uses fewer than `levels` pyramid levels; so must we.
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (40, 56), dtype=np.uint8), (5, 5), 1.5)
    moved = np.roll(image, (1, 2), axis=(0, 1))
    ours = farneback(torch.from_numpy(image)[None], torch.from_numpy(moved)[None], **FARNEBACK_PARAMS)[0].numpy()
    assert_parity("torch Farneback vs cv2 on 40x56 (max end-point error, px)",
                  np.sqrt(np.square(ours - optical_flow(image, moved)).sum(axis=-1)).max(), 0.0, atol=1e-3)


@pytest.mark.parametrize("clip", list(CLIPS))
def test_warp_error_torch_backend_matches_opencv(clip, fixtures_dir):
    frames = CLIPS[clip](fixtures_dir)[:3]
    reference = warp_error(frames[:-1], frames[1:], backend="opencv")
    ours = warp_error(frames[:-1], frames[1:], backend="torch")
    # OpenCV's remap rounds sampling positions to 1/32 pixel, the torch warp does not: rounding-level differences.
    assert_parity("warp_error backend=torch vs backend=opencv", ours, reference, atol=2e-6)
    assert_parity("warp_error backend=torch vs backend=opencv (relative)", (ours - reference) / reference,
                  torch.zeros_like(reference), atol=5e-3)


def test_a_sequence_shares_each_frames_pyramid_and_gives_the_pairwise_values():
    """consecutive_warp_error_torch expands each frame once for its four flows; the values are those of the
    pair-by-pair computation, and the metric's batches (bridging pair included) give them at every batch size."""
    from foresight_eval.metrics.base import FrameBatch, RunContext
    from foresight_eval.metrics.registry import metric_classes
    from foresight_eval.metrics import flow_torch

    frames = _camera_like()[:6]
    pairwise = warp_error(frames[:-1], frames[1:], backend="torch")
    expanded = []
    original = flow_torch.poly_expansion

    def counting(images, *args):
        expanded.append(len(images))
        return original(images, *args)

    flow_torch.poly_expansion = counting
    try:
        sequence = consecutive_warp_error_torch(frames)
    finally:
        flow_torch.poly_expansion = original
    assert set(expanded) == {len(frames)}  # per pyramid level: the 6 frames, not 4 x 5 images
    assert_parity("warp_error: consecutive vs pairwise (torch)", sequence, pairwise, atol=1e-9)
    for batch_size in (1, 2, 4):
        metric = metric_classes()["warp_error"](backend="torch")
        metric.setup(RunContext(device=torch.device("cpu")))
        metric.reset()
        values = [metric.update(FrameBatch("clip", part, part, index + 1, index))
                  for part, index in zip(frames.split(batch_size), torch.arange(len(frames)).split(batch_size))]
        assert_parity(f"warp_error metric, batches of {batch_size} vs pairwise", torch.cat(values)[1:], pairwise,
                      atol=1e-9)
