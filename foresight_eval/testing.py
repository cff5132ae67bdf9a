"""The metric contract, as a test any metric can be put through (built-in or plugin).

Like torchmetrics' shared tester, one function checks the promises the scoring engine relies on, through
the engine's own per-pair loop (:func:`foresight_eval.engine.score_pair`):

* the batch size does not change a value: batches of 1, 3 and 16 frames give the same per-frame values,
  clip values and run-level (set) values;
* clips do not leak into each other: a metric instance that scored another clip first gives the same
  values as a fresh one;
* a clip that fails part-way (a NaN frame after some batches were scored) leaves an error row and no
  partial per-frame rows;
* ``describe()`` and every set part are JSON, as the run folder and the torchrun gather need;
* the metric keeps no batch on ``self``: after each ``update`` none of its attributes holds the
  :class:`~foresight_eval.metrics.base.FrameBatch` or one of its tensors (what a metric needs of a batch
  arrives with the batch; a batch kept alive also keeps its frames in memory past the clip).

A plugin author calls it from their own tests::

    from foresight_eval.testing import check_metric

    def test_my_metric_keeps_the_contract(tmp_path):
        check_metric(MyMetric, workdir=tmp_path)

Latent metrics are checked with :func:`check_latent_metric`.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foresight_eval.metrics.base import FrameBatch, Metric, RunContext
from foresight_eval.metrics.registry import create, validate_metric_class

BATCH_SIZES = (1, 3, 16)


def synthetic_clip_pair(*, frames: int = 12, height: int = 32, width: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (prediction, reference) pair of uint8 (T, H, W, 3) clips: a textured background with a square
    moving across it, the prediction lagging one pixel and carrying noise. Every frame differs from the
    next, so temporal, motion and edge metrics all have something to measure."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, size=(height // 4, width // 4, 3)).repeat(4, axis=0).repeat(4, axis=1)
    ref = np.empty((frames, height, width, 3), dtype=np.uint8)
    pred = np.empty_like(ref)
    for t in range(frames):
        for clip, lag in ((ref, 0), (pred, 1)):
            frame = background.copy()
            x = 2 + 2 * t - lag
            frame[8:18, max(x, 0):max(x + 10, 0)] = (230, 40, 40)
            clip[t] = frame
    noise = rng.normal(0.0, 6.0, size=pred.shape)
    pred = np.clip(pred + noise, 0, 255).astype(np.uint8)
    return pred, ref


def _write_pair(workdir: Path, name: str, pred: np.ndarray, ref: np.ndarray) -> Any:
    from foresight_eval.io.pairing import ClipPair

    (workdir / "preds").mkdir(parents=True, exist_ok=True)
    (workdir / "refs").mkdir(parents=True, exist_ok=True)
    pred_path, ref_path = workdir / "preds" / f"{name}.npy", workdir / "refs" / f"{name}.npy"
    np.save(pred_path, pred)
    np.save(ref_path, ref)
    return ClipPair(key=name, pred=pred_path, ref=ref_path)


def _assert_close(what: str, ours: Any, expected: Any, rtol: float, atol: float) -> None:
    if isinstance(expected, Mapping):
        assert isinstance(ours, Mapping) and set(ours) == set(expected), f"{what}: keys {sorted(ours)} != {sorted(expected)}"
        for key in expected:
            _assert_close(f"{what}.{key}", ours[key], expected[key], rtol, atol)
    elif isinstance(expected, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(expected), f"{what}: lengths differ"
        for index, (a, b) in enumerate(zip(ours, expected)):
            _assert_close(f"{what}[{index}]", a, b, rtol, atol)
    elif isinstance(expected, float) or isinstance(ours, float):
        a, b = float(ours), float(expected)
        same = (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
        assert same, f"{what}: {a!r} != {b!r} (rtol {rtol:g}, atol {atol:g})"
    else:
        assert ours == expected, f"{what}: {ours!r} != {expected!r}"


def _kept_batch(value: Any, batch: FrameBatch, where: str, seen: set[int], depth: int = 3) -> str | None:
    """Where in ``value`` (an attribute of a metric, followed through containers and objects ``depth`` levels
    deep) the batch or one of its own tensors is kept, or None."""
    if value is batch or isinstance(value, FrameBatch):
        return where
    if isinstance(value, torch.Tensor):
        return where if any(value is tensor for tensor in (batch.pred, batch.ref, batch.horizon, batch.frame_index)) else None
    if depth == 0 or id(value) in seen or isinstance(value, (str, bytes, np.ndarray, type)) or inspect.isroutine(value):
        return None
    seen.add(id(value))
    if isinstance(value, Mapping):
        items = [(f"{where}[{key!r}]", item) for key, item in value.items()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    elif hasattr(value, "__dict__"):
        items = [(f"{where}.{key}", item) for key, item in vars(value).items()]
    else:
        return None
    for item_where, item in items:
        found = _kept_batch(item, batch, item_where, seen, depth - 1)
        if found:
            return found
    return None


def _watch_for_kept_batches(metric: Metric) -> list[str]:
    """Wrap the instance's ``update`` to look through its attributes after every call; the places where it
    kept the batch it was given are collected in the returned list."""
    update, kept = metric.update, []

    def watched(batch: FrameBatch) -> Any:
        values = update(batch)
        seen: set[int] = set()
        kept.extend(found for key, value in vars(metric).items()
                    for found in [_kept_batch(value, batch, f"self.{key}", seen)] if found)
        return values

    metric.update = watched  # type: ignore[method-assign]
    return kept


def _scored(pair: Any, metric: Metric, batch_size: int, context_frames: int) -> dict[str, Any]:
    from foresight_eval.engine import score_pair
    from foresight_eval.options import ScoreOptions

    result = score_pair(pair, [metric], ScoreOptions(context=context_frames, batch_size=batch_size), metric.device)
    assert result.status == "ok", f"{metric.name} failed on {pair.key} (batch size {batch_size}): {result.error}"
    return {"values": result.values, "per_frame": result.per_frame, "set_parts": result.set_parts}


def check_metric(
    metric: str | type[Metric],
    *,
    workdir: Path,
    params: Mapping[str, Any] | None = None,
    context: RunContext | None = None,
    clips: Sequence[tuple[str, Path, Path]] | None = None,
    context_frames: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Put a frame metric through the contract (see the module docstring); an AssertionError says which
    promise broke. ``metric`` is a registered name or a Metric subclass (validated as registration
    would). ``clips`` are (key, prediction file, reference file) triples for metrics that need particular
    inputs (annotated clips, say); by default two synthetic pairs are written into ``workdir``.
    ``rtol``/``atol`` bound the differences that batching may make (float32 reductions in another order)."""
    from foresight_eval.io.pairing import ClipPair

    if not isinstance(metric, str):
        validate_metric_class(metric)

    def fresh() -> Metric:
        instance = create(metric, **dict(params or {})) if isinstance(metric, str) else metric(**dict(params or {}))
        instance.setup(context or RunContext())
        return instance

    probe = fresh()
    assert probe.info.inputs == "frames", f"{probe.name} scores latents: use check_latent_metric"
    description = probe.describe()
    json.dumps(description, allow_nan=False)  # the run folder records it

    workdir = Path(workdir)
    if clips is None:
        pairs = [_write_pair(workdir, f"clip{i}", *synthetic_clip_pair(seed=i)) for i in range(2)]
    else:
        pairs = [ClipPair(key=key, pred=Path(pred), ref=Path(ref)) for key, pred, ref in clips]
    first, second = pairs[0], pairs[-1]

    # Batch size never changes a value.
    by_batch = {size: _scored(first, fresh(), size, context_frames) for size in BATCH_SIZES}
    for size in BATCH_SIZES[1:]:
        _assert_close(f"{probe.name} batch {size} vs {BATCH_SIZES[0]}", by_batch[size], by_batch[BATCH_SIZES[0]], rtol, atol)
    if probe.info.granularity == "set":
        parts = by_batch[BATCH_SIZES[0]]["set_parts"][probe.name]
        json.dumps(parts, allow_nan=False)  # journaled and gathered across ranks
        run_value = probe.compute_set([parts])
        assert isinstance(run_value, Mapping) and "value" in run_value, f"{probe.name}.compute_set must return a dict with 'value'"

    # Nothing of a batch is kept on the metric.
    watched = fresh()
    kept = _watch_for_kept_batches(watched)
    _scored(first, watched, 3, context_frames)
    assert not kept, (f"{probe.name} keeps the batch it was given on self ({kept[0]}): use what it needs of each "
                      "batch inside update/per_frame, and keep only state derived from it")

    # No state leaks from one clip into the next.
    reused = fresh()
    _scored(first, reused, 3, context_frames)
    _assert_close(f"{probe.name} after another clip", _scored(second, reused, 3, context_frames),
                  _scored(second, fresh(), 3, context_frames), rtol, atol)

    # A clip that fails part-way leaves one error row and nothing else.
    from foresight_eval.engine import score_pair
    from foresight_eval.options import ScoreOptions
    from foresight_eval.io.clips import open_clip

    good = np.stack([np.asarray(frame, dtype=np.float32) / (255.0 if frame.dtype == np.uint8 else 1.0)
                     for frame in open_clip(first.pred).frames()])
    broken = good.copy()
    broken[-1, 0, 0, 0] = np.nan  # read lazily: the earlier batches are scored before the reader refuses it
    broken_dir = workdir / "broken"
    broken_pair = _write_pair(broken_dir, first.key.replace("/", "_"), broken, good)
    broken_pair = ClipPair(key=first.key, pred=broken_pair.pred, ref=first.ref)
    result = score_pair(broken_pair, [fresh()], ScoreOptions(context=context_frames, batch_size=3), probe.device)
    assert result.status == "error", f"{probe.name}: a NaN frame was scored instead of failing the clip"
    assert not result.per_frame and not result.values and not result.set_parts, \
        f"{probe.name}: a failed clip left partial results"


