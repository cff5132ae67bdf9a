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
every later call replays. At most ``most_graphs`` graphs are kept per function, least recently used out
first: each holds its intermediate tensors in a memory pool of its own for as long as it lives (about the
eager peak of one call). A capture that fails (an operation that waits for the host: :class:`CaptureFailed`)
turns capturing off for that function, with a warning; its calls run eagerly from then on. An error of the
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
from typing import Any

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


def capture_cuda_graph(fn: Callable[..., Any], tensors: tuple[torch.Tensor, ...],
                       static: dict[str, Any]) -> tuple[Replay, Any]:
    """Capture ``fn(*tensors, **static)`` as a CUDA graph: (a function that replays it on new inputs of the
    same signature and returns copies of its outputs, the result of the warm-up run on ``tensors``). An error
    of the warm-up run is raised as it is; a failure of the capture as :class:`CaptureFailed`."""
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

    def replay(new: tuple[torch.Tensor, ...]) -> Any:
        with torch.cuda.device(device):  # a graph is launched on the current device's stream
            for static_input, tensor in zip(inputs, new):
                static_input.copy_(tensor)
            graph.replay()
        return _clone(outputs)

    return replay, first


class GraphedFunction:
    """``fn`` (tensors and keyword arguments in, a tensor or a tuple of tensors out, no host synchronisation
    inside), replayed from CUDA graphs on a GPU as the module's docstring describes.

    >>> double = GraphedFunction(lambda x, *, by: x * by)
    >>> double(torch.ones(2), by=2.0)  # on the CPU: fn itself
    tensor([2., 2.])
    """

    def __init__(self, fn: Callable[..., Any], *, most_graphs: int = 4,
                 capture: Callable[..., tuple[Replay, Any]] | None = None):
        self.fn, self.most_graphs, self._capture = fn, most_graphs, capture
        self._graphs: collections.OrderedDict[Hashable, Replay] = collections.OrderedDict()
        self._seen: collections.Counter[Hashable] = collections.Counter()
        self.capturing = True  # False after a failed capture

    @staticmethod
    def graphs_run_on(tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cuda"

    def __call__(self, *tensors: torch.Tensor, **static: Any) -> Any:
        if not (self.capturing and graphs_enabled() and self.graphs_run_on(tensors[0])):
            return self.fn(*tensors, **static)
        key = (tuple((tuple(t.shape), t.dtype, t.device) for t in tensors), tuple(sorted(static.items())))
        replay = self._graphs.get(key)
        if replay is not None:
            self._graphs.move_to_end(key)
            return replay(tensors)
        self._seen[key] += 1
        if self._seen[key] < 2:
            return self.fn(*tensors, **static)
        try:
            # capture_cuda_graph looked up at the call, so that a test can stand in for CUDA's
            replay, first = (self._capture or capture_cuda_graph)(self.fn, tensors, static)
        except CaptureFailed as exc:  # an uncapturable operation: run eagerly from now on
            self.capturing = False
            self._graphs.clear()
            warnings.warn(f"{getattr(self.fn, '__qualname__', self.fn)}: CUDA graph capture failed, running "
                          f"without graphs ({exc})", RuntimeWarning, stacklevel=2)
            return self.fn(*tensors, **static)
        self._graphs[key] = replay
        if len(self._graphs) > self.most_graphs:
            self._graphs.popitem(last=False)  # its graph and memory pool are freed with it
        return first
