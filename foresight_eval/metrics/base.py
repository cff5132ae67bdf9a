"""The metric plugin interface.

Each metric family keeps a pure functional core (tensors in, tensor out) and a thin stateful
wrapper, a subclass of :class:`Metric`, that the scoring engine drives clip by clip:
``setup`` once per run, then per clip ``reset``, ``update`` for each batch of frames, ``compute``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch

from foresight_eval.errors import UsageError, did_you_mean
from foresight_eval.workers import INLINE, WorkerPool

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

    def shared(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Work several metrics need from this batch (a backbone pass, flow, motion masks) done once:
        the first metric to ask computes it, the others get the same object. ``key`` must name
        everything the result depends on (the computation and its parameters)."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]


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
    """Base class of every metric. Subclasses set ``info`` and ``defaults`` and implement the hooks."""

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
        (JSON-serialisable: it is journaled and gathered across ranks with the clip's result)."""

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


class FrameMetric(Metric):
    """A metric defined per frame pair; the clip's value is the mean over its frames."""

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0

    def update(self, batch: FrameBatch) -> torch.Tensor:
        values = self.per_frame(batch.pred, batch.ref)
        self._sum += float(values.double().sum())
        self._count += values.numel()
        return values

    def compute(self) -> float:
        return self._sum / self._count if self._count else float("nan")

    @abstractmethod
    def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pairs in, (B,) values out."""
