"""The scoring engine: pair clips, stream their frames in batches through every metric, summarise.

Frames are decoded in background threads and grouped into batches of ``batch_size`` frame pairs
(:mod:`foresight_eval.decoding`), so peak memory is bounded by the batch, not by the clip's length.
A clip pair that fails for any reason becomes one error row; the run goes on with the others.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from foresight_eval.distributed import current_device, current_world, rank_device, resolve_device
from foresight_eval.driver import RunPhases, RunPlan, Task, manifest_inputs, run_plan
from foresight_eval.errors import InputError, UsageError, field_ref
from foresight_eval.feature_cache import CACHE_USE_RESOURCE, frame_cache_on, open_run_cache, tensor_sha256
from foresight_eval.io.latents import LatentOptions, pair_latents
from foresight_eval.io.clips import open_clip
from foresight_eval.io.files import pair_input_hashes
from foresight_eval.io.pairing import ClipPair, pair_clips
from foresight_eval.journal import holds_run_folder
from foresight_eval.manifest import build_manifest, utc_now
from foresight_eval.metrics.base import CopiedToHost, FrameBatch, Metric, RunContext
from foresight_eval.latent_pairs import score_latent_pair
from foresight_eval.metrics.registry import get_metric_class, prepare_metrics
from foresight_eval.decoding import HostBatch, PairFrames, Prefetched
from foresight_eval.profiles import Profile, apply_profile, load_profile
from foresight_eval.options import ScoreOptions
from foresight_eval.results import PairResult, RunResult, fail_pair
from foresight_eval.stats import BootstrapConfig
from foresight_eval.study import (
    Study, WorkItem, add_horizon_seconds, load_categories, prediction_sets, select_work, study_record, summarize_study,
    unmatched,
)
from foresight_eval.timing import PairStreams
from foresight_eval.workers import Deferred, Joined, WorkerPool, default_workers


# Clip pairs decoding ahead of the one being scored on a GPU. FFmpeg's frame threading holds a stream's first
# frame back until about as many packets as threads are in (FFmpeg's choice: about one per CPU), so a 32-frame
# clip gives its first batch when it is nearly all decoded: 80-210 ms after it is opened on the H200's host
# (the longer while the metric workers match edges), against about 90 ms of GPU work per pair of the default
# suite. With one pair ahead the GPU waited for every pair's first batch. The default suite on 3 clips x 32
# frames of 640x360, 1 x H200, medians of 7 alternating rounds: 0.64 s with one pair ahead, 0.57 s with two,
# 0.59 s with three (benchmarks/RESULTS.md, issue 17's eleventh session). Host memory: each pair ahead holds
# one pair's decoding queues (foresight_eval.decoding states their bound).
PAIRS_AHEAD_ON_DEVICE = 2
# Pairs open on a GPU before the run's first batch is queued: the first pair's first batch is the run's first
# wait, and a second pair opened with it decoded beside it (at the issue-17 clip shape the second pair's first
# batches came before the first pair's, 147 ms into the run; benchmarks/RESULTS.md, the fourteenth session).
# The pairs ahead are opened once the first pair's first batch is queued.
PAIRS_OPEN_AT_THE_START_ON_DEVICE = 1


class Ahead(NamedTuple):
    """How far decoding runs ahead of the scoring (:func:`_decoding_ahead`)."""

    pairs: int  # pairs open (decoding) when the oldest is scored, the oldest included
    at_start: int  # ... before the first pair is scored
    open_before_scoring: bool  # the next pair is opened before the oldest is scored, else once its first batch is queued


def _decoding_ahead(device: torch.device) -> Ahead:
    """How far clip pairs decode ahead of the one being scored. The CPU computes each batch as it is handed one:
    the next pair, opened first, decodes during all of the scoring. A GPU only queues the work: a pair is opened
    (which reads the files' timestamps on this thread) once the oldest's first batch is queued, so that the
    device is not idle meanwhile."""
    if device.type == "cpu":
        return Ahead(pairs=1, at_start=1, open_before_scoring=True)
    return Ahead(pairs=PAIRS_AHEAD_ON_DEVICE, at_start=PAIRS_OPEN_AT_THE_START_ON_DEVICE, open_before_scoring=False)


def _to_device(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) host frames to (B, 3, H, W) float32 in [0, 1] on ``device``.

    Uploaded as stored (uint8 is a quarter of float32's bytes) and converted on the device. On the CPU, uint8
    frames are converted in one NumPy pass: the same values as PyTorch's conversion and division (both IEEE
    float32 x / 255), which take two passes and several times as long.
    """
    if device.type == "cpu" and frames.dtype == torch.uint8:
        return torch.from_numpy(np.divide(frames.numpy(), np.float32(255), dtype=np.float32)).permute(0, 3, 1, 2)
    tensor = frames.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor.float()


def _match_size(pred: torch.Tensor, ref: torch.Tensor, resize: str) -> torch.Tensor:
    if pred.shape[-2:] == ref.shape[-2:]:
        return pred
    if resize == "ref":
        resized = F.interpolate(pred, size=ref.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
        return resized.clamp_(0.0, 1.0)
    (ph, pw), (rh, rw) = pred.shape[-2:], ref.shape[-2:]
    raise InputError(f"prediction frames are {pw}x{ph}, reference frames are {rw}x{rh} (--resize ref resizes predictions)")


# A clip's per-frame values, batch by batch: (metric, horizons, frame indices, values)
PendingValues = list[tuple[str, list[int], list[int], Any]]


def _concatenated_by_device(values: Sequence[Any]) -> list[tuple[torch.Tensor, list[tuple[int, int, int]]]]:
    """The tensors among ``values``, flattened and concatenated, one concatenation per device: each with the
    (index in ``values``, start, end) of every tensor's part of it."""
    by_device: dict[torch.device, list[int]] = {}
    for index, value in enumerate(values):
        if isinstance(value, torch.Tensor):
            by_device.setdefault(value.device, []).append(index)
    concatenated = []
    for indices in by_device.values():
        ends = list(itertools.accumulate(values[i].numel() for i in indices))
        concatenated.append((torch.cat([values[i].detach().reshape(-1) for i in indices]),
                             [(i, end - values[i].numel(), end) for i, end in zip(indices, ends)]))
    return concatenated


def _copied_in_float64(named: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """A batch's per-frame values, copied (a metric may reuse its buffer at the next batch) in float64: one
    concatenation per device, whose parts they become, instead of a copy per metric (15 a batch in the default
    suite, each a kernel launch from the thread that drives the GPU)."""
    copied = list(named)
    for flat, parts in _concatenated_by_device([values for _, values in named]):
        # torch.cat promotes mixed precisions; float32 -> float64 is exact, so the order of the two does not matter
        flat = flat.to(torch.float64)
        for i, start, end in parts:
            name, values = named[i]
            copied[i] = (name, flat[start:end].view(values.shape))
    return copied


def _values_to_host(pending: PendingValues) -> PendingValues:
    """Each batch's per-frame values with the tensors among them, left on the device until now, on their way to
    the host: one copy per device, not one per metric and batch, queued without waiting for the device
    (:class:`~foresight_eval.metrics.base.CopiedToHost`); each batch's entry becomes a Deferred of its part.
    Deferred values from the worker pool as they are."""
    copied = list(pending)
    for flat, parts in _concatenated_by_device([values for *_, values in pending]):
        on_host = CopiedToHost([flat], lambda hosts: hosts[0].tolist())
        for i, start, end in parts:
            name, horizons, frame_indices, _ = pending[i]
            copied[i] = (name, horizons, frame_indices,
                         Joined([on_host], lambda flats, begin=start, end=end: flats[0][begin:end]))
    return copied


def _record_per_frame(result: PairResult, pending: PendingValues) -> None:
    """The clip's per-frame rows, in frame order per metric, from each batch's values: Deferred values, copies
    from the device or the worker pool's (waited for here; a worker's failure raises)."""
    for name, horizons, frame_indices, values in pending:
        if isinstance(values, Deferred):
            values = torch.as_tensor(values.result(), dtype=torch.float64).tolist()
        # NaN marks a frame without a value (e.g. the first frame of a consecutive-pair metric).
        result.per_frame[name].extend(row for row in zip(horizons, frame_indices, values) if not math.isnan(row[2]))


class PairInFlight:
    """A clip pair opened, its frames decoding in background threads until it is scored: the engine opens
    the next pair before scoring the current one, so the next pair's first batches are decoded while the
    device works on this one's (on a GPU, ``PAIRS_AHEAD_ON_DEVICE`` pairs ahead; see :mod:`foresight_eval.decoding`).
    A failure to open is kept and becomes the pair's error row when it is scored.

    Scoring is in two steps. :meth:`score` queues every batch's work, then the copies of its values to the
    host; :meth:`finish` waits for those copies and for the work handed to the run's worker pool (edge_f1's
    matching). The engine finishes a pair after scoring the next one: the workers match this pair's last
    batches while the device and the decoding threads work on the next pair (benchmarks/RESULTS.md, issue 17's
    eleventh session), and the host queues the next pair's work while the device finishes this one's (the
    twelfth session), instead of waiting for them at the end of every pair."""

    def __init__(self, pair: ClipPair, options: ScoreOptions, device: torch.device, *, digest_refs: bool = False):
        self.pair, self.options = pair, options
        self.result = PairResult(video=pair.key, pred=str(pair.pred), ref=str(pair.ref))
        self.failure: Exception | None = None
        self.frames: PairFrames | None = None
        self.batches: Prefetched[HostBatch] | None = None
        # Per batch: host lists once scored, or the pool's Deferred
        self._pending: PendingValues = []
        # Opened here, in the calling thread: opening can import modules on first use, and CPython 3.11 fails
        # ("SystemError: AST constructor recursion depth mismatch") when two threads compile code at once.
        try:
            if pair.problem:
                raise InputError(pair.problem)
            pred_clip, ref_clip = open_clip(pair.pred, timestamps=True), open_clip(pair.ref, timestamps=True)
            # result.media is kept on an error row: frame rates explain many failures
            self.streams = PairStreams(pred_clip, ref_clip, media=self.result.media, fps=options.fps,
                                       fps_mismatch=options.fps_mismatch, context=options.context,
                                       horizon_seconds=options.horizon_seconds, frames=options.frame_mismatch)
            self.frames = PairFrames(self.streams.pred, self.streams.ref, context=options.context,
                                     batch_size=options.batch_size, frames_mode=options.frame_mismatch,
                                     pin_memory=device.type == "cuda",
                                     digest_ref=tensor_sha256 if digest_refs else None)
            self.batches = iter(self.frames)  # decoding starts here
        except Exception as exc:  # noqa: BLE001 - raised again when the pair is scored: its error row
            self.failure = exc

    def close(self) -> None:
        """Abandon the pair (the run stopped before it was finished): its decoding threads stop, and its work
        not started in the worker pool is dropped."""
        self._stop_decoding()
        self._cancel_pool_work()

    def _stop_decoding(self) -> None:
        if self.batches is not None:
            self.batches.close()
        if self.frames is not None:
            self.frames.close()

    def _cancel_pool_work(self) -> None:
        values = [values for *_, values in self._pending]
        values += [*self.result.values.values(), *self.result.set_parts.values()]
        for value in values:
            if isinstance(value, Deferred):
                value.cancel()

    def score(self, metrics: list[Metric], device: torch.device, *,
              after_first_batch: Callable[[], None] | None = None) -> None:
        """Queue the pair's work on ``device``, and the copies of what it computes (the per-frame values, each
        metric's clip value) to the host, without waiting for them: :meth:`finish` does. Any failure
        (opening included) becomes an error row with a one-line reason. ``after_first_batch`` is called
        once, when the first batch's work is queued on the device (or when the pair ends without one)."""
        result, options = self.result, self.options
        pending_call = [after_first_batch] if after_first_batch is not None else []
        pending = self._pending
        try:
            if self.failure is not None:
                raise self.failure
            for metric in metrics:
                metric.reset()
                result.per_frame[metric.name] = []
            for host in self.batches:
                self.streams.record_sizes(host.pred, host.ref)
                frame_index = torch.from_numpy(host.frame_index)
                horizon = frame_index - options.context + 1
                ref = _to_device(host.ref, device)
                pred = _match_size(_to_device(host.pred, device), ref, options.resize)
                # non_blocking: a blocking copy of these host tensors would make the host wait for the GPU's queue
                batch = FrameBatch(self.pair.key, pred, ref, horizon.to(device, non_blocking=True),
                                   frame_index.to(device, non_blocking=True), fps=self.streams.ref_timing.fps,
                                   ref_decoded=host.ref, ref_sha256=host.ref_digest,
                                   pred_decoded=host.pred if host.pred.shape == host.ref.shape else None)  # not resized
                horizons, frame_indices = horizon.tolist(), host.frame_index.tolist()
                tensors: list[tuple[str, torch.Tensor]] = []
                for metric in metrics:
                    values = metric.update(batch)
                    if isinstance(values, torch.Tensor):
                        tensors.append((metric.name, values))
                    elif values is not None:
                        pending.append((metric.name, horizons, frame_indices, values))
                pending.extend((name, horizons, frame_indices, values)
                               for name, values in _copied_in_float64(tensors))
                while pending_call:
                    pending_call.pop()()
            if self.frames.total <= options.context:
                raise InputError(f"clip has {self.frames.total} frames, none left after --context {options.context}")
            result.frames = self.frames.total - options.context
            self._pending = _values_to_host(pending)
            for metric in metrics:
                # A set-granular metric's compute() is the clip's part of the run-level value. Either may be a
                # Deferred of it (the worker pool's, or a copy from the device on its way), which finish() waits for.
                parts = result.set_parts if metric.info.granularity == "set" else result.values
                parts[metric.name] = metric.compute()
        except InputError as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - an unforeseen failure of one clip must not lose the run
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            while pending_call:
                pending_call.pop()()
            self._stop_decoding()  # a failed clip's frames still decoding are not needed

    def finish(self) -> PairResult:
        """The pair's result, once its values are on the host and the work it handed to the worker pool is done
        (both waited for here): its per-frame rows and values. A worker's failure makes the pair an error row,
        as any failure in :meth:`score` does."""
        result = self.result
        if not result.ok:
            return result
        try:
            _record_per_frame(result, self._pending)
            for parts in (result.values, result.set_parts):
                for name, value in parts.items():
                    if isinstance(value, Deferred):
                        parts[name] = value.result()
        except InputError as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - as in score()
            self._fail(f"{type(exc).__name__}: {exc}")
        return result

    def _fail(self, reason: str) -> None:
        self._cancel_pool_work()  # nobody will read the rest
        fail_pair(self.result, reason)
        self._pending = []


def score_pair(pair: ClipPair, metrics: list[Metric], options: ScoreOptions, device: torch.device, *,
               digest_refs: bool = False) -> PairResult:
    """Score one clip pair; any failure becomes an error row with a one-line reason. ``digest_refs``: hash each
    batch's reference frames in the decoding thread (for metrics that read the reference cache)."""
    opened = PairInFlight(pair, options, device, digest_refs=digest_refs)
    opened.score(metrics, device)
    return opened.finish()


def _split_by_inputs(names: Sequence[str] | None, with_latents: bool) -> tuple[list[str] | None, list[str] | None]:
    """Named metrics split into frame metrics and latent metrics (None: every default one of that kind)."""
    if names is None:
        return None, None
    frame_names = [n for n in names if get_metric_class(n).info.inputs == "frames"]
    latent_names = [n for n in names if get_metric_class(n).info.inputs == "latents"]
    if latent_names and not with_latents:
        raise UsageError(f"latent metrics {latent_names} need {field_ref('latents')} (<clip>.latents.* files beside "
                         "the clips)")
    return frame_names, latent_names or None


def _params_for(params: Mapping[str, Mapping[str, Any]] | None, inputs: str) -> dict:
    """The parameters of the metrics of one input kind (``prepare_metrics`` refuses parameters of others)."""
    return {name: value for name, value in (params or {}).items() if get_metric_class(name).info.inputs == inputs}


class SidecarLatents:
    """Latent metrics of the ``<clip>.latents.<suffix>`` files beside each scored clip pair."""

    def __init__(self, preds: Path, refs: Path, options: LatentOptions, names: list[str] | None,
                 params: Mapping[str, Mapping[str, Any]], context: RunContext):
        self.options, self.device = options, context.device
        self.metrics, self.skipped = prepare_metrics(names, params, context, inputs="latents")
        self.pairs = {pair.key: pair for pair in pair_latents(preds, refs, sidecars_only=True).pairs}

    def add_to(self, result: PairResult) -> None:
        """Score the clip's latents into its row; a missing or broken sidecar makes it an error row."""
        pair = self.pairs.get(result.video)
        if pair is None:
            fail_pair(result, f"latents: no {result.video}.latents.* file beside both the prediction and the reference")
            return
        latent_result = score_latent_pair(pair, self.metrics, self.options, self.device)
        if not latent_result.ok:
            fail_pair(result, f"latents: {latent_result.error}")
            return
        result.values.update(latent_result.values)
        result.per_frame.update(latent_result.per_frame)


@holds_run_folder
def score(
    preds: str | Path | Mapping[str, str | Path] | Sequence[str | Path],
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
    run_dir: str | Path | None = None,
    resume: bool = False,
    latents: LatentOptions | None = None,
    on_start: Callable[[int], None] | None = None,
    on_pair: Callable[[PairResult], None] | None = None,
    command: str | None = None,
    profile: str | Path | Profile | None = None,
    study: Study = Study(),
) -> RunResult | None:
    """Score every prediction clip under ``preds`` against its reference under ``refs``.

    ``preds`` may also be several prediction sets of one model (seeds): a mapping seed name -> folder,
    or a list of folders (named by folder); ``study`` selects a subset of the clips and labels them with
    categories (see :mod:`foresight_eval.study`).

    ``metrics`` names the metrics to run (default: every default frame metric that can run here);
    ``params`` maps a metric name to its parameters, e.g. ``{"ssim": {"mode": "skimage"}}``.
    With ``run_dir`` the run folder is written there, and each finished pair is journaled as it finishes;
    ``resume`` reuses the pairs an interrupted run in ``run_dir`` already finished (same inputs, same
    metric parameters). Under `torchrun` each rank scores its share of the pairs and rank 0 merges them
    and returns the run (other ranks return None); the result equals a single-process run's.
    With ``latents``, each clip's ``<clip>.latents.<suffix>`` sidecar files beside the prediction and the
    reference are scored too, by the latent metrics (named in ``metrics``, or every default one), and
    join the clip's row; a clip without both sidecars is an error row.
    The reference side of metrics is cached across runs in ``resources["cache_dir"]`` (absent: the user cache
    folder; None: no cache); ``options.workers`` processes do metrics' CPU-bound work (docs/speed.md).
    ``on_start`` gets this process's number of pairs, ``on_pair`` each finished pair (for progress).
    ``profile`` (a packaged profile's name, a profile file or a :class:`Profile`) scores under that
    convention: its metrics (``metrics`` may name a subset), parameters and options; a parameter or
    option that contradicts it is a UsageError. The profile is recorded in the run.
    """
    started, phases = utc_now(), RunPhases()
    profile_record = None
    if profile is not None:
        chosen = load_profile(profile)
        metrics, params, options = apply_profile(chosen, metrics, params, options)
        profile_record = chosen.record()
    sets, refs = prediction_sets(preds), Path(refs)
    world = current_world()
    torch_device = rank_device(resolve_device(device), world)
    workers = default_workers(torch_device.type) if options.workers is None else options.workers
    run_context = RunContext(
        device=torch_device, weights_dir=Path(weights_dir) if weights_dir else None, resources=dict(resources or {}),
        pool=WorkerPool(workers),
    )
    # The reference-side cache, on by default (resources["cache_dir"]: None turns it off); unwritable: off, one warning.
    cache = open_run_cache(run_context.resources, torch_device)
    run_context.resources.update({"cache_dir": cache.root, CACHE_USE_RESOURCE: cache})
    pairings = {seed: pair_clips(root, refs, strict=strict) for seed, root in sets.items()}
    work, subset = select_work(pairings, sets, study)
    frame_names, latent_names = _split_by_inputs(metrics, latents is not None)
    # Only latent metrics named: the clips are still read (pairing, frame counts), but no frame metric runs.
    active, skipped = ([], {}) if frame_names == [] else prepare_metrics(
        frame_names, _params_for(params, "frames"), run_context)
    latent_scorer = None
    if latents is not None:
        if len(sets) > 1:
            raise UsageError(f"{field_ref('latents')} scores one prediction set; it does not take seeds")
        latent_scorer = SidecarLatents(next(iter(sets.values())), refs, latents, latent_names,
                                       _params_for(params, "latents"), run_context)
        skipped.update(latent_scorer.skipped)
    definitions = {metric.name: metric.describe() for metric in active + (latent_scorer.metrics if latent_scorer else [])}
    settings = {"options": {"context": options.context, "frame_mismatch": options.frame_mismatch, "resize": options.resize,
                            "fps": options.fps, "fps_mismatch": options.fps_mismatch,
                            "horizon_seconds": options.horizon_seconds},
                "profile": profile_record and {"name": profile_record["name"], "sha256": profile_record["sha256"]}}
    if "" not in sets:  # a seeded study: its pairs are (seed, clip); the files' hashes tie them to their folders
        settings["seeds"] = list(sets)
    plan = RunPlan(work, key=lambda item: (item.seed, item.pair.key), metrics=definitions, skipped=skipped,
                   settings=settings, world=world)

    # Each pair is opened (its decoding started) before the previous one is scored, or while it is, so that it
    # decodes meanwhile (on a GPU, PAIRS_AHEAD_ON_DEVICE pairs ahead); and it is finished (the worker pool's
    # work for it collected) after the next one is scored, so that the pool works meanwhile: results come late.
    in_flight: list[tuple[Task[WorkItem], PairInFlight]] = []  # opened: decoding
    scored: list[tuple[Task[WorkItem], PairInFlight]] = []  # scored: the pool's work for it may be running

    def finish_scored() -> list[PairResult]:
        done = []
        while scored:
            task, opened = scored.pop(0)
            result = opened.finish()
            result.seed = task.item.seed
            if latent_scorer is not None and result.ok:
                latent_scorer.add_to(result)
            done.append(result)
        return done

    def score_opened(task: Task[WorkItem], opened: PairInFlight,
                     open_next: Callable[[], None] | None = None) -> list[PairResult]:
        nonlocal scoring_started
        scoring_started = True
        opened.score(active, torch_device, after_first_batch=open_next)
        done = finish_scored()
        scored.append((task, opened))
        return done

    ahead = _decoding_ahead(torch_device)
    scoring_started = False

    def score_oldest(open_next: Callable[[], None] | None = None) -> list[PairResult]:
        if in_flight:
            return score_opened(*in_flight.pop(0), open_next)
        if open_next is not None:
            open_next()
        return []

    def score_item(tasks: list[Task[WorkItem]]) -> list[PairResult]:
        (task,) = tasks
        pair = task.item.pair if task.problem is None else replace(task.item.pair, problem=task.problem)

        def open_pair() -> None:
            in_flight.append((task, PairInFlight(pair, options, torch_device, digest_refs=digest_refs)))

        if len(in_flight) < (ahead.pairs if scoring_started else ahead.at_start):
            open_pair()
            return []
        if ahead.open_before_scoring:
            open_pair()
            return score_opened(*in_flight.pop(0))
        return score_oldest(open_pair)

    def score_the_rest() -> list[PairResult]:
        done = []
        while in_flight:
            done += score_oldest()
        return done + finish_scored()

    digest_refs = frame_cache_on(run_context.resources) and any(
        getattr(metric, "reads_reference_cache", False) for metric in active)
    phases.end("setup")
    # the metrics' worker processes end with this rank's share; graphs are captured on the run's device
    # (and the cache's entries are all written by the end)
    with run_context.pool, cache, current_device(torch_device):
        try:
            gathered = run_plan(plan, score_item, finish=score_the_rest,
                                hash_inputs=lambda item: pair_input_hashes(item.pair, item.root, refs),
                                run_dir=run_dir, resume=resume, on_start=on_start, on_result=on_pair,
                                rank_extra=lambda: phases.end("scoring"))
        finally:  # interrupted: the pairs opened ahead are not scored, nor the pair scored last finished
            for _, opened in in_flight + scored:
                opened.close()
    if gathered is None:
        return None
    phases.end("gather")
    pair_results = gathered.results
    set_values = {
        metric.name: metric.compute_set([r.set_parts[metric.name] for r in pair_results if metric.name in r.set_parts])
        for metric in active
    }
    categories = None if study.categories is None else load_categories(
        study.categories, list(dict.fromkeys(item.pair.key for item in work)))
    record = study_record(pair_results, sets, subset, study, categories)
    summaries = summarize_study(pair_results, definitions, bootstrap, set_values, list(sets), categories)
    add_horizon_seconds(summaries, record["timing"].get("common_fps"))
    # Annotation, detection and mask files are inputs too: their hashes come with the resources.
    inputs = {**manifest_inputs(sets, refs, pair_results), **run_context.resources.get("input_files", {})}
    phases.end("merge")
    run = RunResult(
        pairs=pair_results,
        metrics=summaries,
        skipped_metrics=skipped,
        unmatched_preds=unmatched(pairings, "unmatched_preds"),
        unmatched_refs=unmatched(pairings, "unmatched_refs"),
        options={**asdict(options), "strict": strict, "device": str(torch_device), "world_size": world.size},
        bootstrap=bootstrap.as_dict(),
        extra=dict(extra or {}),
        manifest={**build_manifest(torch_device, command, started, utc_now(), inputs, metrics=[m.name for m in active]),
                  "study": study.as_dict(), "timings": phases.record(gathered.rank_extras),
                  "metric_workers": run_context.pool.describe(), "reference_cache": cache.as_dict()},
        profile=profile_record,
        study=record,
    )
    if run_dir is not None:
        run.write(Path(run_dir))
    return run

