"""Scoring latent dumps: ``foresight_eval.latents`` is ``foresight-eval latents A B``.

The unit of a latent run is a matched pair of latent files (A's ``x.safetensors`` with B's
``x.safetensors``): every metric is computed over the N items of that pair, and the pair is one row of
``per_video.csv`` (its ``frames`` column holds the number of items N, ``pred``/``ref`` the A/B paths).
A broken file makes one error row; the other pairs are still scored.

Headline and CI per metric:
  - several file pairs: the mean over pairs, with a bootstrap CI over pairs (as clips in `score`);
  - one file pair: the pair's value; metrics that are a mean over items (``neighbourhood_recall``,
    ``latent_cosine``) get a bootstrap CI over items (then ``n`` counts items). The other metrics get
    none: a bootstrap over items would redo a full N x D^2 (CKA, probe) or N^2 (RSA, RBF) computation
    per resample, too costly at the sizes these metrics are meant for.
The summary records which one it is under each metric's ``ci`` key. Per-pair details (probe penalties,
RBF bandwidths, subsample sizes, intrinsic dimensions of both sets) are under the metric's ``set.per_pair``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from foresight_eval.distributed import current_world, gather_to_main, rank_device
from foresight_eval.results import fail_pair
from foresight_eval.io.files import input_hashes
from foresight_eval.metrics.registry import prepare_metrics
from foresight_eval.distributed import resolve_device
from foresight_eval.errors import InputError
from foresight_eval.io.latents import LatentOptions, load_latent_pair, pair_latents
from foresight_eval.io.pairing import ClipPair
from foresight_eval.manifest import build_manifest, utc_now
from foresight_eval.metrics.base import RunContext
from foresight_eval.metrics.latent import LatentMetric, LatentScore
from foresight_eval.results import PairResult, RunResult, summarize
from foresight_eval.stats import BootstrapConfig, mean_with_ci


def score_latent_pair(pair: ClipPair, metrics: list[LatentMetric], options: LatentOptions,
                      device: torch.device) -> tuple[PairResult, dict[str, LatentScore]]:
    """Score one latent file pair; any failure becomes an error row with a one-line reason."""
    result = PairResult(video=pair.key, pred=str(pair.pred), ref=str(pair.ref))
    scores: dict[str, LatentScore] = {}
    try:
        if pair.problem:
            raise InputError(pair.problem)
        latent_pair = load_latent_pair(pair.key, pair.pred, pair.ref, options, device)
        for metric in metrics:
            scores[metric.name] = metric.score(latent_pair)
            result.values[metric.name] = scores[metric.name].value
            if scores[metric.name].curve:
                result.per_frame[metric.name] = scores[metric.name].curve
        result.frames = latent_pair.items
    except InputError as exc:
        fail_pair(result, str(exc))
        scores = {}
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure of one pair must not lose the run
        fail_pair(result, f"{type(exc).__name__}: {exc}")
        scores = {}
    return result, scores


def latents(
    a: str | Path,
    b: str | Path,
    metrics: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    options: LatentOptions = LatentOptions(),
    strict: bool = False,
    device: str | torch.device = "auto",
    bootstrap: BootstrapConfig = BootstrapConfig(),
    extra: Mapping[str, Any] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_pair: Callable[[PairResult], None] | None = None,
    command: str | None = None,
) -> RunResult | None:
    """Compare the latents in ``a`` with those in ``b`` (two files, or two folders matched by name).

    ``metrics`` names latent metrics (default: every default latent metric); ``params`` maps a metric to
    its parameters, e.g. ``{"neighbourhood_recall": {"k": 10}}``; ``options`` says which tensor to read and
    how extra axes are reduced (see :mod:`foresight_eval.io.latents`). A is recorded as the predictions
    side and B as the references side of the run folder. Under `torchrun` the file pairs are shared out
    over the ranks and rank 0 returns the merged run (the others return None).
    """
    started = utc_now()
    a, b = Path(a), Path(b)
    world = current_world()
    torch_device = rank_device(resolve_device(device), world)
    pairing = pair_latents(a, b, strict=strict, sidecars_only=options.sidecars_only)
    active, skipped = prepare_metrics(metrics, params, RunContext(device=torch_device), inputs="latents")
    my_pairs = world.shard(pairing.pairs)
    if on_start:
        on_start(len(my_pairs))
    scored_pairs = []
    with torch.inference_mode():
        for pair in my_pairs:
            result, scores = score_latent_pair(pair, active, options, torch_device)
            for score in scores.values():  # item values travel to rank 0 under torchrun
                score.item_values = None if score.item_values is None else score.item_values.cpu()
            scored_pairs.append((result, scores))
            if on_pair:
                on_pair(result)
    gathered = gather_to_main(scored_pairs, world)
    if not world.is_main:
        return None
    order = {pair.key: index for index, pair in enumerate(pairing.pairs)}
    merged = sorted((item for rank_pairs in gathered for item in rank_pairs), key=lambda item: order[item[0].video])
    pair_results, pair_scores = [result for result, _ in merged], [scores for _, scores in merged]
    scored = [scores for scores in pair_scores if scores]
    definitions, set_values, item_values = {}, {}, {}
    for metric in active:
        items = scored[0][metric.name].item_values if len(scored) == 1 else None
        ci = "bootstrap over file pairs" if len(scored) > 1 else "bootstrap over items" if items is not None else None
        definitions[metric.name] = {**metric.describe(), "ci": ci}
        if items is not None:
            item_values[metric.name] = items.detach().double().cpu().numpy()
        details = {result.video: scores[metric.name].details
                   for result, scores in zip(pair_results, pair_scores) if scores and scores[metric.name].details}
        set_values[metric.name] = {"per_pair": details} if details else None
    summaries = summarize(pair_results, definitions, bootstrap, set_values)
    for name, values in item_values.items():
        estimate = mean_with_ci(values, bootstrap)
        summaries[name].ci_low, summaries[name].ci_high, summaries[name].n = estimate.ci_low, estimate.ci_high, estimate.n
    inputs = {
        "predictions": {"root": str(a), "sha256": input_hashes(a, [p.pred for p in pairing.pairs])},
        "references": {"root": str(b), "sha256": input_hashes(b, [p.ref for p in pairing.pairs])},
    }
    return RunResult(
        pairs=pair_results,
        metrics=summaries,
        skipped_metrics=skipped,
        unmatched_preds=pairing.unmatched_preds,
        unmatched_refs=pairing.unmatched_refs,
        options={**asdict(options), "strict": strict, "device": str(torch_device), "inputs": "latents",
                 "world_size": world.size},
        bootstrap=bootstrap.as_dict(),
        extra=dict(extra or {}),
        manifest=build_manifest(torch_device, command, started, utc_now(), inputs),
    )
