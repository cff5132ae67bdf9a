"""The metric plugin interface.

Each metric family keeps a pure functional core (tensors in, tensor out) and a thin stateful wrapper.
Every wrapper derives from :class:`Metric`, the part common to all of them: its declaration (``info``,
``defaults``, ``choices``), parameter checking, ``setup``, ``describe`` and ``compute_set``. Two families
derive from it side by side, each with only the hooks its driver calls:

* :class:`FrameBatchMetric`: metrics of paired frames, which the scoring engine drives clip by clip:
  per clip ``reset``, ``update`` for each :class:`FrameBatch`, ``compute``. Its ready-made bases:
  :class:`FrameMetric` (a value per frame pair, ``per_frame(batch)``) and :class:`ConsecutivePairMetric`
  (a value per consecutive pair of frames, ``pair_values(earlier, later)``);
* ``foresight_eval.metrics.latent.LatentMetric``: metrics of latent arrays, one ``score(pair)`` per file pair.

A metric keeps no batch on ``self``: whatever it needs of a batch (its frames, clip, frame rate, shared
work) arrives with the batch it is given.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.device_copies import to_device_async, to_host_async
from foresight_eval.errors import UsageError, did_you_mean
from foresight_eval.feature_cache import ReferenceCache, reference_sha256
from foresight_eval.workers import INLINE, Deferred, WorkerPool

# "none": a descriptive figure (an intrinsic dimension): never ranked; a gate on it names its own direction.
Direction = Literal["higher", "lower", "none"]


@dataclass(frozen=True)
class MetricInfo:
    """What the registry and the tables need to know about a metric, before running it."""

    name: str
    description: str
    direction: Direction
    unit: str = ""
    # "frames": paired (prediction, reference) frame batches; "latents": latent arrays.
    inputs: Literal["frames", "latents"] = "frames"
    # "frame": one value per frame (its video value is the mean); "video": one value per clip;
    # "set": one value over the whole run (e.g. COCO mAP), from ``compute_set``.
    granularity: Literal["frame", "video", "set"] = "frame"
    # Things the metric cannot run without, shown by `foresight-eval metrics`: "weights", "gpu", "annotations", ...
    needs: tuple[str, ...] = ()
    # Whether a plain `score` run without --metrics includes it. Unset (None): built-in metrics yes,
    # plugin metrics no; a plugin joins the default set only by declaring default=True.
    default: bool | None = None
    # The best value when it is not an extreme (foresight_eval.targets): a number (0.0 for a ``*_delta``),
    # or "reference", the reference video's own value (tc, flicker: judged through their ``*_delta``).
    # Ranking, "best" shading, gates and tiers then use the distance to it; ``direction`` stays descriptive.
    target: float | Literal["reference"] | None = None


@dataclass
class RunContext:
    """Run-wide facts a metric may use in ``setup``: the device, where weights are, extra inputs."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights_dir: Path | None = None
    # Extra per-run inputs keyed by name (for example reference annotations), added by other features.
    resources: dict[str, Any] = field(default_factory=dict)
    # Where a metric sends CPU-bound work to overlap the device's (foresight_eval.workers); inline by default.
    pool: WorkerPool = INLINE


