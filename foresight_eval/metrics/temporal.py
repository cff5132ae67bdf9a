"""Temporal metrics: how a predicted video changes from one frame to the next, no weights needed.

Every metric here looks at consecutive pairs of *horizon* frames (frames t-1 and t, both after the
``--context`` frames, which the engine never passes to metrics). The value of the pair (t-1, t) is
attached to horizon t, so horizon 1 has no value and a clip of H horizon frames has H - 1 pairs; the
clip's value is the mean over its pairs (NaN for a clip with a single horizon frame).

* ``tc`` (headline temporal consistency): mean SSIM between consecutive predicted frames, with the
  ``ssim`` metric's definition and parameters (``mode=torchmetrics`` by default), computed in float64 so
  that a static video gives 1 to 1e-12 (float32 gave 0.9999994).
* ``flicker``: mean absolute difference of consecutive predicted frames on [0, 1]. 0 for a static video.
* ``flicker_score``: VBench's "temporal flickering" score, ``1 - flicker`` (VBench computes
  ``(255 - mean |I_t - I_{t-1}|) / 255`` on uint8 frames, the same number for frames decoded from uint8).
* ``warp_error``: optical flow warping error (Lai et al. 2018): frame t-1 is warped onto frame t along
  the backward flow, occluded pixels are masked out, and the error is the mean squared RGB difference
  over the remaining pixels. ``occlusion=lai`` (default) is Lai et al.'s full mask (their
  ``detect_occlusion``): the forward-backward consistency check of Ruder et al. 2016 *or* a motion
  boundary, where the backward flow's squared forward differences exceed 0.01 |flow|^2 + 0.002;
  ``occlusion=consistency`` keeps the consistency check alone. Either way pixels whose flow leaves the
  frame are masked too. A pair with no valid pixel left (everything occluded) is scored over all its
  pixels, unmasked: a flow that explains nothing must not make the error vanish or the pair disappear.
* ``<name>_delta``: the same quantity of the prediction minus the reference video's own, pair by pair
  (so its clip value is exactly ``name(pred) - name(ref)``). Differences rather than ratios because
  the flicker and warping error of a static reference are 0, and because differences average linearly:
  the per-horizon curve and the clip value agree.
* ``frozen``: 1 when the prediction stands still while the reference moves, for at least ``min_run``
  consecutive pairs; else 0. Its mean over clips is the share of frozen predictions. A prediction that
  scores a higher ``tc`` than reality is suspicious; this flag says when it is because it froze.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.metrics.base import (ConsecutivePairMetric, FrameBatch, MetricInfo, device_constant, over_threads,
                                         when_on_host)
from foresight_eval.metrics.flow_torch import farneback_pairs, fused_by_default
from foresight_eval.metrics.graphs import GraphedFunction
from foresight_eval.metrics.motion import _gray_u8  # OpenCV's RGB2GRAY, shared with the motion masks
from foresight_eval.metrics.registry import register
from foresight_eval.metrics.structural import (SSIM_CHOICES, SSIM_DEFAULTS, SSIM_MODES, SSIMMoments, ssim, ssim_kwargs,
                                               ssim_moments, ssim_of_moments, ssim_takes_opencv)

# OpenCV's documented example parameters for Farnebäck (samples/python/opt_flow.py), recorded with results.
FARNEBACK_PARAMS = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2}
FLOW_METHODS = ("farneback", "dis")
# Forward-backward consistency thresholds of Ruder et al. 2016 (pixels): occluded where
# |F + G|^2 > alpha1 (|F|^2 + |G|^2) + alpha2.
OCCLUSION_ALPHA1, OCCLUSION_ALPHA2 = 0.01, 0.5
# Motion-boundary thresholds of Lai et al. 2018's detect_occlusion: boundary where
# |grad u|^2 + |grad v|^2 > beta1 |G|^2 + beta2 (forward differences of the backward flow G).
BOUNDARY_BETA1, BOUNDARY_BETA2 = 0.01, 0.002
OCCLUSION_MODES = ("lai", "consistency")


# ---- functional core -------------------------------------------------------------------------------

def frame_difference(earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of each frame pair, float64: (N, 3, H, W) twice in, (N,) out."""
    return (later - earlier).abs().flatten(1).mean(dim=1).double()


