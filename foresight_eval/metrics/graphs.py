"""Replaying a metric's fixed sequence of GPU operations as a CUDA graph.

Some metrics launch thousands of small kernels per batch: Farnebäck's flow for ``warp_error`` about 1,500
per batch of 16 frame pairs. On a GPU the host's time to launch them, not the GPU's time to run them, then
bounds the metric and the whole suite behind it (H200, 96 frame pairs of 640x360: warp_error took 0.27 s of
the host's time for 0.19 s of GPU time, in 9,168 kernels; benchmarks/RESULTS.md). A CUDA graph records the
launches once and replays them all with one call: the same kernels on the same shapes, so the same values.

Why by hand: ``torch.compile(mode="reduce-overhead")`` also replays CUDA graphs, but compiles each new
shape first, tens of seconds against a scoring run's seconds. ``torch.cuda.make_graphed_callables`` is
for modules trained with autograd. What is left to write is a cache of captured graphs keyed by the inputs'
shapes, which is this module.

The policy, per :class:`GraphedFunction`: a call whose inputs are not on a GPU runs as it is. On a GPU, the
first call with a new input signature (shapes, dtypes, device, static arguments) runs eagerly, since a
shape seen once (a clip's short last batch) would not repay its capture; the second captures (one
eager warm-up run on a side stream, whose result is returned, then the capture, which runs nothing) and
every later call replays. At most ``most_graphs`` graphs are kept per function (16): each holds its
intermediate tensors in a memory pool of its own for as long as it lives. When they are all taken, a new
signature takes the place of the least used one only if it has been called more often, counted over the
process (ties keep the graph in place). Not least recently used out first: clips of three frame sizes, each
with a short last batch, are six signatures in a cycle, and with the four places of before that policy
dropped each graph before its next use and captured it anew at every batch, which costs more than an eager
call (the default suite on the issue-17 clip shape, 1 x H200: 1.56 s, 1.20 s with graphs off, 0.82 s kept by
use with four places; benchmarks/RESULTS.md, the thirteenth session). Nor counts that age: halved now and
then, the counts of signatures used about as often cross back and forth, and each crossing is a capture.
The issue's clip shape is nine signatures for a function whose first batch of a clip differs from the others
(the motion masks' 15 frames after the one that seeds the background, tc's without the previous frame's
moments); with eight places and counts halved every 32 calls, six of them were captured anew at every run
of stand-in calls (1 x H200: 1.08 s a run against 0.73 s with sixteen places and counts that do not age; the
fourteenth session). On the stand-in calls of tests/test_cuda_graphs.py, 24 clips of mixed lengths at three
sizes (22 signatures) settle into 16 captures a run with aging counts and sixteen places (27 with eight), and
into none after the second run with counts that do not age and sixteen places (three a run with eight). The
memory budget, not the number of places, bounds what graphs hold: the graphs of all functions on one GPU
hold at most :data:`GRAPH_MEMORY_SHARE` of its memory, and a graph that would go past it is dropped once
captured and its signature runs eagerly from then on (large frames: a graph of warp_error holds 24.5 GB at
1920x1080). A capture that fails (an operation that waits for the host: :class:`CaptureFailed`) turns
capturing off for that function, with a warning; its calls run eagerly from then on. An error of the
function itself (bad arguments), raised by its warm-up run, reaches the caller as any call's would and
leaves capturing on.

``FORESIGHT_EVAL_CUDA_GRAPHS=0`` in the environment turns capturing off everywhere (to compare, or to
debug a kernel with the profiler's per-launch view).
"""

from __future__ import annotations

import collections
import os
import warnings
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import torch

Replay = Callable[[tuple[torch.Tensor, ...]], Any]


class CaptureFailed(RuntimeError):
    """The function ran, but its launches could not be recorded as a CUDA graph."""


def graphs_enabled() -> bool:
    return os.environ.get("FORESIGHT_EVAL_CUDA_GRAPHS", "1") != "0"


def _clone(outputs: Any) -> Any:
    """The graph's outputs live in its pool and are overwritten by the next replay: the caller gets copies."""
    if isinstance(outputs, torch.Tensor):
        return outputs.clone()
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_clone(item) for item in outputs)
    raise TypeError(f"a graphed function returns tensors or tuples of them, not {type(outputs).__name__}")


class Captured(NamedTuple):
    replay: Replay  # replays the graph on new inputs of the same signature, returns copies of its outputs
    first: Any  # the result of the warm-up run on the capturing call's inputs
    held_bytes: int  # the GPU memory the graph keeps while it lives (its private memory pool)