@dataclass
class FrameBatch:
    """Aligned frames of one clip pair: (B, 3, H, W) float32 in [0, 1] on the scoring device."""

    video: str
    pred: torch.Tensor
    ref: torch.Tensor
    horizon: torch.Tensor  # (B,) int64, 1-based, counted after the context frames
    frame_index: torch.Tensor  # (B,) int64, 0-based index in the clip files
    fps: float | None = None  # the reference clip's frame rate; None for frame folders and arrays
    _shared: dict[Any, Any] = field(default_factory=dict, repr=False)
    # The reference frames as decoded, (B, H, W, 3) on the host (uint8 from video files), when the engine has
    # them: the reference cache's key hashes these, not ``ref`` (copying device frames back to hash them
    # would wait for the device at every batch).
    ref_decoded: torch.Tensor | None = field(default=None, repr=False)
    # The prediction frames as decoded, when ``pred`` is exactly them converted (not resized): the pixel metrics
    # take their exact 8-bit errors from these pairs on the CPU (foresight_eval.metrics.pixel).
    pred_decoded: torch.Tensor | None = field(default=None, repr=False)
    # Their :func:`reference_sha256`, when the engine hashed them ahead (in the decoding thread).
    ref_sha256: str | None = field(default=None, repr=False)

    def shared(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Work several metrics need from this batch (a backbone pass, flow, motion masks) done once:
        the first metric to ask computes it, the others get the same object. ``key`` must name
        everything the result depends on (the computation and its parameters)."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def head(self, count: int) -> FrameBatch:
        """The batch's first ``count`` frames as a batch of their own (the batch itself when that is all of
        them). Its shared work is shared with the other metrics that take the same frames, kept apart from
        the whole batch's: a result computed from fewer frames must not answer for all of them."""
        if count == len(self.horizon):
            return self
        return FrameBatch(self.video, self.pred[:count], self.ref[:count], self.horizon[:count],
                          self.frame_index[:count], self.fps, self._shared.setdefault(("head", count), {}),
                          ref_decoded=None if self.ref_decoded is None else self.ref_decoded[:count],
                          pred_decoded=None if self.pred_decoded is None else self.pred_decoded[:count])


@functools.lru_cache(maxsize=256)
def device_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor (filter taps, colour weights) on ``device``, made once per process: a tensor
    built on the host and copied to a GPU at every call makes the host wait for the GPU each time, and the
    GPU's queue runs dry. The result is shared: never modify it in place.

    >>> device_constant((1.0, 2.0, 1.0), torch.float64, torch.device("cpu"))
    tensor([1., 2., 1.], dtype=torch.float64)
    """
    return torch.tensor(values, dtype=dtype, device=device)


def conv_per_image(images: torch.Tensor, weight: torch.Tensor, *, grouped: bool | None = None) -> torch.Tensor:
    """``F.conv2d`` of one-channel images (M, 1, H, W) with K one-channel filters (K, 1, kh, kw), 'valid':
    (M, K, H - kh + 1, W - kw + 1).

    ``grouped`` (default: off the CPU) computes it as one grouped convolution with the M images as its
    channels, which PyTorch runs in its own depthwise kernel, in the images' precision. For a one-channel
    input cuDNN picks tensor-core kernels instead, with layout conversions around them: TF32 (a 10-bit
    mantissa) for float32 and a slow implicit GEMM for float64. Per default-suite run on an H200 (3 x 32
    frame pairs of 640x360) edge_f1's kernels took 51 ms that way and 19 ms this way, warp_error's 190 and
    163 ms. On the CPU the plain convolution is the fast one (PyTorch has no vectorised float64 depthwise
    kernel there).

    >>> images = torch.arange(8.0).view(2, 1, 2, 2)
    >>> conv_per_image(images, torch.ones(1, 1, 1, 2), grouped=True).flatten().tolist()
    [1.0, 5.0, 9.0, 13.0]
    """
    if not (images.device.type != "cpu" if grouped is None else grouped) or len(images) < 2:
        return F.conv2d(images, weight)
    count, filters = len(images), len(weight)
    out = F.conv2d(images.reshape(1, count, *images.shape[-2:]), weight.repeat(count, 1, 1, 1), groups=count)
    return out.view(count, filters, *out.shape[-2:])


class CopiedToHost(Deferred):
    """Device tensors on their way to the host (:func:`to_host_async`): ``result()`` waits for the copies, which
    are queued behind the work that makes the tensors, and returns ``combine`` of the host arrays (computed
    once). A metric's clip value or a clip's per-frame values, collected this way, let the host queue the next
    clip's work while the device finishes this one's: a ``float()`` at the end of each clip made the host wait
    for the whole of the device's queue, which then ran dry while the next clip's work was being queued."""

    def __init__(self, tensors: Sequence[torch.Tensor], combine: Callable[[list[np.ndarray]], Any]):
        self._hosts, self._ready = to_host_async(*tensors)
        self._combine = combine
        self._result: list[Any] = []  # the combined value, once read

    def result(self) -> Any:
        if not self._result:
            if self._ready is not None:
                self._ready.synchronize()
            self._result.append(self._combine(self._hosts))
        return self._result[0]

    def cancel(self) -> None:
        """Nothing to drop: the copies are queued already."""


def waits_for_device(tensor: torch.Tensor) -> bool:
    """Whether reading ``tensor`` on the host would wait for a device's queue of work (a GPU's)."""
    return tensor.device.type != "cpu"


def when_on_host(tensor: torch.Tensor, convert: Callable[[np.ndarray], Any]) -> Any:
    """``convert`` of the tensor's host array: now for a CPU tensor, else a :class:`CopiedToHost` of it (the
    engine waits for it when it finishes the clip, after queuing the next clip's work).

    >>> when_on_host(torch.tensor([1.0, 2.0]), lambda values: float(values.sum()))
    3.0
    """
    if not waits_for_device(tensor):
        return convert(tensor.numpy())
    return CopiedToHost([tensor], lambda hosts: convert(hosts[0]))


Item = TypeVar("Item")
Result = TypeVar("Result")


def over_threads(work: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``[work(item) for item in items]``, in order, spread over PyTorch's number of threads (the CPU budget of
    the run: ``torch.get_num_threads()``). For per-frame work in libraries that release the GIL and gain
    nothing from their own threads on one frame (OpenCV's Farnebäck flow and filters, scikit-image's Canny):
    on two cores it takes about half the time (``benchmarks/RESULTS.md``). Meanwhile OpenCV runs on one thread
    (:class:`_OneOpenCVThread`). An exception is raised as the loop would raise it.

    >>> over_threads(lambda x: x * x, [1, 2, 3])
    [1, 4, 9]
    """
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [work(item) for item in items]
    with _opencv_on_one_thread, ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, items))


