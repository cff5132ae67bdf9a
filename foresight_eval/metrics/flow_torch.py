"""Farnebäck dense optical flow in torch ops, batched over frame pairs, for ``warp_error`` on a GPU.

Farnebäck (2003), "Two-frame motion estimation based on polynomial expansion", as OpenCV's CPU
``calcOpticalFlowFarneback`` computes it (modules/video/src/optflowgf.cpp), step by step:

1. a pyramid of ``levels`` + 1 images: level k is the 8-bit image as float, Gaussian-blurred with
   sigma = (1 / scale - 1) / 2 (kernel size round(5 sigma) made odd, at least 3; reflect-101 border),
   then resized bilinearly to round(scale x size), scale = pyr_scale ** k; levels stop above 32 pixels;
2. per level, coarsest first, the polynomial expansion of both images: separable Gaussian-weighted
   moments over (2 poly_n + 1)^2 neighbourhoods (replicated border) times the inverse of the moment
   matrix, five coefficients per pixel;
3. the flow, upsampled from the coarser level (bilinear, / pyr_scale), then ``iterations`` times: the
   matrices G and h of each pixel from the first image's coefficients and the second's sampled along the
   flow (bilinear; outside the image the first image's own), damped within 5 pixels of the border;
   a ``winsize`` box average of them (replicated border); the flow solving G flow = h per pixel.

The arithmetic is float32 as OpenCV's, with the box average and the solve in float64 as there; the
remaining differences are rounding order, so the flows agree closely but not to the bit
(tests/test_flow_torch.py measures the end-point error and the warp_error values against OpenCV's).

On a GPU, step 3 runs in :mod:`foresight_eval.metrics.flow_kernels`' fused Triton kernels instead of some
forty torch ops per iteration (:func:`fused_by_default`; where Triton is missing or cannot compile, in torch
ops with a warning).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType

import torch
import torch.nn.functional as F

from foresight_eval.metrics.base import conv_per_image

MIN_LEVEL_SIZE = 32  # OpenCV stops the pyramid before a side falls under this
# Whether farneback_pairs refines the flows in flow_kernels' Triton kernels when its images are on a GPU (off:
# the torch ops below, to compare).
FUSED_ON_GPU = True
_BORDER_WEIGHTS = (0.14, 0.14, 0.4472, 0.4472, 0.4472)


# The constant tensors below are made once per device and shape: copying a host-built tensor to the GPU
# at every call makes the host wait for the GPU each time (about 20 times per flow). Shared: never modified.
@functools.lru_cache(maxsize=64)
def _opencv_gaussian_kernel(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """cv::getGaussianKernel(size, sigma, CV_32F): the fixed binomial table for small sizes when sigma <= 0."""
    if sigma <= 0 and size == 3:
        return torch.tensor([0.25, 0.5, 0.25], dtype=torch.float32, device=device)
    sigma = sigma if sigma > 0 else ((size - 1) * 0.5 - 1) * 0.3 + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) * 0.5
    kernel = torch.exp(-0.5 / sigma**2 * x * x)
    return (kernel / kernel.sum()).float().to(device)


def _blur_reflect101(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur of (N, 1, H, W) with OpenCV's default BORDER_REFLECT_101 (torch's "reflect")."""
    radius = (len(kernel) - 1) // 2
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    return conv_per_image(conv_per_image(padded, kernel.view(1, 1, -1, 1)), kernel.view(1, 1, 1, -1))