def capture_cuda_graph(fn: Callable[..., Any], tensors: tuple[torch.Tensor, ...],
                       static: dict[str, Any]) -> Captured:
    """Capture ``fn(*tensors, **static)`` as a CUDA graph. An error of the warm-up run is raised as it is; a
    failure of the capture as :class:`CaptureFailed`."""
    device = tensors[0].device
    inputs = tuple(tensor.clone() for tensor in tensors)  # the graph reads these addresses at every replay
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # lazy initialisations (cuDNN plans, workspaces) happen outside the capture
        first = fn(*inputs, **static)
    caller = torch.cuda.current_stream(device)
    caller.wait_stream(side)
    for tensor in (first,) if isinstance(first, torch.Tensor) else first:
        tensor.record_stream(caller)  # made on the side stream, read on the caller's: freed after that use
    graph = torch.cuda.CUDAGraph()
    # thread_local: the other threads of a run (decoding into page-locked memory, handing copied maps to the
    # metric workers) keep calling CUDA while this one captures; only this thread's calls must be capturable.
    # stream=side: torch.cuda.graph's own capture stream is made once per process, on whichever device was current
    # then, and a capture on a stream of another device than its inputs' fails.
    try:
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            outputs = fn(*inputs, **static)
    except Exception as exc:  # noqa: BLE001 - the warm-up above ran: whatever fails here is the capture's
        raise CaptureFailed(f"{type(exc).__name__}: {exc}") from exc
    # The segments of the graph's own pool. Not the growth of the allocator's reserve over the capture: where
    # memory is short the allocator frees cached blocks to make the pool's room, and that growth read 0 bytes
    # for warp_error's 24.5 GB graphs at 1920x1080 (1 x H200).
    held_bytes = sum(segment["total_size"] for segment in
                     torch.cuda.memory.memory_snapshot(graph.pool(), include_traces=False)
                     if segment["device"] == device.index)

    def replay(new: tuple[torch.Tensor, ...]) -> Any:
        with torch.cuda.device(device):  # a graph is launched on the current device's stream
            for static_input, tensor in zip(inputs, new):
                static_input.copy_(tensor)
            graph.replay()
        return _clone(outputs)

    return Captured(replay, first, held_bytes)


# What the graphs of every GraphedFunction hold, per GPU; at most GraphedFunction.memory_budget(device).
_held_bytes: collections.Counter[torch.device] = collections.Counter()
# The share of a GPU's memory that graphs may hold: the rest is left to eager calls, models and the user's
# own tensors. A graph keeps one call's intermediate tensors, more than the call's eager peak: warp_error's of
# 16 frame pairs holds 2.9 GB at 640x360, 11 GB at 1280x720, 24.5 GB at 1920x1080, where an eager call's peak
# is 2.0, 7.9 and 17.5 GB; the default suite's graphs of one batch shape 5.4, 21 and 46 GB (1 x H200,
# benchmarks/RESULTS.md, the thirteenth session).
GRAPH_MEMORY_SHARE = 1 / 3


class GraphedFunction:
    """``fn`` (tensors and keyword arguments in, a tensor or a tuple of tensors out, no host synchronisation
    inside), replayed from CUDA graphs on a GPU as the module's docstring describes.

    >>> double = GraphedFunction(lambda x, *, by: x * by)
    >>> double(torch.ones(2), by=2.0)  # on the CPU: fn itself
    tensor([2., 2.])
    """

    def __init__(self, fn: Callable[..., Any], *, most_graphs: int = 16,
                 capture: Callable[..., Captured] | None = None):
        self.fn, self.most_graphs, self._capture = fn, most_graphs, capture
        self._graphs: dict[Hashable, Captured] = {}
        self._calls: collections.Counter[Hashable] = collections.Counter()  # per signature, replays included
        self._over_budget: set[Hashable] = set()  # signatures whose graph did not fit: eager from then on
        self.capturing = True  # False after a failed capture

    @staticmethod
    def graphs_run_on(tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cuda"

    @staticmethod
    def memory_budget(device: torch.device) -> int:
        """The bytes that graphs on ``device`` may hold together: :data:`GRAPH_MEMORY_SHARE` of a GPU's."""
        return int(torch.cuda.get_device_properties(device).total_memory * GRAPH_MEMORY_SHARE)

    def __call__(self, *tensors: torch.Tensor, **static: Any) -> Any:
        if not (self.capturing and graphs_enabled() and self.graphs_run_on(tensors[0])):
            return self.fn(*tensors, **static)
        key = (tuple((tuple(t.shape), t.dtype, t.device) for t in tensors), tuple(sorted(static.items())))
        self._calls[key] += 1
        graph = self._graphs.get(key)
        if graph is not None:
            return graph.replay(tensors)
        if self._calls[key] < 2 or key in self._over_budget:
            return self.fn(*tensors, **static)
        if len(self._graphs) >= self.most_graphs:
            least_used = min(self._graphs, key=self._calls.__getitem__)  # the first captured among equals
            if self._calls[least_used] >= self._calls[key]:
                return self.fn(*tensors, **static)
            self._drop(least_used)
        try:
            # capture_cuda_graph looked up at the call, so that a test can stand in for CUDA's
            graph = (self._capture or capture_cuda_graph)(self.fn, tensors, static)
        except CaptureFailed as exc:  # an uncapturable operation: run eagerly from now on
            self.capturing = False
            for held in list(self._graphs):
                self._drop(held)
            warnings.warn(f"{getattr(self.fn, '__qualname__', self.fn)}: CUDA graph capture failed, running "
                          f"without graphs ({exc})", RuntimeWarning, stacklevel=2)
            return self.fn(*tensors, **static)
        device = tensors[0].device
        if _held_bytes[device] + graph.held_bytes > self.memory_budget(device):
            self._over_budget.add(key)  # dropped at once: its result is the warm-up run's
            return graph.first
        _held_bytes[device] += graph.held_bytes
        self._graphs[key] = graph._replace(first=None)  # the warm-up's result is the caller's, not kept
        return graph.first

    def _drop(self, key: Hashable) -> None:
        """Free a graph (its memory pool goes with it)."""
        _held_bytes[key[0][0][2]] -= self._graphs.pop(key).held_bytes  # the key's first tensor's device