class _OneOpenCVThread:
    """OpenCV on one thread while :func:`over_threads` spreads frames over threads, then as it was: each of
    those threads would otherwise hand its frame to OpenCV's own pool of a thread per CPU, all of them
    waiting on each other. The default suite on the 2-core machine, medians of 7 alternating rounds at the
    issue's clip sizes: 2.962 against 3.056 s (lower in 4 rounds of 7), and 3.105 against 3.161 s with OpenCV
    on one thread for the whole run (6 of 7; benchmarks/RESULTS.md, issue 17's seventeenth session). The
    worker processes run OpenCV on one thread for the same reason (``workers._worker_start``). Counted, so
    that calls in progress in several threads restore the count once, when the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    def __enter__(self) -> None:
        import cv2  # imported already by the metrics that use over_threads

        with self._lock:
            if not self._users:
                self._saved = cv2.getNumThreads()
                cv2.setNumThreads(1)
            self._users += 1

    def __exit__(self, *exc_info: Any) -> None:
        import cv2

        with self._lock:
            self._users -= 1
            if not self._users:
                cv2.setNumThreads(self._saved)


_opencv_on_one_thread = _OneOpenCVThread()


class RunningMean:
    """The mean of a clip's per-frame values, summed on the values' device: a ``float()`` per batch would make
    the host wait for the GPU at every batch. Sums in float64 in batch order, as a host-side float would."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, values: torch.Tensor) -> None:
        subtotal = values.double().sum()
        self.total = subtotal if self.total is None else self.total + subtotal
        self.count += values.numel()

    def mean(self) -> float:
        return float(self.total) / self.count if self.count else math.nan

    def mean_when_ready(self) -> float | Deferred:
        """:meth:`mean`, as a :class:`CopiedToHost` when the sum is on a GPU (see :func:`when_on_host`)."""
        if not self.count:
            return math.nan
        count = self.count
        return when_on_host(self.total, lambda total: float(total) / count)


