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

The run goes through the run driver (:mod:`foresight_eval.driver`): sharded over `torchrun` ranks and, with
a run folder, journaled pair by pair so that ``resume`` finishes an interrupted run; the item values and
details a summary needs travel in the journal as JSON (:mod:`foresight_eval.latent_pairs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from foresight_eval.distributed import current_world, rank_device, resolve_device
from foresight_eval.driver import RunPhases, RunPlan, Task, manifest_inputs, run_plan
from foresight_eval.io.files import pair_input_hashes
from foresight_eval.io.latents import LatentOptions, pair_latents
from foresight_eval.io.pairing import ClipPair
from foresight_eval.journal import holds_run_folder
from foresight_eval.latent_pairs import details, item_values, score_latent_pair
from foresight_eval.manifest import build_manifest, utc_now
from foresight_eval.metrics.base import RunContext
from foresight_eval.metrics.latent import LatentMetric
from foresight_eval.metrics.registry import prepare_metrics
from foresight_eval.results import MetricSummary, PairResult, RunResult, summarize
from foresight_eval.stats import BootstrapConfig, mean_with_ci


@holds_run_folder
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
    run_dir: str | Path | None = None,
    resume: bool = False,
) -> RunResult | None:
    """Compare the latents in ``a`` with those in ``b`` (two files, or two folders matched by name).

    ``metrics`` names latent metrics (default: every default latent metric); ``params`` maps a metric to
    its parameters, e.g. ``{"neighbourhood_recall": {"k": 10}}``; ``options`` says which tensor to read and
    how extra axes are reduced (see :mod:`foresight_eval.io.latents`). A is recorded as the predictions
    side and B as the references side of the run folder. Under `torchrun` the file pairs are shared out
    over the ranks and rank 0 returns the merged run (the others return None).
    With ``run_dir`` the run folder is written there and each finished file pair is journaled as it
    finishes; ``resume`` reuses the pairs an interrupted run in ``run_dir`` already finished (same input
    files, same metric parameters and options), as :func:`foresight_eval.engine.score` does.
    """
    started, phases = utc_now(), RunPhases()
    a, b = Path(a), Path(b)
    world = current_world()
    torch_device = rank_device(resolve_device(device), world)
    pairing = pair_latents(a, b, strict=strict, sidecars_only=options.sidecars_only)
    active, skipped = prepare_metrics(metrics, params, RunContext(device=torch_device), inputs="latents")
    plan = RunPlan(pairing.pairs, key=lambda pair: ("", pair.key), skipped=skipped, world=world,
                   metrics={metric.name: metric.describe() for metric in active},
                   settings={"inputs": "latents", "options": asdict(options)})

    def score_item(tasks: list[Task[ClipPair]]) -> list[PairResult]:
        (task,) = tasks
        pair = task.item if task.problem is None else replace(task.item, problem=task.problem)
        return [score_latent_pair(pair, active, options, torch_device)]

    phases.end("setup")
    gathered = run_plan(plan, score_item, hash_inputs=lambda pair: pair_input_hashes(pair, a, b),
                        run_dir=run_dir, resume=resume, on_start=on_start, on_result=on_pair,
                        rank_extra=lambda: phases.end("scoring"))
    if gathered is None:
        return None
    phases.end("gather")
    pair_results = gathered.results
    summaries = _summaries(active, pair_results, bootstrap)
    phases.end("merge")
    run = RunResult(
        pairs=pair_results,
        metrics=summaries,
        skipped_metrics=skipped,
        unmatched_preds=pairing.unmatched_preds,
        unmatched_refs=pairing.unmatched_refs,
        options={**asdict(options), "strict": strict, "device": str(torch_device), "inputs": "latents",
                 "world_size": world.size},
        bootstrap=bootstrap.as_dict(),
        extra=dict(extra or {}),
        manifest={**build_manifest(torch_device, command, started, utc_now(), manifest_inputs({"": a}, b, pair_results)),
                  "timings": phases.record(gathered.rank_extras)},
    )
    if run_dir is not None:
        run.write(Path(run_dir))
    return run


def _summaries(active: list[LatentMetric], pair_results: list[PairResult],
               bootstrap: BootstrapConfig) -> dict[str, MetricSummary]:
    """Each metric's summary: over file pairs, or for a single pair its value with, for the metrics that keep
    per-item values, a bootstrap CI over the items (see the module docstring)."""
    scored = [result for result in pair_results if result.ok]
    definitions, set_values, items = {}, {}, {}
    for metric in active:
        one = item_values(scored[0], metric.name) if len(scored) == 1 else None
        ci = "bootstrap over file pairs" if len(scored) > 1 else "bootstrap over items" if one is not None else None
        definitions[metric.name] = {**metric.describe(), "ci": ci}
        if one is not None:
            items[metric.name] = one
        per_pair = {result.video: details(result, metric.name) for result in scored if details(result, metric.name)}
        set_values[metric.name] = {"per_pair": per_pair} if per_pair else None
    summaries = summarize(pair_results, definitions, bootstrap, set_values)
    for name, values in items.items():
        estimate = mean_with_ci(values, bootstrap)
        summary = summaries[name]
        summary.ci_low, summary.ci_high, summary.n = estimate.ci_low, estimate.ci_high, estimate.n
    return summaries
