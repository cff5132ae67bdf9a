"""Farnebäck's refinement iterations as three fused Triton kernels, for :mod:`foresight_eval.metrics.flow_torch`
on a GPU.

Why by hand: in torch ops one iteration of one pyramid level is about 40 kernels, each reading and writing
whole (flows, 5, H, W) tensors (the sampling of the second image's coefficients, some twenty elementwise
steps, float64 running sums, the solve), and warp_error's flow took 20.3 ms of GPU time per batch of 16
frame pairs of 640x360 in about 1,500 kernels (H200, benchmarks/RESULTS.md, the twenty-first session): most
of the default suite's time on the GPU once the frames are decoded. ``torch.compile`` fuses such chains but
compiles each new shape for seconds to minutes (three frame sizes are twelve pyramid shapes), which a scoring
run of seconds does not repay. These kernels take any shape: Triton compiles them once per GPU architecture
and a few variants of their integer arguments (divisible by 16 or not), and caches them on disk. Per iteration:

1. :func:`_vertical_sums_kernel`: the ``winsize`` sums down each column of the five matrix entries (replicated
   border), in float64 as OpenCV's running sums;
2. :func:`_solve_kernel`: the sums along each row, the 2x2 solve of each pixel's flow, and (but after the last
   iteration) the next iteration's matrices at that flow, which depend on that pixel's flow alone.

:func:`_matrices_kernel` makes a level's first matrices from the flow upsampled from the coarser level. The
matrices follow OpenCV's FarnebackUpdateMatrices (modules/video/src/optflowgf.cpp) in float32, including its
bilinear weights (the torch-op path goes through ``grid_sample``'s normalised positions instead); the box sums
and the solve are float64 as there. tests/test_flow_torch.py runs these kernels in Triton's interpreter on
the CPU against the torch-op path and OpenCV's flow; tests/test_gpu.py on a GPU.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

BLOCK = 512  # pixels per program on a GPU: 4 warps of 128-bit loads of float32
# Per program in Triton's interpreter (tensors on the CPU: the tests), which runs one program at a time in NumPy.
INTERPRETED_BLOCK = 1 << 14


@triton.jit
def _bilinear(plane, corner, a00, a01, a10, a11, width, inside):
    """The bilinear value of one coefficient plane at ``corner`` (the top-left neighbour's offset) and weights."""
    top = (a00 * tl.load(plane + corner, mask=inside, other=0.0)
           + a01 * tl.load(plane + corner + 1, mask=inside, other=0.0))
    bottom = (a10 * tl.load(plane + corner + width, mask=inside, other=0.0)
              + a11 * tl.load(plane + corner + width + 1, mask=inside, other=0.0))
    return top + bottom


@triton.jit
def _store_matrices(coefficients, sources, targets, damping, matrices, flow_index, pixel, dx, dy, height, width,
                    valid):
    """FarnebackUpdateMatrices for one block of pixels of flow ``flow_index`` given their flow (dx, dy): the
    entries G11, G12, G22, h1, h2 to ``matrices`` (flows, 5, H, W)."""
    plane_size = height * width
    x = pixel % width
    y = pixel // width
    source_base = tl.load(sources + flow_index, mask=valid, other=0).to(tl.int64) * 5 * plane_size
    target_base = tl.load(targets + flow_index, mask=valid, other=0).to(tl.int64) * 5 * plane_size
    fx = x.to(tl.float32) + dx
    fy = y.to(tl.float32) + dy
    # OpenCV samples the second image where all four neighbours lie in it, and uses the first image's alone elsewhere.
    inside = valid & (fx >= 0) & (fx < width - 1) & (fy >= 0) & (fy < height - 1)
    x1 = tl.floor(fx)
    y1 = tl.floor(fy)
    ax = fx - x1
    ay = fy - y1
    a00 = (1.0 - ax) * (1.0 - ay)
    a01 = ax * (1.0 - ay)
    a10 = (1.0 - ax) * ay
    a11 = ax * ay
    corner = tl.where(inside, y1.to(tl.int32) * width + x1.to(tl.int32), 0)
    first = coefficients + source_base + pixel
    second = coefficients + target_base
    r0_0 = tl.load(first, mask=valid, other=0.0)
    r0_1 = tl.load(first + plane_size, mask=valid, other=0.0)
    r0_2 = tl.load(first + 2 * plane_size, mask=valid, other=0.0)
    r0_3 = tl.load(first + 3 * plane_size, mask=valid, other=0.0)
    r0_4 = tl.load(first + 4 * plane_size, mask=valid, other=0.0)
    r2 = _bilinear(second, corner, a00, a01, a10, a11, width, inside)
    r3 = _bilinear(second + plane_size, corner, a00, a01, a10, a11, width, inside)
    r4 = tl.where(inside, (r0_2 + _bilinear(second + 2 * plane_size, corner, a00, a01, a10, a11, width, inside)) * 0.5,
                  r0_2)
    r5 = tl.where(inside, (r0_3 + _bilinear(second + 3 * plane_size, corner, a00, a01, a10, a11, width, inside)) * 0.5,
                  r0_3)
    r6 = tl.where(inside, (r0_4 + _bilinear(second + 4 * plane_size, corner, a00, a01, a10, a11, width, inside)) * 0.25,
                  r0_4 * 0.5)
    r2 = (r0_0 - r2) * 0.5
    r3 = (r0_1 - r3) * 0.5
    r2 = r2 + r4 * dy + r6 * dx
    r3 = r3 + r6 * dy + r5 * dx
    scale = tl.load(damping + pixel, mask=valid, other=0.0)
    r2 *= scale
    r3 *= scale
    r4 *= scale
    r5 *= scale
    r6 *= scale
    out = matrices + flow_index.to(tl.int64) * 5 * plane_size + pixel
    tl.store(out, r4 * r4 + r6 * r6, mask=valid)
    tl.store(out + plane_size, (r4 + r5) * r6, mask=valid)
    tl.store(out + 2 * plane_size, r5 * r5 + r6 * r6, mask=valid)
    tl.store(out + 3 * plane_size, r4 * r2 + r6 * r3, mask=valid)
    tl.store(out + 4 * plane_size, r6 * r2 + r5 * r3, mask=valid)


@triton.jit
def _matrices_kernel(coefficients, sources, targets, damping, flow, matrices, height, width, pixels,
                     BLOCK_SIZE: tl.constexpr):
    """The matrices of every pixel of every flow (flows, 2, H, W) -> (flows, 5, H, W); ``pixels`` = flows x H x W."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    valid = offsets < pixels
    plane_size = height * width
    flow_index = offsets // plane_size
    pixel = (offsets % plane_size).to(tl.int32)
    at = flow + flow_index * 2 * plane_size + pixel
    dx = tl.load(at, mask=valid, other=0.0)
    dy = tl.load(at + plane_size, mask=valid, other=0.0)
    _store_matrices(coefficients, sources, targets, damping, matrices, flow_index, pixel, dx, dy, height, width, valid)


@triton.jit
def _vertical_sums_kernel(matrices, sums, height, width, values, radius, BLOCK_SIZE: tl.constexpr):
    """Each value's sum over the 2 radius + 1 rows around it (replicated border), float32 in, float64 out;
    ``values`` = flows x 5 x H x W."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    valid = offsets < values
    plane_size = height * width
    plane_start = offsets - offsets % plane_size
    pixel = (offsets % plane_size).to(tl.int32)
    x = pixel % width
    y = pixel // width
    total = tl.zeros([BLOCK_SIZE], dtype=tl.float64)
    for shift in range(-radius, radius + 1):
        row = tl.minimum(tl.maximum(y + shift, 0), height - 1)
        total += tl.load(matrices + plane_start + row * width + x, mask=valid, other=0.0).to(tl.float64)
    tl.store(sums + offsets, total, mask=valid)


@triton.jit
def _row_sum(plane, row_start, x, width, radius, valid, BLOCK_SIZE: tl.constexpr):
    """The sum over the 2 radius + 1 columns around ``x`` of one row of a float64 plane (replicated border)."""
    total = tl.zeros([BLOCK_SIZE], dtype=tl.float64)
    for shift in range(-radius, radius + 1):
        column = tl.minimum(tl.maximum(x + shift, 0), width - 1)
        total += tl.load(plane + row_start + column, mask=valid, other=0.0)
    return total


@triton.jit
def _solve_kernel(sums, coefficients, sources, targets, damping, flow, matrices, height, width, pixels, radius,
                  inverse_area, UPDATE_MATRICES: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    """The row sums of the column sums (the box average, times ``inverse_area``), each pixel's flow from
    G flow = h to ``flow`` (flows, 2, H, W) float32, and with ``UPDATE_MATRICES`` the matrices at that flow."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    valid = offsets < pixels
    plane_size = height * width
    flow_index = offsets // plane_size
    pixel = (offsets % plane_size).to(tl.int32)
    x = pixel % width
    row_start = pixel - x
    planes = sums + flow_index * 5 * plane_size
    g11 = _row_sum(planes, row_start, x, width, radius, valid, BLOCK_SIZE) * inverse_area
    g12 = _row_sum(planes + plane_size, row_start, x, width, radius, valid, BLOCK_SIZE) * inverse_area
    g22 = _row_sum(planes + 2 * plane_size, row_start, x, width, radius, valid, BLOCK_SIZE) * inverse_area
    h1 = _row_sum(planes + 3 * plane_size, row_start, x, width, radius, valid, BLOCK_SIZE) * inverse_area
    h2 = _row_sum(planes + 4 * plane_size, row_start, x, width, radius, valid, BLOCK_SIZE) * inverse_area
    inverse_det = 1.0 / (g11 * g22 - g12 * g12 + 1e-3)
    dx = ((g11 * h2 - g12 * h1) * inverse_det).to(tl.float32)
    dy = ((g22 * h1 - g12 * h2) * inverse_det).to(tl.float32)
    at = flow + flow_index * 2 * plane_size + pixel
    tl.store(at, dx, mask=valid)
    tl.store(at + plane_size, dy, mask=valid)
    if UPDATE_MATRICES:
        _store_matrices(coefficients, sources, targets, damping, matrices, flow_index, pixel, dx, dy, height, width,
                        valid)


def refine_flows(coefficients: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor, flow: torch.Tensor,
                 damping: torch.Tensor, *, winsize: int, iterations: int) -> torch.Tensor:
    """One pyramid level's ``iterations`` refinements of the flows from image ``sources[i]`` to ``targets[i]``:
    ``coefficients`` (M, 5, H, W) float32 polynomial expansion of the M images, ``flow`` (flows, 2, H, W) the
    starting flows, ``damping`` (H, W) the border weights. The refined flows (flows, 2, H, W) float32 out."""
    if winsize % 2 == 0:
        raise ValueError(f"winsize must be odd, got {winsize}")
    count, _, height, width = flow.shape
    coefficients, flow, damping = coefficients.contiguous(), flow.contiguous(), damping.contiguous()
    sources, targets = sources.to(torch.int32).contiguous(), targets.to(torch.int32).contiguous()
    matrices = torch.empty(count, 5, height, width, dtype=torch.float32, device=flow.device)
    sums = torch.empty(count, 5, height, width, dtype=torch.float64, device=flow.device)
    refined = torch.empty_like(flow)
    pixels = count * height * width
    block = BLOCK if flow.is_cuda else INTERPRETED_BLOCK
    per_pixel, per_value = (triton.cdiv(pixels, block),), (triton.cdiv(pixels * 5, block),)
    # Triton launches on the current device's stream: make that the tensors' GPU (a run on cuda:1, say).
    with torch.cuda.device(flow.device) if flow.is_cuda else contextlib.nullcontext():
        _matrices_kernel[per_pixel](coefficients, sources, targets, damping, flow, matrices, height, width, pixels,
                                    BLOCK_SIZE=block)
        for i in range(iterations):
            _vertical_sums_kernel[per_value](matrices, sums, height, width, pixels * 5, winsize // 2, BLOCK_SIZE=block)
            _solve_kernel[per_pixel](sums, coefficients, sources, targets, damping, refined, matrices, height, width,
                                     pixels, winsize // 2, 1.0 / (winsize * winsize),
                                     UPDATE_MATRICES=i < iterations - 1, BLOCK_SIZE=block)
    return refined if iterations else flow