def coerce_param(label: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of the parameter's default, or a UsageError naming ``label``.

    Parameters arrive from the command line as YAML scalars (``-p psnr.data_range=abc`` gives the string
    'abc'); checking them here, once, turns a bad value into one usage error instead of an error row per
    clip. A default of None accepts any value."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise UsageError(f"{label} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UsageError(f"{label} must be a whole number, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UsageError(f"{label} must be a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `-p lpips.version=0.1` reads 0.1 as a number
        raise UsageError(f"{label} must be a string, got {value!r}")
    if isinstance(default, (list, tuple)):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if default:
            items = [coerce_param(f"{label}[{i}]", item, default[0]) for i, item in enumerate(items)]
        return type(default)(items)
    return value


class Metric(ABC):
    """What every metric has, whatever it scores: its declaration, its parameters, ``setup``, ``describe``
    and ``compute_set``. Subclass :class:`FrameBatchMetric` (or one of its bases) for frames, ``LatentMetric``
    for latents; set ``info`` and ``defaults`` and implement that family's hooks."""

    info: ClassVar[MetricInfo]
    defaults: ClassVar[dict[str, Any]] = {}
    # Allowed values per parameter, for clear errors on bad choices.
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise UsageError(f"metric {self.info.name!r} has no parameter {unknown[0]!r}"
                             f"{did_you_mean(unknown[0], self.defaults)} (parameters: {known})")
        coerced = {key: coerce_param(f"{self.info.name}.{key}", value, self.defaults[key])
                   for key, value in params.items()}
        self.params: dict[str, Any] = {**self.defaults, **coerced}
        for key, allowed in self.choices.items():
            if self.params[key] not in allowed:
                raise UsageError(f"{self.info.name}.{key} must be one of {list(allowed)}, got {self.params[key]!r}")
        self.device = torch.device("cpu")

    @property
    def name(self) -> str:
        return self.info.name

    def setup(self, context: RunContext) -> None:
        """Load weights and move to the device; raise MetricUnavailable with the reason if it cannot run."""
        self.device = context.device

    def compute_set(self, parts: list[Any]) -> dict[str, Any] | None:
        """Run-level figures from the parts of every successfully scored clip, in pair order, called once
        after the last pair; ``"value"`` is the headline. Set-granular metrics must override it.

        Computing from the parts, not from state kept in the metric, is what makes a resumed run and a
        run spread over `torchrun` ranks give the same value as one uninterrupted process."""
        return None

    def describe(self) -> dict[str, Any]:
        """The metric's definition as recorded in results: its metadata and every parameter."""
        info = self.info
        return {
            "direction": info.direction,
            "unit": info.unit,
            "granularity": info.granularity,
            "description": info.description,
            **({"target": info.target} if info.target is not None else {}),
            "params": dict(self.params),
        }


class FrameBatchMetric(Metric):
    """A metric of paired frames. The scoring engine calls, per clip, ``reset``, then ``update`` with each
    :class:`FrameBatch` in order, then ``compute``. State carried from one batch to the next (a running
    sum, the last frame) is set in ``reset``; the batch itself is not kept (``check_metric`` checks it)."""

    # True: the metric keys reference-cache entries on the batch's reference digest (:func:`reference_sha256`);
    # the engine then hashes each batch's reference frames ahead, in the decoding thread.
    reads_reference_cache: ClassVar[bool] = False

    @abstractmethod
    def reset(self) -> None:
        """Forget the previous clip."""

    @abstractmethod
    def update(self, batch: FrameBatch) -> torch.Tensor | None:
        """Consume one batch; return the per-frame values (B,) for frame-granular metrics (NaN: no value for
        that frame, not recorded), or a :class:`~foresight_eval.workers.Deferred` of them (work handed to
        ``RunContext.pool``; the engine collects it, in order, before ``compute``)."""

    @abstractmethod
    def compute(self) -> Any:
        """The clip's value. A set-granular metric returns instead the clip's part of the run-level value
        (JSON-serialisable: it is journaled and gathered across ranks with the clip's result). Either may come
        as a :class:`~foresight_eval.workers.Deferred` of it, which the engine waits for after queuing the next
        clip's work: the worker pool's, or :func:`when_on_host`'s for a value still on a GPU (``float()`` of a
        GPU tensor here would make the host wait for the device)."""


def _takes_pred_and_ref(per_frame: Callable[..., Any]) -> bool:
    """Whether a ``per_frame`` has the old signature, ``per_frame(self, pred, ref)``, that plugins were written to."""
    try:
        parameters = list(inspect.signature(per_frame).parameters.values())[1:]  # after self
    except (TypeError, ValueError):  # no signature to read: take it as the current form
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(parameter.kind in positional for parameter in parameters) >= 2


class FrameMetric(FrameBatchMetric):
    """A metric defined per frame pair; the clip's value is the mean over its frames."""

    # Set for each subclass when it is defined: its per_frame is the old per_frame(self, pred, ref).
    _per_frame_takes_frames: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls._per_frame_takes_frames = _takes_pred_and_ref(cls.per_frame)
        if cls._per_frame_takes_frames and "per_frame" in vars(cls):
            # Once per class, pointing at the definition (where the author has to change it).
            code = getattr(cls.per_frame, "__code__", None)
            warnings.warn_explicit(
                f"{cls.__module__}.{cls.__qualname__}.per_frame(self, pred, ref) is deprecated: define "
                "per_frame(self, batch) and read batch.pred and batch.ref (the old form is still called as before)",
                DeprecationWarning, filename=code.co_filename if code else cls.__module__,
                lineno=code.co_firstlineno if code else 0, module=cls.__module__)

    def reset(self) -> None:
        self._running = RunningMean()

    def update(self, batch: FrameBatch) -> torch.Tensor:
        values = self.per_frame(batch.pred, batch.ref) if self._per_frame_takes_frames else self.per_frame(batch)
        self._running.add(values)
        return values

    def compute(self) -> float | Deferred:
        """The mean over the clip's frames; on a GPU a Deferred of it, which the engine reads once the device
        has computed it (:class:`CopiedToHost`)."""
        return self._running.mean_when_ready()

    @abstractmethod
    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        """The batch's (B, 3, H, W) frame pairs (``batch.pred``, ``batch.ref``) in, (B,) values out."""


class ConsecutivePairMetric(FrameBatchMetric):
    """A value per consecutive pair of horizon frames (t-1, t), attached to horizon t; the clip's value is
    the mean over pairs. The last frame of a batch is kept to pair with the first frame of the next."""

    # When set, the value is the prediction's quantity minus the reference's, pair by pair.
    versus_reference: ClassVar[bool] = False
    reads_reference_cache = True

    def pair_values(self, earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        """The quantity for each pair: (N, 3, H, W) twice in, (N,) out."""
        raise NotImplementedError

    def pair_params(self) -> dict[str, Any]:
        """The parameters :meth:`pair_values` depends on: every parameter unless a metric says fewer. With the
        method itself they name the pair values shared between metrics and cached across runs, so a metric
        whose parameters apply after the pair values (``frozen``'s threshold) shares them with one that has none."""
        return self.params

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        # The reference's pair values depend on its frames only: cached across runs when a cache folder is set
        # (the device type in the key: GPU and CPU paths agree only to rounding).
        pair_values = type(self).pair_values
        self._ref_cache = ReferenceCache.from_resources(
            context.resources, f"{pair_values.__module__}.{pair_values.__qualname__}",
            {**self.pair_params(), "device_type": context.device.type})

    def reset(self) -> None:
        self._last: dict[str, torch.Tensor] = {}  # "pred" / "ref" -> the last frame seen (or its features)
        self._carried: dict[str, Any] = {}  # "pred" / "ref" -> what batch_pair_values passed to the next batch
        self._previous_digest: str | None = None  # the previous batch's reference digest (reference cache only)
        self._running = RunningMean()

    def _pairs(self, role: str, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(earlier, later) over this batch's frames of ``role`` (or their features), continuing the last batch."""
        last = self._last.get(role)
        self._last[role] = items[-1:]
        if last is None:
            return items[:-1], items[1:]
        return torch.cat([last, items[:-1]]), items

    def batch_pair_values(self, last: torch.Tensor | None, frames: torch.Tensor,
                          carried: Any) -> tuple[torch.Tensor, Any]:
        """The values of the pairs ending at each of ``frames`` (the first only when ``last``, the previous
        batch's last frame, is given), and what the next batch gets as ``carried``. ``carried`` is what this
        method returned for the previous batch, or None (first batch, or one whose values came from the
        reference cache). Here: :meth:`pair_values` over the bridging pair and the pairs inside the batch
        (no copy of the batch), nothing carried; subclasses that work per frame carry that work across."""
        chunks = [(last, frames[:1])] if last is not None else []
        if len(frames) > 1:
            chunks.append((frames[:-1], frames[1:]))
        if not chunks:
            return torch.zeros(0, device=frames.device), None
        return torch.cat([self.pair_values(earlier, later) for earlier, later in chunks]), None

    def _role_values(self, batch: FrameBatch, role: str) -> torch.Tensor:
        frames = getattr(batch, role)
        last, carried = self._last.get(role), self._carried.get(role)
        self._last[role] = frames[-1:]
        cache = getattr(self, "_ref_cache", None) if role == "ref" else None  # None: no cache folder, or no setup
        previous_digest = self._previous_digest
        if cache is not None:
            self._previous_digest = reference_sha256(batch)

        def computed_or_cached() -> tuple[torch.Tensor, Any]:
            if cache is None:
                return self.batch_pair_values(last, frames, carried)
            passed_on = []  # filled on a miss only: a hit leaves the next batch nothing carried

            def compute() -> dict[str, torch.Tensor]:
                values, carry = self.batch_pair_values(last, frames, carried)
                passed_on.append(carry)
                return {"values": values}

            # The entry depends on the previous batch's last frame too: named by that batch's digest.
            values = cache((previous_digest, reference_sha256(batch)), compute)["values"]
            values = to_device_async(values, frames.device)
            return values, (passed_on[0] if passed_on else None)

        # A metric and its delta compute the same pair values from the same batches: the first computes,
        # the other reuses them and what they carry (the key holds everything the values depend on).
        key = (type(self).pair_values, role, last is None, tuple(sorted(self.pair_params().items())))
        values, self._carried[role] = batch.shared(key, computed_or_cached)
        return values

    def update(self, batch: FrameBatch) -> torch.Tensor:
        first_batch = not self._last
        values = self._role_values(batch, "pred").double()
        if self.versus_reference:
            values = values - self._role_values(batch, "ref").double()
        self._running.add(values)
        if first_batch:  # the clip's first horizon frame has no predecessor: NaN marks "no value"
            values = torch.cat([values.new_full((1,), float("nan")), values])
        return values

    def compute(self) -> float | Deferred:
        """The mean over the clip's frames; on a GPU a Deferred of it, which the engine reads once the device
        has computed it (:class:`CopiedToHost`)."""
        return self._running.mean_when_ready()
