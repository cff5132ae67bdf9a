"""Scoring under `torchrun`: which rank this process is, its share of the pairs, and gathering results.

Ranks exchange only Python objects (per-pair results), so the gloo backend serves on CPU and GPU
machines alike; no tensor collective is needed. Pairs are sharded round-robin over their sorted order,
so a given world size always gives each rank the same pairs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from foresight_eval.errors import UsageError, field_ref
from foresight_eval.workers import stop_idle_workers

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: list[T]) -> list[T]:
        return items[self.rank :: self.size]


def current_world() -> World:
    """The world `torchrun` describes in the environment; joins its process group on first use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        # Long timeout: ranks wait for each other at the end, and clips take a while to score.
        dist.init_process_group(backend="gloo", timeout=timedelta(hours=6))
        # Left to the interpreter's teardown, gloo's connection threads are sometimes destroyed while still
        # joinable: the rank aborts ("terminate called without an active exception", SIGABRT) after its
        # work is done, in about one run in five on the 2-core machine, failing the whole torchrun job.
        atexit.register(dist.destroy_process_group)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def leave_if_not_main(code: int | str | None) -> None:
    """End this process now, with exit status ``code`` (``SystemExit``'s), when it is a rank other than 0 of a
    process group: its work is with rank 0 by then. The interpreter's finalization is skipped (``os._exit``,
    after flushing the standard streams) because it can race gloo's worker threads. A collective's work object
    holds its tensors, and the thread that drops it last frees them: when that is a gloo thread after the
    interpreter began to finalize, the thread asks for the GIL, CPython ends it (``pthread_exit``) inside a C++
    destructor, and the process aborts ("terminate called without an active exception"; the core dump of such
    a rank 1 of `generate`: ``ProcessGroupGloo::runLoop`` -> ``~AsyncBarrierWork`` -> ``decref_pyobject`` ->
    ``take_gil`` -> ``pthread_exit``). Rank 1 leaves right after its last collective, so it was the one to abort,
    in about one run of two-rank `generate` in 40 on the 2-core machine. Rank 0 goes on to merge and write the
    run first, and exits as usual. The metric workers kept for a next run (``workers.IDLE_POOLS_KEPT``) are
    stopped first: ``os._exit`` would leave them waiting for work (on Linux they would also see this process
    end, ``workers._leave_with``)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        return
    stop_idle_workers()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0 if code is None else code if isinstance(code, int) else 1)


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank of a multi-GPU node takes the GPU of its local rank."""
    if world.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return device


def current_device(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which ``device`` (a GPU) is this thread's current CUDA device, the previous one restored
    after; no-op for other devices. CUDA work that names no device goes to the current one: `torch.cuda.graph`
    captures on a stream of it. Without this, rank 1 of a two-GPU run (scoring on ``cuda:1`` while ``cuda:0``
    stayed current) had every CUDA graph capture fail and scored without graphs, at half rank 0's speed
    (benchmarks/RESULTS.md, the tenth session)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def gather_to_main(payload: Any, world: World) -> list[Any] | None:
    """Every rank's ``payload``, in rank order, on rank 0 (None elsewhere)."""
    if not world.distributed:
        return [payload]
    gathered = [None] * world.size if world.is_main else None
    dist.gather_object(payload, gathered, dst=0)
    return gathered


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:  # torch's message lists twenty device types; these are the ones scoring uses
        raise UsageError(f"{field_ref('device', str(device))}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{field_ref('device', 'cuda')} asked for, but no CUDA device is available")
    return resolved