@functools.lru_cache(maxsize=16)
def _poly_filters(n: int, sigma: float, device: torch.device) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """The 1-D weights g, x g, x^2 g (3, 2n + 1) and the entries of the inverse moment matrix that
    OpenCV's FarnebackPrepareGaussian derives (ig11, ig03, ig33, ig55)."""
    if sigma < 1.1920929e-07:
        sigma = n * 0.3
    x = torch.arange(-n, n + 1, dtype=torch.float64)
    g = torch.exp(-x * x / (2 * sigma * sigma)).float()
    g = (g.double() / g.double().sum()).float()
    xf = x.float()
    weights = torch.stack([g, xf * g, xf * xf * g])
    gd, xd = g.double(), x
    outer = gd[:, None] * gd[None, :]  # [y, x]
    xx, yy = xd[None, :] ** 2, xd[:, None] ** 2
    moments = torch.zeros(6, 6, dtype=torch.float64)
    moments[0, 0] = outer.sum()
    moments[1, 1] = (outer * xx).sum()
    moments[3, 3] = (outer * xx * xx).sum()
    moments[5, 5] = (outer * xx * yy).sum()
    moments[0, 3] = moments[0, 4] = moments[3, 0] = moments[4, 0] = moments[2, 2] = moments[1, 1]
    moments[3, 4] = moments[4, 3] = moments[5, 5]
    moments[4, 4] = moments[3, 3]
    inverse = torch.linalg.inv(moments)
    return weights.to(device), (float(inverse[1, 1]), float(inverse[0, 3]), float(inverse[3, 3]), float(inverse[5, 5]))