def to_gray_uint8(frames: torch.Tensor) -> np.ndarray:
    """[0, 1] RGB frames (N, 3, H, W) to the 8-bit grayscale images OpenCV's flow functions take: (N, H, W)."""
    rgb = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.stack([cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) for image in rgb])


def optical_flow(source: np.ndarray, target: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Dense flow (H, W, 2) float32 on ``source``'s grid: source(y, x) ~ target(y + flow[..., 1], x + flow[..., 0]).

    ``source`` and ``target`` are 8-bit grayscale (H, W). ``farneback``: ``cv2.calcOpticalFlowFarneback``
    with :data:`FARNEBACK_PARAMS`; ``dis``: OpenCV's DIS optical flow, preset ``medium``."""
    if method == "farneback":
        p = FARNEBACK_PARAMS
        return cv2.calcOpticalFlowFarneback(source, target, None, p["pyr_scale"], p["levels"], p["winsize"],
                                            p["iterations"], p["poly_n"], p["poly_sigma"], 0)
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(source, target, None)
    raise ValueError(f"unknown flow method {method!r} (one of {FLOW_METHODS})")


def _sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``p + flow(p)`` for every pixel p (bilinear; outside the frame: nearest edge).

    ``image`` is (H, W) or (H, W, C) float32; ``flow`` (H, W, 2) lives on the output's grid."""
    map_x, map_y = _sample_maps(flow)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _sum_last(values: np.ndarray) -> np.ndarray:
    """The sum over a short last axis (a flow's 2 components, RGB's 3) as whole-plane additions in the order
    NumPy's ``sum(axis=-1)`` adds them, so bit for bit its value: NumPy reduces such an axis with a loop per
    pixel, which was most of the warp error's time outside the flows (14 of 20 ms per 640x360 pair)."""
    total = values[..., 0] + values[..., 1]
    for channel in range(2, values.shape[-1]):
        total += values[..., channel]
    return total


def motion_boundary(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels on a motion boundary of ``flow`` (H, W, 2) float32, as Lai et al.'s
    detect_occlusion: the squared forward differences of both flow components along x and y (0 on the
    last column / row) exceed BOUNDARY_BETA1 |flow|^2 + BOUNDARY_BETA2. Their arithmetic, to the bit:
    differences in float32, squares summed in float64, the threshold in float32."""
    along_x, along_y = np.zeros(flow.shape), np.zeros(flow.shape)
    along_x[:, :-1] = flow[:, :-1] - flow[:, 1:]
    along_y[:-1, :] = flow[:-1, :] - flow[1:, :]
    gradient = (along_x[..., 0] ** 2 + along_y[..., 0] ** 2) + (along_x[..., 1] ** 2 + along_y[..., 1] ** 2)
    return gradient > BOUNDARY_BETA1 * (flow[..., 0] ** 2 + flow[..., 1] ** 2) + BOUNDARY_BETA2


def valid_flow_mask(backward: np.ndarray, forward: np.ndarray, occlusion: str = "lai") -> np.ndarray:
    """Pixels of the later frame (H, W) bool whose backward flow stays inside the frame and passes the
    forward-backward consistency check against ``forward`` (the earlier frame's flow to the later one);
    with ``occlusion="lai"`` also off the backward flow's motion boundaries."""
    height, width = backward.shape[:2]
    map_x, map_y = _sample_maps(backward)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    forward_there = backward_warp(forward, backward)
    round_trip = _sum_last(np.square(backward + forward_there))
    magnitudes = _sum_last(np.square(backward)) + _sum_last(np.square(forward_there))
    valid = inside & (round_trip <= OCCLUSION_ALPHA1 * magnitudes + OCCLUSION_ALPHA2)
    if occlusion == "lai":
        return valid & ~motion_boundary(backward)
    if occlusion == "consistency":
        return valid
    raise ValueError(f"unknown occlusion mode {occlusion!r} (one of {OCCLUSION_MODES})")


def uses_torch_flow(method: str, backend: str, device: torch.device) -> bool:
    """Whether :func:`warp_error` takes the torch path for these settings and frames on ``device``."""
    return method == "farneback" and (backend == "torch" or (backend == "auto" and device.type != "cpu"))


def warp_error(earlier: torch.Tensor, later: torch.Tensor, method: str = "farneback",
               occlusion: str = "lai", backend: str = "opencv") -> torch.Tensor:
    """Flow warping error of each frame pair: (N, 3, H, W) twice in, (N,) float64 out.

    ``backend="opencv"``: flow, warp and masks through OpenCV on the CPU, whatever the frames' device;
    ``"torch"``: Farnebäck's flow and the rest in torch ops on the frames' device
    (:func:`warp_error_torch`); ``"auto"``: torch for frames on a GPU, else OpenCV (DIS flow: OpenCV only).
    A pair with no valid pixel is scored over all its pixels (see the module doc)."""
    if len(earlier) == 0:
        return torch.zeros(0, dtype=torch.float64)
    if uses_torch_flow(method, backend, earlier.device):
        return warp_error_torch(earlier, later, occlusion)
    return _warp_errors_opencv(to_gray_uint8(earlier), to_gray_uint8(later), _rgb_arrays(earlier), _rgb_arrays(later),
                               method, occlusion)


def consecutive_warp_error_opencv(frames: torch.Tensor, method: str = "farneback", occlusion: str = "lai") -> torch.Tensor:
    """:func:`warp_error`'s OpenCV path for ``frames[:-1]`` and ``frames[1:]`` (N + 1 frames, N pairs), each
    frame converted to grayscale and to a NumPy array once instead of twice."""
    if len(frames) < 2:
        return torch.zeros(0, dtype=torch.float64)
    gray, rgb = to_gray_uint8(frames), _rgb_arrays(frames)
    return _warp_errors_opencv(gray[:-1], gray[1:], rgb[:-1], rgb[1:], method, occlusion)


def _rgb_arrays(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) frames as (N, H, W, 3) float32 NumPy (a view of channels-last CPU frames)."""
    return frames.permute(0, 2, 3, 1).float().cpu().numpy()


def _warp_errors_opencv(earlier_gray: np.ndarray, later_gray: np.ndarray, earlier_rgb: np.ndarray,
                        later_rgb: np.ndarray, method: str, occlusion: str) -> torch.Tensor:
    """The OpenCV path's warp error of each pair i: flows between the 8-bit grayscale images
    ``earlier_gray[i]`` and ``later_gray[i]`` (H, W), the error over the RGB images ``*_rgb[i]`` (H, W, 3)."""

    def pair_error(i: int) -> float:
        backward = optical_flow(later_gray[i], earlier_gray[i], method)
        forward = optical_flow(earlier_gray[i], later_gray[i], method)
        valid = valid_flow_mask(backward, forward, occlusion)
        squared = _sum_last(np.square(later_rgb[i] - backward_warp(earlier_rgb[i], backward))) / 3  # mean over RGB
        return float((squared[valid] if valid.any() else squared).mean(dtype=np.float64))

    # OpenCV's Farnebäck runs on one core per flow: pairs in parallel threads.
    return torch.tensor(over_threads(pair_error, range(len(earlier_gray))), dtype=torch.float64)


def _warp_torch(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) sampled at p + flow(p) (flow (N, H, W, 2)): bilinear, outside the frame the nearest edge."""
    height, width = images.shape[-2:]
    scale = device_constant((2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)), torch.float32, flow.device)
    yy, xx = torch.meshgrid(torch.arange(height, device=flow.device, dtype=torch.float32),
                            torch.arange(width, device=flow.device, dtype=torch.float32), indexing="ij")
    grid = (torch.stack([xx, yy], dim=-1) + flow) * scale - 1
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _motion_boundary_torch(flow: torch.Tensor) -> torch.Tensor:
    """:func:`motion_boundary` for a batch of flows (N, H, W, 2), in torch ops on their device."""
    flow = flow.double()
    along_x, along_y = torch.zeros_like(flow), torch.zeros_like(flow)
    along_x[:, :, :-1] = flow[:, :, :-1] - flow[:, :, 1:]
    along_y[:, :-1, :] = flow[:, :-1, :] - flow[:, 1:, :]
    gradient = along_x.square().sum(dim=-1) + along_y.square().sum(dim=-1)
    return gradient > BOUNDARY_BETA1 * flow.square().sum(dim=-1) + BOUNDARY_BETA2


def warp_error_torch(earlier: torch.Tensor, later: torch.Tensor, occlusion: str = "lai") -> torch.Tensor:
    """:func:`warp_error` with Farnebäck's flow in torch (:mod:`foresight_eval.metrics.flow_torch`) and the
    warp, occlusion mask and masked mean in torch ops, batched over pairs on the frames' device. OpenCV's
    remap rounds sampling positions to 1/32 pixel and this bilinear warp does not, so values differ from the
    OpenCV path by rounding (tests/test_flow_torch.py measures it)."""
    pairs = torch.arange(len(earlier), device=earlier.device)
    gray = _gray_u8(torch.cat([earlier, later]))[:, 0]
    return _warp_error_torch(earlier, later, gray, pairs, pairs + len(earlier), occlusion)


def _consecutive_warp_error_torch(frames: torch.Tensor, *, occlusion: str,
                                  fused_flow: bool | None = None) -> torch.Tensor:
    index = torch.arange(len(frames), device=frames.device)
    return _warp_error_torch(frames[:-1], frames[1:], _gray_u8(frames)[:, 0], index[:-1], index[1:], occlusion,
                             fused_flow)


# Hundreds of small kernels per batch (about 1,500 for 16 pairs with the torch-op refinement): on a GPU the
# launches, not the kernels, took the time.
_consecutive_warp_error_graphed = GraphedFunction(_consecutive_warp_error_torch)


def consecutive_warp_error_torch(frames: torch.Tensor, occlusion: str = "lai") -> torch.Tensor:
    """:func:`warp_error_torch` of ``frames[:-1]`` and ``frames[1:]`` (N + 1 frames, N pairs), with each frame's
    grayscale image, pyramid and polynomial expansion computed once instead of four times. On a GPU, replayed
    from a CUDA graph once a batch shape repeats (:mod:`foresight_eval.metrics.graphs`)."""
    # The flow's kernels are part of the graph's signature: a graph replays the kernels it was captured with.
    return _consecutive_warp_error_graphed(frames, occlusion=occlusion, fused_flow=fused_by_default(frames.device))


def _warp_error_torch(earlier: torch.Tensor, later: torch.Tensor, gray: torch.Tensor, earlier_index: torch.Tensor,
                      later_index: torch.Tensor, occlusion: str, fused_flow: bool | None = None) -> torch.Tensor:
    """The torch warp error of pairs (earlier[i], later[i]) whose grayscale images are
    ``gray[earlier_index[i]]`` and ``gray[later_index[i]]``; ``fused_flow``: :func:`farneback_pairs`' ``fused``."""
    if occlusion not in OCCLUSION_MODES:
        raise ValueError(f"unknown occlusion mode {occlusion!r} (one of {OCCLUSION_MODES})")
    flows = farneback_pairs(gray, torch.cat([later_index, earlier_index]), torch.cat([earlier_index, later_index]),
                            **FARNEBACK_PARAMS, fused=fused_flow)
    backward, forward = flows.chunk(2)
    height, width = earlier.shape[-2:]
    xx = torch.arange(width, device=backward.device, dtype=torch.float32)
    yy = torch.arange(height, device=backward.device, dtype=torch.float32)[:, None]
    map_x, map_y = xx + backward[..., 0], yy + backward[..., 1]
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    forward_there = _warp_torch(forward.permute(0, 3, 1, 2), backward).permute(0, 2, 3, 1)
    round_trip = (backward + forward_there).square().sum(dim=-1)
    magnitudes = backward.square().sum(dim=-1) + forward_there.square().sum(dim=-1)
    valid = inside & (round_trip <= OCCLUSION_ALPHA1 * magnitudes + OCCLUSION_ALPHA2)
    if occlusion == "lai":
        valid &= ~_motion_boundary_torch(backward)
    squared = (later.float() - _warp_torch(earlier.float(), backward)).square().mean(dim=1).double()
    count = valid.flatten(1).sum(dim=1)
    total = torch.where(valid, squared, 0.0).flatten(1).sum(dim=1)
    # A pair with no valid pixel is scored over all its pixels, as on the OpenCV path.
    return torch.where(count > 0, total / count.clamp(min=1), squared.flatten(1).mean(dim=1))


def consecutive_ssim_of_moments(frames: torch.Tensor, *previous: torch.Tensor,
                                 **kwargs: Any) -> tuple[torch.Tensor, ...]:
    """SSIM (:func:`~foresight_eval.metrics.structural.ssim`'s keyword arguments) of each frame of ``frames``
    (N, C, H, W) with the one before it, from the frames' :func:`ssim_moments`: (N - 1,) values, or (N,) when
    ``previous`` gives the moments of the frame before ``frames[0]`` (``images``, ``mean``, ``mean_square``
    of :class:`SSIMMoments`). Also returns those three moments of the last frame, for the next call."""
    moments = ssim_moments(frames.double(), **kwargs)
    values = [ssim_of_moments(SSIMMoments(*previous), moments[:1], **kwargs)] if previous else []
    if len(frames) > 1:
        values.append(ssim_of_moments(moments[:-1], moments[1:], **kwargs))
    last = moments[-1:].clone()  # not the whole batch's moments
    empty = torch.zeros(0, dtype=torch.float64, device=frames.device)  # a one-frame first batch: no pair
    return (torch.cat(values) if values else empty), last.images, last.mean, last.mean_square


# About 50 kernels per batch on a GPU: replayed from CUDA graphs there (metrics/graphs.py), shared by tc and
# tc_delta and kept for the process, as warp_error's.
_consecutive_ssim_graphed = GraphedFunction(consecutive_ssim_of_moments)


# ---- stateful wrappers -----------------------------------------------------------------------------

class _TemporalSSIM(ConsecutivePairMetric):
    defaults = SSIM_DEFAULTS
    choices = SSIM_CHOICES

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["params"].update(SSIM_MODES[self.params["mode"]])
        return described

    def pair_values(self, earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        return ssim(earlier.double(), later.double(), **ssim_kwargs(self.params))

    def batch_pair_values(self, last: torch.Tensor | None, frames: torch.Tensor,
                          carried: SSIMMoments | None) -> tuple[torch.Tensor, SSIMMoments]:
        """:meth:`pair_values` with each frame's windowed moments computed once, not once per pair it is in:
        a frame's moments serve its pair with the previous frame and with the next, the last frame's are
        carried into the next batch. Per pair only the product moment is filtered (3 of SSIM's 5 moment
        images per pair are shared). Same arithmetic as :func:`ssim`, so the same values.

        On the CPU :func:`ssim` itself over the sequence is faster (3.4x on 16 pairs of 640x360): its OpenCV
        path filters and combines one frame's maps while they are in cache, where this one pads, copies and
        combines whole batches in PyTorch passes, which costs more than the filter it saves per pair."""
        kwargs = ssim_kwargs(self.params)
        if ssim_takes_opencv(frames, window_size=kwargs["window_size"]):
            sequence = (frames if last is None else torch.cat([last, frames])).double()
            if len(sequence) < 2:  # a one-frame first batch: no pair
                return torch.zeros(0, dtype=torch.float64), None
            return self.pair_values(sequence[:-1], sequence[1:]), None
        if last is None:
            previous = ()
        else:  # carried is None after a batch read from the reference cache
            moments = carried if carried is not None else ssim_moments(last.double(), **kwargs)
            previous = (moments.images, moments.mean, moments.mean_square)
        values, *moments_of_last = _consecutive_ssim_graphed(frames, *previous, **kwargs)
        return values, SSIMMoments(*moments_of_last)


@register
class TemporalConsistency(_TemporalSSIM):
    info = MetricInfo(
        name="tc",
        description="Temporal consistency: SSIM between consecutive predicted horizon frames (t-1, t), "
        "mean over pairs; 1 for a static video (see `frozen`)",
        direction="higher",
        target="reference",
    )


@register
class TemporalConsistencyDelta(_TemporalSSIM):
    info = MetricInfo(
        name="tc_delta",
        description="tc of the prediction minus tc of the reference, pair by pair; > 0: steadier than reality",
        direction="higher",
        target=0.0,
    )
    versus_reference = True


class _FrameDifference(ConsecutivePairMetric):
    def pair_values(self, earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        return frame_difference(earlier, later)


@register
class Flicker(_FrameDifference):
    info = MetricInfo(
        name="flicker",
        description="Mean absolute difference of consecutive predicted horizon frames on [0, 1]; 0 for a static video",
        direction="lower",
        target="reference",
    )


@register
class FlickerDelta(_FrameDifference):
    info = MetricInfo(
        name="flicker_delta",
        description="flicker of the prediction minus flicker of the reference, pair by pair",
        direction="lower",
        target=0.0,
    )
    versus_reference = True


@register
class FlickerScore(_FrameDifference):
    info = MetricInfo(
        name="flicker_score",
        description="VBench temporal flickering score: 1 - mean absolute difference of consecutive frames "
        "((255 - MAE) / 255 on uint8 frames)",
        direction="higher",
        target="reference",
        default=False,  # 1 - flicker: asked for by name when comparing with VBench
    )

    def pair_values(self, earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        return 1.0 - super().pair_values(earlier, later)


class _WarpError(ConsecutivePairMetric):
    defaults = {"flow": "farneback", "occlusion": "lai", "backend": "auto"}
    choices = {"flow": FLOW_METHODS, "occlusion": OCCLUSION_MODES, "backend": ("auto", "opencv", "torch")}

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.params["flow"] == "farneback":
            described["params"]["farneback"] = dict(FARNEBACK_PARAMS)
        else:
            described["params"]["dis_preset"] = "medium"
        described["params"].update(occlusion_alpha1=OCCLUSION_ALPHA1, occlusion_alpha2=OCCLUSION_ALPHA2,
                                   error="mean squared RGB difference over valid pixels",
                                   no_valid_pixel="mean squared RGB difference over all pixels")
        if self.params["occlusion"] == "lai":
            described["params"].update(boundary_beta1=BOUNDARY_BETA1, boundary_beta2=BOUNDARY_BETA2)
        return described

    def pair_values(self, earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        return warp_error(earlier, later, self.params["flow"], self.params["occlusion"], self.params["backend"])

    def batch_pair_values(self, last: torch.Tensor | None, frames: torch.Tensor,
                          carried: Any) -> tuple[torch.Tensor, Any]:
        """The bridging pair and the batch's pairs in one call over the frame sequence, each frame prepared
        once. On the torch path one flow computation (each frame's pyramid made once); on OpenCV's, each
        frame's grayscale image made once and one spread of the pairs over the threads (the bridging pair
        alone would keep one core idle for a whole pair's two flows)."""
        sequence = frames if last is None else torch.cat([last, frames])
        if len(sequence) < 2:
            return torch.zeros(0, dtype=torch.float64, device=frames.device), None
        if not uses_torch_flow(self.params["flow"], self.params["backend"], frames.device):
            return consecutive_warp_error_opencv(sequence, self.params["flow"], self.params["occlusion"]), None
        return consecutive_warp_error_torch(sequence, self.params["occlusion"]), None


@register
class WarpError(_WarpError):
    info = MetricInfo(
        name="warp_error",
        description="Optical-flow warping error of consecutive predicted frames: frame t-1 warped onto t along "
        "the backward flow (OpenCV), occlusions masked as Lai et al. 2018 (forward-backward consistency and motion "
        "boundaries), masked mean squared error",
        direction="lower",
        target="reference",
    )


@register
class WarpErrorDelta(_WarpError):
    info = MetricInfo(
        name="warp_error_delta",
        description="warp_error of the prediction minus warp_error of the reference, pair by pair",
        direction="lower",
        target=0.0,
        default=False,  # four optical flows per pair on the CPU: asked for by name
    )
    versus_reference = True


def longest_run(flags: list[bool]) -> int:
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


@register
class Frozen(_FrameDifference):
    info = MetricInfo(
        name="frozen",
        description="1 if the prediction stands still (consecutive frames' mean absolute difference <= threshold) "
        "while the reference moves, for at least min_run consecutive pairs; else 0",
        direction="lower",
        granularity="video",
    )
    # threshold: decoding noise of a repeated frame stays far below it, a moving reference far above.
    defaults = {"threshold": 0.002, "min_run": 3}

    def reset(self) -> None:
        super().reset()
        self._frozen: list[torch.Tensor] = []  # per batch; .tolist() at every batch would wait for a GPU

    def pair_params(self) -> dict[str, Any]:
        return {}  # the frame differences: flicker's, computed once for both (the threshold applies after)

    def update(self, batch: FrameBatch) -> None:
        threshold = self.params["threshold"]
        pred_still = self._role_values(batch, "pred") <= threshold
        ref_still = self._role_values(batch, "ref") <= threshold
        self._frozen.append(pred_still & ~ref_still)
        return None

    def compute(self) -> Any:
        """1.0 or 0.0, NaN without pairs: a float, or on a GPU a Deferred of it."""
        if not self._frozen:
            return float("nan")
        min_run = self.params["min_run"]

        def flag(frozen: np.ndarray) -> float:
            return float(longest_run(frozen.tolist()) >= min_run) if frozen.size else float("nan")
        return when_on_host(torch.cat(self._frozen), flag)
