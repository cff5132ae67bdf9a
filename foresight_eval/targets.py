"""Which run is better on a metric: by its direction, or by the distance to its target.

Most metrics are better the higher (PSNR) or the lower (LPIPS) they are. Some are best at a value:
a ``*_delta`` metric (prediction minus reference) is best at 0, and ``tc`` or ``flicker`` of a prediction
are best at the *reference video's own* value. A prediction that freezes scores the most "consistent"
``tc`` (1) and the least ``flicker`` (0) possible, steadier than the real video: ranking by the extreme
would crown it. So a metric with a ``target`` (:attr:`foresight_eval.metrics.base.MetricInfo.target`)
is judged by ``|value - target|``, lower is better; one whose target is ``"reference"`` is judged by its
``<name>_delta`` companion (``|delta| = |value - reference's value|``), and cannot be ranked without it.

Everything here reads run summaries (``summary["metrics"]``) and per-video values, never the registry,
except for runs scored before targets were recorded (their definitions lack ``target``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

REFERENCE = "reference"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def delta_name(metric: str) -> str:
    return f"{metric}_delta"


def metric_target(metric: str, definition: dict[str, Any]) -> float | str | None:
    """The recorded target of ``metric`` (a number, "reference" or None); for runs scored before targets
    were recorded, the registered metric's own."""
    if "target" in definition:
        return definition["target"]
    from foresight_eval.errors import UsageError
    from foresight_eval.metrics.registry import get_metric_class  # imports torch: only for old runs

    try:
        return get_metric_class(metric).info.target
    except UsageError:
        return None


def badness(metrics: dict[str, dict[str, Any]], metric: str) -> float:
    """A run's standing on ``metric`` from its summary's ``metrics`` table, lower is better: the mean
    (negated when higher is better; +inf PSNR is the best there is), or the mean's distance to the
    target. NaN when the run cannot be judged on it (no mean, a "reference" target without its delta,
    a descriptive metric)."""
    definition = metrics[metric]
    target = metric_target(metric, definition)
    if target == REFERENCE:
        return badness(metrics, delta_name(metric)) if delta_name(metric) in metrics else math.nan
    value = _number(definition.get("mean"))
    if target is not None:
        return abs(value - float(target))
    direction = definition.get("direction")
    if direction == "higher":
        return -value
    return value if direction == "lower" else math.nan


def judged_values(metrics: dict[str, dict[str, Any]], metric: str, per_video: pd.DataFrame) -> pd.Series:
    """Per-video values the paired tests compare for ``metric``, indexed by video (a seeded run's averaged
    over its seeds): the values themselves, or for a metric with a target their distance to it (then lower
    is better)."""
    target = metric_target(metric, metrics[metric])
    column = delta_name(metric) if target == REFERENCE else metric
    if column not in per_video.columns:
        return pd.Series(dtype=float)
    rows = per_video[per_video["status"] == "ok"]
    values = pd.to_numeric(rows.set_index("video")[column], errors="coerce").dropna()
    if "seed" in rows.columns:  # a seeded run: a clip's value is its mean over seeds (foresight_eval.study)
        values = values.groupby(level=0, sort=False).mean()
    if target is None:
        return values
    return (values - (0.0 if target == REFERENCE else float(target))).abs()


def judged_direction(metrics: dict[str, dict[str, Any]], metric: str) -> str:
    """The direction of :func:`judged_values`: "lower" (a distance) for a metric with a target."""
    if metric_target(metric, metrics[metric]) is not None:
        return "lower"
    return metrics[metric].get("direction", "")


def describe_target(metrics: dict[str, dict[str, Any]], metric: str) -> str:
    """"" for a metric without a target, else how it is judged, for notes and table footers."""
    target = metric_target(metric, metrics[metric])
    if target is None:
        return ""
    if target == REFERENCE:
        return f"judged by |{delta_name(metric)}| (best at the reference's own value)"
    return f"judged by the distance to {float(target):g}"