def poly_expansion(images: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """OpenCV's FarnebackPolyExp of (N, 1, H, W) float32: (N, 5, H, W) coefficients per pixel."""
    weights, (ig11, ig03, ig33, ig55) = _poly_filters(n, sigma, images.device)
    vertical = conv_per_image(F.pad(images, (0, 0, n, n), mode="replicate"), weights.view(3, 1, -1, 1))
    t = F.pad(vertical, (n, n, 0, 0), mode="replicate")
    t0, t1, t2 = t[:, 0:1], t[:, 1:2], t[:, 2:3]
    b1, b2, b4 = conv_per_image(t0, weights.view(3, 1, 1, -1)).unbind(1)
    b3, b6 = conv_per_image(t1, weights[:2].reshape(2, 1, 1, -1)).unbind(1)
    b5 = conv_per_image(t2, weights[:1].view(1, 1, 1, -1))[:, 0]
    return torch.stack([b3 * ig11, b2 * ig11, b1 * ig03 + b5 * ig33, b1 * ig03 + b4 * ig33, b6 * ig55], dim=1)


@functools.lru_cache(maxsize=64)
def _border_damping(height: int, width: int, device: torch.device) -> torch.Tensor:
    def along(size: int) -> torch.Tensor:
        weights = torch.ones(size)
        for i, w in enumerate(_BORDER_WEIGHTS):
            if i < size:
                weights[i] = weights[i] * w
                weights[size - 1 - i] = weights[size - 1 - i] * w
        return weights

    return (along(height)[:, None] * along(width)[None, :]).to(device)


def update_matrices(r0: torch.Tensor, r1: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """OpenCV's FarnebackUpdateMatrices: (N, 5, H, W) coefficients of both images and the flow (N, 2, H, W)
    to the per-pixel entries (G11, G12, G22, h1, h2) as (N, 5, H, W)."""
    _, _, height, width = r0.shape
    xx = torch.arange(width, device=r0.device, dtype=torch.float32)
    yy = torch.arange(height, device=r0.device, dtype=torch.float32)[:, None]
    dx, dy = flow[:, 0], flow[:, 1]
    fx, fy = xx + dx, yy + dy
    # OpenCV samples the second image's coefficients bilinearly where all four neighbours are in the image
    # (floor(x) in [0, width - 2], likewise y) and uses the first image's elsewhere. There grid_sample's
    # bilinear value is that one: one kernel for the five channels instead of four gathers and their
    # weighting (a quarter of a flow's GPU time; benchmarks/RESULTS.md, the twelfth session). Its position
    # goes through grid_sample's [-1, 1] scale and back, which moves it by float32 rounding (~1e-4 pixel at
    # 640 pixels); tests/test_flow_torch.py measures the flows against OpenCV's.
    inside = (fx >= 0) & (fx < width - 1) & (fy >= 0) & (fy < height - 1)
    grid = torch.stack([fx * (2.0 / max(width - 1, 1)) - 1, fy * (2.0 / max(height - 1, 1)) - 1], dim=-1)
    sampled = F.grid_sample(r1, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    r2 = torch.where(inside, sampled[:, 0], 0.0)
    r3 = torch.where(inside, sampled[:, 1], 0.0)
    r4 = torch.where(inside, (r0[:, 2] + sampled[:, 2]) * 0.5, r0[:, 2])
    r5 = torch.where(inside, (r0[:, 3] + sampled[:, 3]) * 0.5, r0[:, 3])
    r6 = torch.where(inside, (r0[:, 4] + sampled[:, 4]) * 0.25, r0[:, 4] * 0.5)
    r2 = (r0[:, 0] - r2) * 0.5
    r3 = (r0[:, 1] - r3) * 0.5
    r2 = r2 + r4 * dy + r6 * dx
    r3 = r3 + r6 * dy + r5 * dx
    damping = _border_damping(height, width, r0.device)
    r2, r3, r4, r5, r6 = (r * damping for r in (r2, r3, r4, r5, r6))
    return torch.stack([r4 * r4 + r6 * r6, (r4 + r5) * r6, r5 * r5 + r6 * r6, r4 * r2 + r6 * r3, r6 * r2 + r5 * r3], dim=1)


def solve_flow(matrices: torch.Tensor, winsize: int) -> torch.Tensor:
    """OpenCV's FarnebackUpdateFlow_Blur: a winsize box average of (N, 5, H, W) (replicated border, float64),
    then G flow = h per pixel. (N, 2, H, W) float32 flow (dx, dy) out."""
    m = winsize // 2
    padded = F.pad(matrices.double(), (m, m, m, m), mode="replicate")
    # Running sums, as OpenCV's (in float64 there too): each window's sum is the difference of two cumulative
    # sums, two additions per pixel and direction whatever winsize. avg_pool2d's window sums were 36 of
    # warp_error's 123 ms of GPU time per default-suite run at 640x360 (H200); with running sums the suite's
    # run took 0.430 against 0.439 s, its values unchanged (benchmarks/RESULTS.md, the fourteenth session).
    averages = box_sums(box_sums(padded, winsize, dim=2), winsize, dim=3) / (winsize * winsize)
    g11, g12, g22, h1, h2 = averages.unbind(1)
    inverse_det = 1.0 / (g11 * g22 - g12 * g12 + 1e-3)
    return torch.stack([(g11 * h2 - g12 * h1) * inverse_det, (g22 * h1 - g12 * h2) * inverse_det], dim=1).float()


def box_sums(values: torch.Tensor, size: int, *, dim: int) -> torch.Tensor:
    """Sums of every ``size`` consecutive values along ``dim`` ('valid': the dimension shrinks by size - 1).

    >>> box_sums(torch.arange(5.0), 3, dim=0).tolist()
    [3.0, 6.0, 9.0]
    """
    running = values.cumsum(dim)
    first = running.narrow(dim, size - 1, 1)
    rest = running.narrow(dim, size, running.shape[dim] - size) - running.narrow(dim, 0, running.shape[dim] - size)
    return torch.cat([first, rest], dim=dim)


def farneback(source: torch.Tensor, target: torch.Tensor, **params: float | bool | None) -> torch.Tensor:
    """Dense flow from 8-bit grayscale ``source`` to ``target`` images (N, H, W) (any dtype holding 0..255):
    (N, H, W, 2) float32 with source(y, x) ~ target(y + flow[..., 1], x + flow[..., 0]), as
    ``cv2.calcOpticalFlowFarneback(source, target, None, pyr_scale, levels, winsize, iterations, poly_n,
    poly_sigma, 0)`` per pair; ``params`` are :func:`farneback_pairs`'s."""
    pairs = torch.arange(len(source), device=source.device)
    return farneback_pairs(torch.cat([source, target]), pairs, pairs + len(source), **params)


def farneback_pairs(images: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor, *, pyr_scale: float = 0.5,
                    levels: int = 3, winsize: int = 15, iterations: int = 3, poly_n: int = 5,
                    poly_sigma: float = 1.2, fused: bool | None = None) -> torch.Tensor:
    """The flows from ``images[sources[i]]`` to ``images[targets[i]]`` of 8-bit grayscale images (M, H, W):
    (P, H, W, 2) for P index pairs, as :func:`farneback`. Each image's pyramid and polynomial expansion is
    computed once however many flows it is in: in a clip's consecutive pairs, both directions, a frame is
    in four flows (warp_error). ``fused``: the refinement iterations in flow_kernels' Triton kernels (True;
    on the CPU only where Triton interprets them, in tests) or in torch ops (False); by default
    :func:`fused_by_default`."""
    height, width = images.shape[-2:]
    fused = fused_by_default(images.device) if fused is None else fused
    kernels = importlib.import_module("foresight_eval.metrics.flow_kernels") if fused else None
    scale = 1.0
    for k in range(levels):
        scale *= pyr_scale
        if width * scale < MIN_LEVEL_SIZE or height * scale < MIN_LEVEL_SIZE:
            levels = k
            break
    images = images.float()[:, None]  # (M, 1, H, W)
    flow = None
    for k in range(levels, -1, -1):
        scale = pyr_scale**k
        sigma = (1.0 / scale - 1) * 0.5
        size = max(int(round(sigma * 5)) | 1, 3)
        level_size = (int(round(height * scale)), int(round(width * scale)))
        blurred = _blur_reflect101(images, _opencv_gaussian_kernel(size, sigma, images.device))
        level = blurred if level_size == (height, width) else F.interpolate(
            blurred, size=level_size, mode="bilinear", align_corners=False)
        coefficients = poly_expansion(level, poly_n, poly_sigma)
        if flow is None:
            flow = torch.zeros(len(sources), 2, *level_size, device=coefficients.device)
        else:
            flow = F.interpolate(flow, size=level_size, mode="bilinear", align_corners=False) * (1.0 / pyr_scale)
        if kernels is not None:
            flow = kernels.refine_flows(coefficients, sources, targets, flow, _border_damping(*level_size, flow.device),
                                        winsize=winsize, iterations=iterations)
        else:
            flow = _refine_in_torch_ops(coefficients[sources], coefficients[targets], flow, winsize, iterations)
    return flow.permute(0, 2, 3, 1).contiguous()


def _refine_in_torch_ops(r0: torch.Tensor, r1: torch.Tensor, flow: torch.Tensor, winsize: int,
                         iterations: int) -> torch.Tensor:
    """One pyramid level's refinements of ``flow`` (flows, 2, H, W) given both images' coefficients per flow."""
    matrices = update_matrices(r0, r1, flow)
    for i in range(iterations):
        flow = solve_flow(matrices, winsize)
        if i < iterations - 1:
            matrices = update_matrices(r0, r1, flow)
    return flow


def fused_by_default(device: torch.device) -> bool:
    """Whether :func:`farneback_pairs` refines flows in flow_kernels' fused kernels by default: on a GPU with
    :data:`FUSED_ON_GPU`, if they run there (:func:`fused_kernels_run`)."""
    return FUSED_ON_GPU and device.type == "cuda" and fused_kernels_run(device)


@functools.lru_cache(maxsize=None)
def fused_kernels_run(device: torch.device) -> bool:
    """Whether flow_kernels' kernels compile and run on ``device``, tried once per device on a small flow. A
    missing Triton or a failing compile (no C compiler for its launcher, an unsupported GPU) warns."""
    try:
        kernels = importlib.import_module("foresight_eval.metrics.flow_kernels")  # imports Triton
        images = torch.zeros(2, 1, MIN_LEVEL_SIZE, MIN_LEVEL_SIZE, device=device)
        first, second = torch.tensor([0], device=device), torch.tensor([1], device=device)
        kernels.refine_flows(poly_expansion(images, 5, 1.1), first, second,
                             torch.zeros(1, 2, MIN_LEVEL_SIZE, MIN_LEVEL_SIZE, device=device),
                             _border_damping(MIN_LEVEL_SIZE, MIN_LEVEL_SIZE, device), winsize=5, iterations=2)
    except Exception as exc:  # noqa: BLE001 - an optional accelerated path: any failure falls back, said once
        warnings.warn(f"Farnebäck flow: the Triton kernels do not run on {device} ({type(exc).__name__}: {exc}); "
                      "refining in torch ops", RuntimeWarning, stacklevel=2)
        return False
    return True
