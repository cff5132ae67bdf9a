"""Copies between the host and a GPU that do not make the host wait for the GPU's queue of work: the thread
that drives a GPU queues the next batch's kernels while the device computes (docs/speed.md)."""

from __future__ import annotations

import numpy as np
import torch


def to_host_async(*tensors: torch.Tensor) -> tuple[list[np.ndarray], torch.cuda.Event | None]:
    """Host copies of device tensors, without waiting for the device: (their NumPy arrays, the CUDA event
    after which they hold the values, None when no tensor was on a device; CPU tensors are not copied). The
    copies go to page-locked memory, queued behind the work that makes the tensors; read the arrays only
    after the event (``WorkerPool.map_when_ready``). A plain ``.cpu()`` would make the host wait for the
    whole queue of the GPU at every call."""
    hosts, device = [], None
    for tensor in tensors:
        if tensor.device.type == "cpu":
            hosts.append(tensor)
        else:
            device = tensor.device
            hosts.append(torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor, non_blocking=True))
    event = None
    if device is not None:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
    return [host.numpy() for host in hosts], event


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor.to(device)`` without waiting for the device: a host tensor bound for a GPU goes through
    page-locked memory and is copied behind the queued work. From pageable memory CUDA synchronises the stream
    before the copy (cudaMemcpyAsync's documented behaviour), so every reference-cache entry read back on a GPU
    made the host wait for the GPU's whole queue."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
