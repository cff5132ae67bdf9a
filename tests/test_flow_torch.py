"""The torch Farnebäck flow and warp_error's torch backend (their GPU path) against OpenCV's, on the CPU."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fixtures import synthetic
from foresight_eval.io.clips import open_clip
from foresight_eval.metrics import flow_torch
from foresight_eval.metrics.flow_torch import box_sums, farneback
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


@pytest.fixture(params=["torch ops", "fused kernels"])
def refinement(request, monkeypatch):
    """Farnebäck's refinement iterations either way: in torch ops (the CPU's default), or in flow_kernels'
    Triton kernels (a GPU's), here run by Triton's interpreter on the CPU (tests/conftest.py): the kernels' own
    code, their arithmetic in NumPy instead of on a GPU. Where Triton compiles (a GPU machine), tests/test_gpu.py
    runs them on the GPU instead."""
    if request.param == "fused kernels":
        _needs_interpreted_triton()
        monkeypatch.setattr(flow_torch, "fused_by_default", lambda device: True)
    return request.param


def _needs_interpreted_triton() -> None:
    pytest.importorskip("triton")  # a test dependency on Linux (pyproject.toml); there are no wheels elsewhere
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton compiles here (a GPU): tests/test_gpu.py runs the fused kernels")


@pytest.mark.parametrize("clip", list(CLIPS))
def test_farneback_matches_opencv(clip, fixtures_dir, refinement):
    gray = to_gray_uint8(CLIPS[clip](fixtures_dir)[:3])
    reference = np.stack([optical_flow(a, b) for a, b in zip(gray[:-1], gray[1:])])
    ours = farneback(torch.from_numpy(gray[:-1]), torch.from_numpy(gray[1:]), **FARNEBACK_PARAMS).numpy()
    assert np.abs(reference).mean() > 0.1, "the frames must move for the check to mean anything"
    end_point_error = np.sqrt(np.square(ours - reference).sum(axis=-1))
    assert_parity(f"torch Farneback ({refinement}) vs cv2.calcOpticalFlowFarneback (mean end-point error, px)",
                  end_point_error.mean(axis=(1, 2)), np.zeros(len(ours)), atol=1e-4)
    assert_parity(f"torch Farneback ({refinement}) vs cv2.calcOpticalFlowFarneback (max end-point error, px)",
                  end_point_error.max(axis=(1, 2)), np.zeros(len(ours)), atol=1e-3)


def test_farneback_at_a_size_without_pyramid_levels(refinement):
    # Under 64 pixels a side, OpenCV uses fewer than `levels` pyramid levels; so must we.
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (40, 56), dtype=np.uint8), (5, 5), 1.5)
    moved = np.roll(image, (1, 2), axis=(0, 1))
    ours = farneback(torch.from_numpy(image)[None], torch.from_numpy(moved)[None], **FARNEBACK_PARAMS)[0].numpy()
    assert_parity(f"torch Farneback ({refinement}) vs cv2 on 40x56 (max end-point error, px)",
                  np.sqrt(np.square(ours - optical_flow(image, moved)).sum(axis=-1)).max(), 0.0, atol=1e-3)


@pytest.mark.parametrize("clip", list(CLIPS))
def test_warp_error_torch_backend_matches_opencv(clip, fixtures_dir, refinement):
    frames = CLIPS[clip](fixtures_dir)[:3]
    reference = warp_error(frames[:-1], frames[1:], backend="opencv")
    ours = warp_error(frames[:-1], frames[1:], backend="torch")
    # OpenCV's remap rounds sampling positions to 1/32 pixel, the torch warp does not: rounding-level differences.
    assert_parity(f"warp_error backend=torch ({refinement}) vs backend=opencv", ours, reference, atol=2e-6)
    assert_parity(f"warp_error backend=torch ({refinement}) vs backend=opencv (relative)",
                  (ours - reference) / reference, torch.zeros_like(reference), atol=5e-3)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_image_convolution_grouped_as_on_a_gpu_is_the_plain_one(dtype):
    """Off the CPU, conv_per_image runs one-channel images as the channels of one grouped convolution
    (PyTorch's depthwise kernel instead of cuDNN's TF32 tensor cores): the same values as the plain
    convolution, to rounding, for one to three filters of any shape."""
    from foresight_eval.metrics.base import conv_per_image

    images = _camera_like().mean(dim=1, keepdim=True).to(dtype)
    filters = torch.randn(3, 1, 5, 7, generator=torch.Generator().manual_seed(0), dtype=dtype)
    for weight in (filters[:1], filters[:2, :, :1], filters[:, :, :, :1], filters):
        plain, grouped = (conv_per_image(images, weight, grouped=flag) for flag in (False, True))
        assert grouped.shape == plain.shape == (3, len(weight), 120 - weight.shape[2] + 1, 200 - weight.shape[3] + 1)
        assert_parity(f"grouped vs plain convolution ({dtype})", grouped, plain,
                      atol=1e-5 if dtype == torch.float32 else 1e-13)


def test_the_gpu_paths_grouped_convolutions_give_the_cpu_paths_flow_and_edges(monkeypatch):
    """Farnebäck's flow and Canny's maps with every convolution grouped, as on a GPU, against the plain ones."""
    import functools

    from foresight_eval.metrics import base, edges_torch, flow_torch

    frames = _camera_like()
    gray = torch.from_numpy(to_gray_uint8(frames))
    plain_flow, plain_edges = farneback(gray[:-1], gray[1:], **FARNEBACK_PARAMS), edges_torch.canny(frames)
    for module in (flow_torch, edges_torch):
        monkeypatch.setattr(module, "conv_per_image", functools.partial(base.conv_per_image, grouped=True))
    grouped_flow, grouped_edges = farneback(gray[:-1], gray[1:], **FARNEBACK_PARAMS), edges_torch.canny(frames)
    assert_parity("Farnebäck flow, grouped vs plain convolutions (pixels)", grouped_flow, plain_flow, atol=1e-3)
    assert_parity("Canny maps, grouped vs plain convolutions (pixels differing)",
                  (grouped_edges != plain_edges).double().mean(), torch.tensor(0.0), atol=0)


@pytest.mark.parametrize("size", [1, 2, 15, 40])
def test_box_sums_by_running_sums_are_the_window_sums(size):
    values = torch.randn(2, 3, 40, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(size)) * 1e3
    rows = F.avg_pool2d(values, (size, 1), stride=1) * size
    assert_parity(f"box sums of {size} along rows vs avg_pool2d", box_sums(values, size, dim=2), rows, atol=1e-9)
    if size <= values.shape[3]:
        columns = F.avg_pool2d(values, (1, size), stride=1) * size
        assert_parity(f"box sums of {size} along columns vs avg_pool2d", box_sums(values, size, dim=3), columns,
                      atol=1e-9)


def test_fused_kernels_refine_as_the_torch_ops():
    """The same flows either way, to the rounding of their different bilinear weights (OpenCV's in the kernels,
    grid_sample's normalised positions in the torch ops): the fused kernels are not only near OpenCV but near
    the path they replace, on a clip whose flow has every pyramid level."""
    gray = torch.from_numpy(to_gray_uint8(_camera_like()[:3]))
    plain = farneback(gray[:-1], gray[1:], **FARNEBACK_PARAMS)
    _needs_interpreted_triton()
    fused = farneback(gray[:-1], gray[1:], **FARNEBACK_PARAMS, fused=True)
    assert plain.abs().mean() > 0.1
    assert_parity("Farnebäck flow, fused kernels vs torch ops (max end-point error, px)",
                  (fused - plain).square().sum(dim=-1).sqrt().max(), torch.tensor(0.0), atol=1e-4)
    assert not torch.equal(fused, plain), "the kernels ran (their weights differ from grid_sample's in rounding)"


def test_the_fused_kernels_are_the_default_on_a_gpu_only_and_a_failure_falls_back_with_a_warning(monkeypatch):
    assert not flow_torch.fused_by_default(torch.device("cpu"))
    monkeypatch.setattr(flow_torch, "FUSED_ON_GPU", False)
    assert not flow_torch.fused_by_default(torch.device("cuda"))  # off: decided before any CUDA call
    # No Triton to import (None in sys.modules stops an import), as on a platform without it.
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.delitem(sys.modules, "foresight_eval.metrics.flow_kernels", raising=False)
    flow_torch.fused_kernels_run.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="Triton kernels do not run on cpu .*ModuleNotFoundError.*torch ops"):
            assert flow_torch.fused_kernels_run(torch.device("cpu")) is False
    finally:
        flow_torch.fused_kernels_run.cache_clear()
