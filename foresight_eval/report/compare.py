"""What reports and leaderboards need to compare runs fairly: whether two runs measured the same thing,
which run is best on a metric, and whether two runs differ significantly.

Significance is :func:`foresight_eval.compare.paired_metric`'s exact sign-flip permutation test over the
clips both runs scored, at alpha = 1 - the runs' CI level, Holm-corrected over every test one report
table or leaderboard makes (:func:`separations`). Pairing by clip removes the clip-to-clip spread that
makes two runs' separate CIs overlap even when one run is better on nearly every clip. A run-level
metric (no per-clip values, e.g. COCO mAP) has no test: never significant. "Best" follows
:func:`foresight_eval.targets.badness`: the extreme, or the closest to the metric's target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from foresight_eval.compare import correct_family, paired_metric, parameter_differences
from foresight_eval.runs import Run
from foresight_eval.stats import BootstrapConfig
from foresight_eval.targets import badness


def incompatibilities(a: Run, b: Run) -> list[str]:
    """Why the numbers of run ``b`` cannot be ranked against those of run ``a`` (empty: they can):
    metric parameters or scoring options differ, the clip sets differ, or the reference files do."""
    reasons = parameter_differences([a, b], shared_metrics([a, b]))
    videos_a, videos_b = set(a.per_video["video"]), set(b.per_video["video"])
    if videos_a != videos_b:
        only_a, only_b = sorted(videos_a - videos_b), sorted(videos_b - videos_a)
        reasons.append(f"clip sets differ: {len(only_a)} only in {a.label} ({_some(only_a)}), "
                       f"{len(only_b)} only in {b.label} ({_some(only_b)})")
    hashes_a, hashes_b = _reference_hashes(a), _reference_hashes(b)
    changed = sorted(name for name in set(hashes_a) & set(hashes_b) if hashes_a[name] != hashes_b[name])
    if changed:
        reasons.append(f"reference files differ in content (SHA-256): {_some(changed)}")
    return reasons


def shared_metrics(runs: Sequence[Run]) -> list[str]:
    """Metrics every run scored, in the first run's order."""
    return [name for name in runs[0].metrics if all(name in run.metrics for run in runs[1:])]


def all_metrics(runs: Sequence[Run]) -> list[str]:
    """Every metric any run scored, in first-seen order."""
    return list(dict.fromkeys(name for run in runs for name in run.metrics))


def best_run(runs: Sequence[Run], metric: str) -> Run | None:
    """The run with the best mean on ``metric`` (by its direction or its distance to its target; +inf is
    the best PSNR); None when no run can be judged on it."""
    scored = [(badness(run.metrics, metric), run) for run in runs if metric in run.metrics]
    scored = [(value, run) for value, run in scored if not math.isnan(value)]
    if not scored:
        return None
    return min(scored, key=lambda item: item[0])[1]


def separations(questions: Sequence[tuple[Run, Run, str]]) -> dict[tuple[str, str, str], bool]:
    """(run a, run b, metric) -> whether the paired test over shared clips separates them, every question
    answered as one family (Holm-corrected) at alpha = 1 - the first run's CI level; too few clips: False."""
    if not questions:
        return {}
    config = bootstrap_config(questions[0][0])
    alpha = 1.0 - config.confidence
    tested = correct_family([paired_metric(a, b, metric, bootstrap=config, alpha=alpha)
                             for a, b, metric in questions], "holm")
    return {(a.label, b.label, metric): entry.better(alpha) is not None
            for (a, b, metric), entry in zip(questions, tested)}


def bootstrap_config(run: Run) -> BootstrapConfig:
    recorded: dict[str, Any] = run.summary.get("bootstrap") or {}
    known = {key: recorded[key] for key in ("confidence", "n_resamples", "method", "seed") if key in recorded}
    return BootstrapConfig(**known)


def _reference_hashes(run: Run) -> dict[str, str]:
    return run.summary.get("manifest", {}).get("inputs", {}).get("references", {}).get("sha256", {}) or {}


def _some(names: list[str], limit: int = 3) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f", … (+{len(names) - limit})" if len(names) > limit else "")
