"""The scoring engine: pair clips, stream their frames in batches through every metric, summarise.

Frames are decoded one at a time and grouped into batches of ``batch_size`` frame pairs, so peak
memory is bounded by the batch, not by the clip's length. A clip pair that fails for any reason
becomes one error row; the run goes on with the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.errors import InputError, MetricUnavailable, UsageError
from foresight_eval.io.clips import open_clip
from foresight_eval.io.files import sha256_file
from foresight_eval.io.pairing import ClipPair, pair_clips
from foresight_eval.manifest import build_manifest, utc_now
from foresight_eval.metrics.base import FrameBatch, Metric, RunContext
from foresight_eval.metrics.registry import create, get_metric_class, metric_classes
from foresight_eval.results import PairResult, RunResult, summarize
from foresight_eval.stats import BootstrapConfig


@dataclass(frozen=True)
class ScoreOptions:
    context: int = 0  # conditioning frames skipped at the start of every clip
    frames: Literal["error", "min"] = "error"  # frame-count mismatch: error row, or score the shorter length
    resize: Literal["error", "ref"] = "error"  # size mismatch: error row, or resize predictions to the reference
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.context < 0:
            raise UsageError("--context must be >= 0")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be >= 1")
        if self.frames not in ("error", "min"):
            raise UsageError("--frames must be 'error' or 'min'")
        if self.resize not in ("error", "ref"):
            raise UsageError("--resize must be 'error' or 'ref'")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    return resolved


def prepare_metrics(
    names: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None,
    context: RunContext,
    inputs: str = "frames",
) -> tuple[list[Metric], dict[str, str]]:
    """Create and set up metrics. Without ``names``, every default metric of that input kind runs and
    those that cannot run are skipped with their reason; metrics asked for by name must run."""
    params = dict(params or {})
    explicit = names is not None
    if names is None:
        names = [n for n, cls in metric_classes().items() if cls.info.inputs == inputs and cls.info.default]
    for name in names:
        if get_metric_class(name).info.inputs != inputs:
            raise UsageError(f"metric {name!r} scores {get_metric_class(name).info.inputs}, not {inputs}")
    for name in params:
        get_metric_class(name)
        if name not in names:
            raise UsageError(f"parameters given for metric {name!r}, which is not being scored")
    metrics, skipped = [], {}
    for name in dict.fromkeys(names):
        metric = create(name, **params.get(name, {}))
        try:
            metric.setup(context)
        except MetricUnavailable as exc:
            if explicit:
                raise UsageError(f"metric {name!r} cannot run: {exc}") from exc
            skipped[name] = str(exc)
            continue
        metrics.append(metric)
    if not metrics:
        raise UsageError("no metric can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return metrics, skipped


def _to_tensor(frames: list[np.ndarray], device: torch.device) -> torch.Tensor:
    try:
        stacked = np.stack(frames)
    except ValueError as exc:
        raise InputError(f"frames of one clip differ in size: {sorted({f.shape for f in frames})}") from exc
    tensor = torch.from_numpy(stacked).to(device, non_blocking=True).permute(0, 3, 1, 2)
    # Upload as stored (uint8 is a quarter of float32's bytes), convert on the device.
    return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor.float()


def _match_size(pred: torch.Tensor, ref: torch.Tensor, resize: str) -> torch.Tensor:
    if pred.shape[-2:] == ref.shape[-2:]:
        return pred
    if resize == "ref":
        resized = F.interpolate(pred, size=ref.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
        return resized.clamp_(0.0, 1.0)
    (ph, pw), (rh, rw) = pred.shape[-2:], ref.shape[-2:]
    raise InputError(f"prediction frames are {pw}x{ph}, reference frames are {rw}x{rh} (--resize ref resizes predictions)")


def _aligned_frames(pred_frames: Iterator[np.ndarray], ref_frames: Iterator[np.ndarray], mode: str):
    """Yield (index, pred frame, ref frame) in lock-step; handle a frame-count mismatch per ``mode``."""
    pred_frames, ref_frames = iter(pred_frames), iter(ref_frames)
    index = 0
    while True:
        pred, ref = next(pred_frames, None), next(ref_frames, None)
        if pred is None and ref is None:
            return
        if pred is None or ref is None:
            if mode == "min":
                return
            n_pred = index + (0 if pred is None else 1 + sum(1 for _ in pred_frames))
            n_ref = index + (0 if ref is None else 1 + sum(1 for _ in ref_frames))
            raise InputError(f"prediction has {n_pred} frames, reference has {n_ref} (--frames min scores the shorter length)")
        yield index, pred, ref
        index += 1


def score_pair(pair: ClipPair, metrics: list[Metric], options: ScoreOptions, device: torch.device) -> PairResult:
    """Score one clip pair; any failure becomes an error row with a one-line reason."""
    result = PairResult(video=pair.key, pred=str(pair.pred), ref=str(pair.ref))
    try:
        if pair.problem:
            raise InputError(pair.problem)
        pred_clip, ref_clip = open_clip(pair.pred), open_clip(pair.ref)
        if options.frames == "error" and None not in (pred_clip.num_frames, ref_clip.num_frames) \
                and pred_clip.num_frames != ref_clip.num_frames:
            raise InputError(f"prediction has {pred_clip.num_frames} frames, reference has {ref_clip.num_frames} "
                             "(--frames min scores the shorter length)")
        for metric in metrics:
            metric.reset()
            result.per_frame[metric.name] = []
        pending: list[tuple[int, np.ndarray, np.ndarray]] = []
        total = 0

        def flush() -> None:
            indices = [index for index, _, _ in pending]
            frame_index = torch.tensor(indices, dtype=torch.int64)
            horizon = frame_index - options.context + 1
            ref = _to_tensor([r for _, _, r in pending], device)
            pred = _match_size(_to_tensor([p for _, p, _ in pending], device), ref, options.resize)
            batch = FrameBatch(pair.key, pred, ref, horizon.to(device), frame_index.to(device))
            for metric in metrics:
                values = metric.update(batch)
                if values is not None:
                    rows = zip(horizon.tolist(), indices, values.detach().double().cpu().tolist())
                    result.per_frame[metric.name].extend(rows)
            pending.clear()

        for index, pred_frame, ref_frame in _aligned_frames(pred_clip.frames(), ref_clip.frames(), options.frames):
            total = index + 1
            if index < options.context:
                continue
            pending.append((index, pred_frame, ref_frame))
            if len(pending) == options.batch_size:
                flush()
        if pending:
            flush()
        if total <= options.context:
            raise InputError(f"clip has {total} frames, none left after --context {options.context}")
        result.frames = total - options.context
        result.values = {m.name: m.compute() for m in metrics if m.info.granularity != "set"}
    except InputError as exc:
        _fail(result, str(exc))
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure of one clip must not lose the run
        _fail(result, f"{type(exc).__name__}: {exc}")
    return result


def _fail(result: PairResult, reason: str) -> None:
    result.status, result.error = "error", reason
    result.values, result.per_frame, result.frames = {}, {}, 0


def _input_hashes(root: Path, paths: list[Path]) -> dict[str, str]:
    hashes = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                key = file.relative_to(root).as_posix() if root.is_dir() else file.name
                hashes[key] = sha256_file(file)
    return hashes


def score(
    preds: str | Path,
    refs: str | Path,
    metrics: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    options: ScoreOptions = ScoreOptions(),
    strict: bool = False,
    device: str | torch.device = "auto",
    weights_dir: str | Path | None = None,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    extra: Mapping[str, Any] | None = None,
    resources: Mapping[str, Any] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_pair: Callable[[PairResult], None] | None = None,
    command: str | None = None,
) -> RunResult:
    """Score every prediction clip under ``preds`` against its reference under ``refs``.

    ``metrics`` names the metrics to run (default: every default frame metric that can run here);
    ``params`` maps a metric name to its parameters, e.g. ``{"ssim": {"mode": "skimage"}}``.
    ``on_start`` gets the number of pairs, ``on_pair`` each finished pair (for progress display).
    """
    started = utc_now()
    preds, refs = Path(preds), Path(refs)
    torch_device = resolve_device(device)
    run_context = RunContext(
        device=torch_device, weights_dir=Path(weights_dir) if weights_dir else None, resources=dict(resources or {})
    )
    pairing = pair_clips(preds, refs, strict=strict)
    active, skipped = prepare_metrics(metrics, params, run_context)
    if on_start:
        on_start(len(pairing.pairs))
    pair_results = []
    with torch.inference_mode():
        for pair in pairing.pairs:
            pair_results.append(score_pair(pair, active, options, torch_device))
            if on_pair:
                on_pair(pair_results[-1])
    definitions = {metric.name: metric.describe() for metric in active}
    set_values = {metric.name: metric.compute_set() for metric in active}
    inputs = {
        "predictions": {"root": str(preds), "sha256": _input_hashes(preds, [p.pred for p in pairing.pairs])},
        "references": {"root": str(refs), "sha256": _input_hashes(refs, [p.ref for p in pairing.pairs])},
    }
    return RunResult(
        pairs=pair_results,
        metrics=summarize(pair_results, definitions, bootstrap, set_values),
        skipped_metrics=skipped,
        unmatched_preds=pairing.unmatched_preds,
        unmatched_refs=pairing.unmatched_refs,
        options={**asdict(options), "strict": strict, "device": str(torch_device)},
        bootstrap=bootstrap.as_dict(),
        extra=dict(extra or {}),
        manifest=build_manifest(torch_device, command, started, utc_now(), inputs),
    )
