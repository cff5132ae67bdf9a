"""Set-level metrics over features of frame windows (FVD and its kin): windows, resizing, the
reference-feature cache, the bootstrap CI and the protocol fingerprint, shared by every extractor.

Each clip's scored frames (after ``--context``) are resized to the extractor's square resolution as
they stream in; ``compute`` cuts them into windows of ``frames`` frames (``window=first``: the first
window only, as the original FVD; ``window=all``: a window every ``stride`` frames) and returns the
clip's part, the features of its prediction and reference windows. A clip shorter than one window is an
error row. ``compute_set`` fits a Gaussian to each side (or runs the metric's own statistic), gives a
percentile bootstrap CI resampling whole clips on both sides, a per-horizon value (windows starting
at each horizon) with ``window=all``, and the protocol fingerprint that `compare`, `check --baseline`
and `leaderboard` require to be equal before comparing two runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.errors import InputError, UsageError
from foresight_eval.feature_cache import CACHE_USE_RESOURCE, FeatureCache, user_cache_dir
from foresight_eval.metrics.base import FrameBatch, FrameBatchMetric, RunContext
from foresight_eval.metrics.distributions import frechet_distance_of, two_sample_bootstrap
from foresight_eval.weights import weight_sha256

# Below this many clips per side the Fréchet distance's upward bias (it shrinks like 1/N) is large
# against the differences between models; the FVD paper and later tools use at least 256.
MIN_RELIABLE_CLIPS = 256
CACHE_DIR_RESOURCE = "cache_dir"  # RunContext.resources key of --cache-dir
RESIZE_METHODS = ("tf_bilinear", "bilinear_antialias")


def _legacy_bilinear_matrix(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """TF1 ``tf.image.resize_bilinear`` (align_corners=False, half_pixel_centers=False) as a
    (size_out, size_in) matrix: output pixel i samples the input at i * size_in / size_out, linearly
    between floor and floor + 1 (clamped at the last pixel)."""
    source = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
    low = source.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    weight = source - low
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    matrix.index_put_((rows, low), 1.0 - weight, accumulate=True)
    matrix.index_put_((rows, high), weight, accumulate=True)
    return matrix.to(device=device, dtype=torch.float32)


def resize_frames(frames: torch.Tensor, size: int, method: str) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size). ``tf_bilinear`` is the TF FVD's resize (TF1 bilinear, no
    antialiasing, legacy pixel mapping); ``bilinear_antialias`` is PyTorch's antialiased bilinear."""
    height, width = frames.shape[-2:]
    if (height, width) == (size, size):
        return frames
    if method == "tf_bilinear":
        rows = _legacy_bilinear_matrix(height, size, frames.device)
        cols = _legacy_bilinear_matrix(width, size, frames.device)
        return torch.einsum("oh,bchw,pw->bcop", rows, frames.float(), cols)
    return F.interpolate(frames.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Run convolutions and matmuls in IEEE float32 on the GPU: PyTorch lets cuDNN convolutions use TF32
    (10-bit mantissa) by default, which moves feature-distance metrics such as FVD."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class WindowFeatureMetric(FrameBatchMetric):
    """Base of the set metrics over window features; subclasses load an extractor and map windows to
    feature vectors. The headline is a Fréchet distance unless ``statistic`` is overridden."""

    resolution: ClassVar[int | None]  # None: frames kept as they are, the extractor resizes them itself
    resize_method: ClassVar[str] = ""  # the extractor's own resize, recorded when there is no resize parameter
    extractor: ClassVar[str]  # names the network and the feature layer, e.g. "i3d-k400 logits (400-d)"
    value_range: ClassVar[str] = "[-1, 1]"  # what the network is fed, recorded in the fingerprint
    defaults: ClassVar[dict[str, Any]] = {"frames": 16, "stride": 16, "window": "first", "resize": "tf_bilinear",
                                          "resamples": 100, "seed": 0, "batch": 8}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"window": ("first", "all"), "resize": RESIZE_METHODS}

    def __init__(self, **params: Any):
        super().__init__(**params)
        for key in ("frames", "stride", "batch"):
            if not isinstance(self.params[key], int) or self.params[key] < 1:
                raise UsageError(f"{self.name}.{key} must be an integer >= 1, got {self.params[key]!r}")

    @abstractmethod
    def load_extractor(self, context: RunContext) -> None:
        """Load the network onto ``self.device`` and set ``self.weights_file``."""

    @abstractmethod
    def extract(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, frames, 3, R, R) float32 in [0, 1] on the device -> (n, D) float32 features."""

    def statistic(self, pred: np.ndarray, ref: np.ndarray) -> float:
        return frechet_distance_of(pred, ref)

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.load_extractor(context)
        # A run gives its cache folder (None: --no-cache, or not writable); used alone, the user cache folder.
        resources = context.resources
        cache_dir = resources[CACHE_DIR_RESOURCE] if CACHE_DIR_RESOURCE in resources else user_cache_dir()
        self.fingerprint = {
            "extractor": self.extractor,
            "weights_file": self.weights_file.name,
            "weights_sha256": weight_sha256(self.weights_file, cache_dir),
            "resolution": self.resolution,
            "resize": self.params.get("resize", self.resize_method),
            "value_range": self.value_range,
            "frames": self.params["frames"],
            "stride": self.params["stride"],
            "window": self.params["window"],
        }
        self.cache = FeatureCache(cache_dir, self.fingerprint, resources.get(CACHE_USE_RESOURCE))

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if hasattr(self, "fingerprint"):
            described["weights"] = {"file": self.fingerprint["weights_file"], "sha256": self.fingerprint["weights_sha256"]}
        return described

    def reset(self) -> None:
        self._frames: dict[str, list[torch.Tensor]] = {"pred": [], "ref": []}
        self._kept = 0
        self._ref_hash = hashlib.sha256()
        self._first: tuple[int, int] | None = None  # (frame index, horizon) of the first scored frame

    def update(self, batch: FrameBatch) -> None:
        if self._first is None:
            self._first = (int(batch.frame_index[0]), int(batch.horizon[0]))
        ref = batch.ref.float().contiguous()
        # Frame by frame, so that the digest (the cache key and the reference set's fingerprint) does not
        # depend on how the frames were batched.
        frame_shape = str(tuple(ref.shape[1:])).encode()
        for frame in ref.cpu().numpy():
            self._ref_hash.update(frame_shape)
            self._ref_hash.update(frame.tobytes())
        # window=first needs only the first `frames` frames: the rest are hashed, not kept.
        keep = ref.shape[0] if self.params["window"] == "all" else max(self.params["frames"] - self._kept, 0)
        if keep:
            for side, frames in (("pred", batch.pred), ("ref", batch.ref)):
                kept = frames[:keep]
                self._frames[side].append(kept if self.resolution is None else
                                          resize_frames(kept, self.resolution, self.params["resize"]))
            self._kept += min(keep, ref.shape[0])
        return None

    def _window_starts(self, count: int) -> list[int]:
        frames = self.params["frames"]
        if count < frames:
            raise InputError(f"{self.name} needs windows of {frames} frames; the clip has {count} scored frames "
                             f"(-p {self.name}.frames= sets the window length)")
        if self.params["window"] == "first":
            return [0]
        return list(range(0, count - frames + 1, self.params["stride"]))

    def _features(self, frames: torch.Tensor, starts: list[int]) -> torch.Tensor:
        length, chunks = self.params["frames"], []
        for begin in range(0, len(starts), self.params["batch"]):
            windows = torch.stack([frames[s:s + length] for s in starts[begin:begin + self.params["batch"]]])
            with full_float32():
                chunks.append(self.extract(windows).float().cpu())
        return torch.cat(chunks)

    def compute(self) -> dict[str, Any]:
        frames = {side: torch.cat(chunks) if chunks else None for side, chunks in self._frames.items()}
        starts = self._window_starts(0 if frames["ref"] is None else min(len(f) for f in frames.values()))
        clip_sha256 = self._ref_hash.hexdigest()
        ref = self.cache.get(clip_sha256)
        if ref is None or ref.shape[0] != len(starts):
            ref = self._features(frames["ref"], starts)
            self.cache.put(clip_sha256, ref)
        pred = self._features(frames["pred"], starts)
        frame_index, horizon = self._first
        return {"ref_sha256": clip_sha256, "context": frame_index - horizon + 1,
                "horizons": [horizon + s for s in starts], "pred": pred.tolist(), "ref": ref.tolist()}

    def compute_set(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(parts)
        protocol = {
            **self.fingerprint,
            "context_frames_excluded": sorted({part["context"] for part in parts}),
            "n_clips": {"pred": n, "ref": n},
            "n_windows": {"pred": sum(len(p["pred"]) for p in parts), "ref": sum(len(p["ref"]) for p in parts)},
            "reference_set_sha256": hashlib.sha256(
                "\n".join(sorted(part["ref_sha256"] for part in parts)).encode()).hexdigest(),
        }
        figures: dict[str, Any] = {"value": math.nan, "ci_low": None, "ci_high": None, "protocol": protocol,
                                   "cache": {"hits": self.cache.hits, "misses": self.cache.misses}}
        warnings = []
        if n < MIN_RELIABLE_CLIPS:
            warnings.append(f"{n} clips per side, fewer than {MIN_RELIABLE_CLIPS}: {self.name} is biased upward at "
                            f"small N (the bias shrinks like 1/N), so it is only comparable with runs of the same N")
        pred = [np.asarray(part["pred"], np.float64) for part in parts]
        ref = [np.asarray(part["ref"], np.float64) for part in parts]
        if sum(len(p) for p in pred) < 2:
            warnings.append(f"{self.name} needs at least 2 windows per side")
            return {**figures, "warnings": warnings, "per_horizon": []}
        figures["value"] = self.statistic(np.concatenate(pred), np.concatenate(ref))
        figures["ci_low"], figures["ci_high"] = two_sample_bootstrap(
            self.statistic, pred, ref, resamples=self.params["resamples"], seed=self.params["seed"])
        figures["ci"] = {"confidence": 0.95, "method": "percentile", "resamples": self.params["resamples"],
                         "resampled": "clips, independently on each side", "seed": self.params["seed"]}
        figures["per_horizon"] = self._per_horizon(parts) if self.params["window"] == "all" else []
        return {**figures, "warnings": warnings}

    def _per_horizon(self, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_start: dict[int, dict[str, list]] = defaultdict(lambda: {"pred": [], "ref": []})
        for part in parts:
            for index, horizon in enumerate(part["horizons"]):
                for side in ("pred", "ref"):
                    by_start[horizon][side].append(part[side][index])
        rows = []
        for horizon in sorted(by_start):
            pred, ref = (np.asarray(by_start[horizon][side], np.float64) for side in ("pred", "ref"))
            value = self.statistic(pred, ref) if len(pred) >= 2 else math.nan
            rows.append({"horizon": horizon, "mean": value, "ci_low": None, "ci_high": None, "n": len(pred)})
        return rows