def check_latent_metric(metric: str | type[Metric], *, params: Mapping[str, Any] | None = None,
                        items: int = 40, steps: int = 6, features: int = 8, seed: int = 0) -> None:
    """The contract of a latent metric: ``describe()`` is JSON, the score is a finite or NaN float that
    does not depend on what the instance scored before, and the per-item values (if any) average to it."""
    from foresight_eval.io.latents import LatentPair

    if not isinstance(metric, str):
        validate_metric_class(metric)

    def fresh() -> Metric:
        instance = create(metric, **dict(params or {})) if isinstance(metric, str) else metric(**dict(params or {}))
        instance.setup(RunContext())
        return instance

    generator = torch.Generator().manual_seed(seed)

    def latent_pair(key: str) -> LatentPair:
        a = torch.randn(items, steps, features, generator=generator, dtype=torch.float64)
        b = a + 0.5 * torch.randn(items, steps, features, generator=generator, dtype=torch.float64)
        return LatentPair(key, Path(f"{key}.a.safetensors"), Path(f"{key}.b.safetensors"), a.float(), b.float(), reduce="mean")

    probe = fresh()
    assert probe.info.inputs == "latents", f"{probe.name} scores frames: use check_metric"
    json.dumps(probe.describe(), allow_nan=False)
    first, second = latent_pair("first"), latent_pair("second")
    alone = fresh().score(second)
    reused = fresh()
    reused.score(first)
    again = reused.score(second)
    _assert_close(f"{probe.name} after another pair", again.value, alone.value, 1e-9, 1e-12)
    assert isinstance(alone.value, float), f"{probe.name}: value must be a float, got {type(alone.value).__name__}"
    json.dumps(alone.details, allow_nan=True, default=float)
    if alone.item_values is not None and math.isfinite(alone.value):
        _assert_close(f"{probe.name} item mean", float(alone.item_values.double().mean()), alone.value, 1e-6, 1e-9)
