"""Paired comparisons of runs over the videos they share, and regression checks against a baseline run.

Pairing: a video counts when both runs scored it (status ``ok``) with a finite value; the difference is
taken per video, so video difficulty cancels out. The mean difference gets a seeded paired-bootstrap CI;
its p-value comes from the exact sign-flip permutation test (default), SciPy's Wilcoxon signed-rank test,
or the bootstrap (a named option, too optimistic at small n). Every p-value comes with the smallest p
the test can give at that n, and the p-values of one comparison are corrected as a family (Holm by
default; the uncorrected ones are kept). A metric with a target (:mod:`foresight_eval.targets`) is
compared on each video's distance to it. See docs/statistics.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from foresight_eval.errors import UsageError, did_you_mean, field_ref
from foresight_eval.gates.spec import parse_number
from foresight_eval.metrics.registry import get_metric_class
from foresight_eval.metrics.structural import canonical_ssim_params
from foresight_eval.results import RunResult
from foresight_eval.runs import Run, load_runs
from foresight_eval.stats import (
    DEFAULT_CORRECTION, DEFAULT_TEST, BootstrapConfig, PairedDifference, adjust_p_values, minimum_detectable_effect,
    paired_test, small_n_warning,
)
from foresight_eval.targets import describe_target, judged_direction, judged_values
from foresight_eval.io.files import json_safe

# Options that change what a metric's number means; batch size, device and strictness do not.
SCORING_OPTIONS = ("context", "frame_mismatch", "resize", "horizon_seconds")
DEFAULT_ALPHA = 0.05


class ParameterMismatch(UsageError):
    """Runs scored with different metric parameters or scoring options cannot be compared as they are."""

    def __init__(self, differences: list[str]):
        self.differences = differences
        super().__init__("runs were scored with different parameters, so their numbers mean different things:\n  "
                         + "\n  ".join(differences) + "\n(--force compares them anyway)")


def parameter_differences(runs: Sequence[Run], metrics: Sequence[str] | None = None) -> list[str]:
    """Each compatibility profile, metric parameter, weight file, set-metric protocol fingerprint
    (``fvd.protocol.n_clips.ref``...) or scoring option that is not the same in every run, as
    ``"ssim.params.mode: 'torchmetrics' (run_a), 'skimage' (run_b)"``."""
    if metrics is None:
        metrics = sorted(set.intersection(*(set(run.summary.get("metrics", {})) for run in runs)))
    differences = _profile_differences(runs)
    described = [_flatten({
        **{f"{name}.params": _recorded_params(name, run.summary["metrics"][name].get("params") or {})
           for name in metrics},
        **{f"{name}.weights": run.summary["metrics"][name].get("weights") for name in metrics},
        **{f"{name}.protocol": (run.summary["metrics"][name].get("set") or {}).get("protocol") for name in metrics},
        **{f"options.{key}": run.summary.get("options", {}).get(key) for key in SCORING_OPTIONS},
    }) for run in runs]
    for key in sorted(set().union(*described)):
        values = [flat.get(key) for flat in described]
        if any(value != values[0] for value in values[1:]):
            differences.append(f"{key}: " + ", ".join(
                f"{'not recorded' if value is None else repr(value)} ({run.name})" for value, run in zip(values, runs)))
    return differences


def _recorded_params(metric: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A run's recorded parameters of ``metric`` in today's terms: legacy SSIM mode names translated, and
    parameters added since the run was written filled with their defaults (the behaviour it had)."""
    try:
        defaults = get_metric_class(metric).defaults
    except UsageError:  # a plugin metric not installed here: its record as it is
        defaults = {}
    return {**defaults, **canonical_ssim_params(params)}


def _profile_differences(runs: Sequence[Run]) -> list[str]:
    """The profiles the runs were scored under, when they differ (by name, or by file content)."""
    records = [run.summary.get("profile") or {} for run in runs]
    differences = []
    for key, label in (("name", "profile"), ("sha256", "profile file sha256")):
        values = [record.get(key) for record in records]
        if any(value != values[0] for value in values[1:]):
            differences.append(f"{label}: " + ", ".join(
                f"{'no profile' if value is None else repr(value)} ({run.name})" for value, run in zip(values, runs)))
            break  # different names: the file hashes differ too, and say nothing more
    return differences


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif value is not None:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class PairedMetric:
    """``diff`` is the mean over shared videos of (b - a); ``mean_a``/``mean_b`` are over those videos.
    For a metric with a target they are distances to it (``direction`` is then "lower").
    ``p_value`` is the test's own; ``p_adjusted`` the family-corrected one that decides significance;
    ``p_min`` the smallest p-value the test can give with these videos."""

    metric: str
    direction: str
    a: str
    b: str
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n: int
    note: str = ""
    p_min: float | None = None
    p_adjusted: float | None = None
    # The smallest true |diff| this test would detect with 80% power (foresight_eval.stats.minimum_detectable_effect).
    mde: float | None = None

    @property
    def p_decisive(self) -> float | None:
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    def better(self, alpha: float) -> str | None:
        """"a" or "b" when the difference is significant at ``alpha`` (family-corrected p), else None."""
        p = self.p_decisive
        if p is None or p >= alpha or not self.diff or self.direction == "none":
            return None
        b_higher = self.diff > 0
        return "b" if b_higher == (self.direction == "higher") else "a"


def paired_metric(a: Run, b: Run, metric: str, test: str = DEFAULT_TEST,
                  bootstrap: BootstrapConfig = BootstrapConfig(), alpha: float = DEFAULT_ALPHA) -> PairedMetric:
    """One metric of two runs, paired over shared videos; ``alpha`` only words the small-n note."""
    metrics = a.summary["metrics"]
    direction = judged_direction(metrics, metric)
    if a.summary["metrics"][metric].get("granularity") == "set":
        mean_a, mean_b = (_headline(run, metric) for run in (a, b))
        diff = None if None in (mean_a, mean_b) else mean_b - mean_a
        return PairedMetric(metric, direction, a.name, b.name, mean_a, mean_b, diff, None, None, None, 0,
                            "run-level metric: no per-video values to pair, so no CI or test")
    values = pd.concat([judged_values(run.summary["metrics"], metric, run.per_video) for run in (a, b)],
                       axis=1, join="inner").to_numpy(np.float64)
    finite = np.isfinite(values).all(axis=1)
    note = f"{int((~finite).sum())} shared videos with non-finite values left out" if not finite.all() else ""
    note = "; ".join(filter(None, [describe_target(metrics, metric), note]))
    values = values[finite]
    if not len(values):
        return PairedMetric(metric, direction, a.name, b.name, None, None, None, None, None, None, 0,
                            note or "no videos scored in both runs")
    diffs = values[:, 1] - values[:, 0]
    result: PairedDifference = paired_test(diffs, bootstrap, test)
    warning = ("fewer than 2 shared videos: no CI or test" if result.p_value is None
               else small_n_warning(test, result.n, result.p_min, alpha))
    note = "; ".join(filter(None, [note, warning]))
    return PairedMetric(metric, direction, a.name, b.name, float(values[:, 0].mean()), float(values[:, 1].mean()),
                        result.mean, result.ci_low, result.ci_high, result.p_value, result.n, note, result.p_min,
                        mde=minimum_detectable_effect(diffs, alpha))


def correct_family(entries: Sequence[PairedMetric], correction: str) -> list[PairedMetric]:
    """The entries with ``p_adjusted`` set, corrected over all of them as one family."""
    adjusted = adjust_p_values([entry.p_value for entry in entries], correction)
    return [replace(entry, p_adjusted=p) for entry, p in zip(entries, adjusted)]


def _headline(run: Run, metric: str) -> float | None:
    raw = run.summary["metrics"][metric].get("mean")
    return None if raw is None else parse_number(raw)


@dataclass(frozen=True)
class Comparison:
    runs: list[str]
    test: str
    alpha: float
    bootstrap: dict[str, Any]
    pairs: list[PairedMetric]
    parameter_differences: list[str] = field(default_factory=list)  # non-empty only under force
    unshared_metrics: dict[str, list[str]] = field(default_factory=dict)  # run -> metrics the others lack
    correction: str = DEFAULT_CORRECTION  # over every pair x metric test of the comparison

    def winner(self, entry: PairedMetric) -> str | None:
        side = entry.better(self.alpha)
        return None if side is None else (entry.a if side == "a" else entry.b)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "runs": self.runs, "test": self.test, "alpha": self.alpha, "bootstrap": self.bootstrap,
            "correction": self.correction, "family_size": sum(entry.p_value is not None for entry in self.pairs),
            "parameter_differences": self.parameter_differences, "unshared_metrics": self.unshared_metrics,
            "pairs": [{**asdict(entry), "winner": self.winner(entry)} for entry in self.pairs],
        })


def _shared_metrics(runs: Sequence[Run], metrics: Sequence[str] | None) -> list[str]:
    present = [set(run.summary.get("metrics", {})) for run in runs]
    if metrics is None:
        return [name for name in runs[0].summary.get("metrics", {}) if all(name in p for p in present)]
    for name in metrics:
        lacking = [run.name for run, p in zip(runs, present) if name not in p]
        if lacking:
            raise UsageError(f"metric {name!r} is not in run {', '.join(lacking)}")
    return list(metrics)


def _check_parameters(runs: Sequence[Run], metrics: Sequence[str], force: bool) -> list[str]:
    differences = parameter_differences(runs, metrics)
    if differences and not force:
        raise ParameterMismatch(differences)
    return differences


def compare(
    runs: Sequence[str | Path | RunResult | Run],
    metrics: Sequence[str] | None = None,
    *,
    test: str = DEFAULT_TEST,
    alpha: float = DEFAULT_ALPHA,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    force: bool = False,
    correction: str = DEFAULT_CORRECTION,
) -> Comparison:
    """Compare every pair of runs (A-B, A-C, B-C...) on each metric they share, over shared videos.

    Raises :class:`ParameterMismatch` when the runs' metric parameters or scoring options differ,
    unless ``force``."""
    if len(runs) < 2:
        raise UsageError("compare needs at least two runs")
    loaded = load_runs(runs)
    names = _shared_metrics(loaded, metrics)
    if not names:
        raise UsageError("the runs share no metric")
    differences = _check_parameters(loaded, names, force)
    everywhere = set.intersection(*(set(run.summary.get("metrics", {})) for run in loaded))
    unshared = {run.name: sorted(set(run.summary.get("metrics", {})) - everywhere) for run in loaded}
    pairs = [paired_metric(a, b, name, test, bootstrap, alpha)
             for a, b in itertools.combinations(loaded, 2) for name in names]
    return Comparison([run.name for run in loaded], test, alpha, bootstrap.as_dict(), correct_family(pairs, correction),
                      differences, {run: lacking for run, lacking in unshared.items() if lacking}, correction)


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the baseline a metric may get: an amount in the metric's unit, or a fraction
    of the baseline's value (``relative``)."""

    amount: float = 0.0
    relative: bool = False

    def limit(self, baseline: float) -> float:
        return self.amount * abs(baseline) if self.relative else self.amount

    def __str__(self) -> str:
        return f"{self.amount:.4g}" if not self.relative else f"{self.amount * 100:.4g}%"


def parse_tolerances(specs: Sequence[str]) -> tuple[Tolerance, dict[str, Tolerance]]:
    """``["1%", "psnr=0.5", "ssim=0.2%"]`` -> (default 1% of the baseline, per-metric overrides)."""
    default, per_metric = Tolerance(), {}
    for spec in specs:
        metric, sep, raw = spec.rpartition("=")
        raw = raw.strip()
        try:
            amount = parse_number(raw)
        except ValueError:
            raise UsageError(f"{field_ref('max_regression')} expects VALUE, VALUE% or METRIC=VALUE[%], got {spec!r}") from None
        if not math.isfinite(amount) or amount < 0:
            raise UsageError(f"{field_ref('max_regression', spec)}: the tolerance must be a finite number >= 0")
        tolerance = Tolerance(amount, raw.endswith("%"))
        if sep:
            per_metric[metric.strip()] = tolerance
        else:
            default = tolerance
    return default, per_metric


@dataclass(frozen=True)
class RegressionEntry:
    """``worse_by``: how much worse the run is than the baseline (in the metric's unit; < 0 is better);
    ``limit``: the worsening the tolerance allows. ``status``: pass, fail or missing."""

    metric: str
    comparison: PairedMetric
    tolerance: str
    worse_by: float | None
    limit: float | None
    status: str
    note: str = ""

    @property
    def within_noise(self) -> bool:
        """Worse beyond the tolerance, but not significantly: passes, worth a notice."""
        return self.status == "pass" and self.worse_by is not None and self.worse_by > self.limit

    def to_dict(self) -> dict[str, Any]:
        paired = self.comparison
        return json_safe({
            "metric": self.metric, "direction": paired.direction, "baseline": paired.mean_a, "value": paired.mean_b,
            "diff": paired.diff, "ci_low": paired.ci_low, "ci_high": paired.ci_high, "p_value": paired.p_value,
            "p_adjusted": paired.p_adjusted, "p_min": paired.p_min, "minimum_detectable_effect": paired.mde,
            "n": paired.n, "tolerance": self.tolerance, "worse_by": self.worse_by, "limit": self.limit,
            "status": self.status, "note": self.note,
        })


@dataclass(frozen=True)
class RegressionReport:
    run: str
    baseline: str
    test: str
    alpha: float
    entries: list[RegressionEntry]
    parameter_differences: list[str] = field(default_factory=list)
    correction: str = DEFAULT_CORRECTION  # over the checked metrics

    @property
    def decision(self) -> str:
        return "fail" if any(entry.status != "pass" for entry in self.entries) else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "baseline": self.baseline, "test": self.test, "alpha": self.alpha,
                "correction": self.correction,
                "decision": self.decision, "parameter_differences": self.parameter_differences,
                "entries": [entry.to_dict() for entry in self.entries]}


def check_regression(
    run: str | Path | RunResult | Run,
    baseline: str | Path | RunResult | Run,
    default: Tolerance = Tolerance(),
    per_metric: Mapping[str, Tolerance] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    test: str = DEFAULT_TEST,
    alpha: float = DEFAULT_ALPHA,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    force: bool = False,
    correction: str = DEFAULT_CORRECTION,
) -> RegressionReport:
    """Fail a metric only when the run is worse than the baseline by more than its tolerance AND the
    paired difference over shared videos is significant (p < alpha), so noise does not fail a build.

    Checked: ``metrics`` if given, else every metric both runs have; a metric named in ``per_metric``
    or ``metrics`` that a run lacks is ``missing``. Run-level (set) metrics have no per-video values:
    they are judged on the tolerance alone. The p-values of the checked metrics are corrected as one
    family (``correction``); each entry also gets the minimum detectable effect of its paired differences
    (:func:`foresight_eval.stats.minimum_detectable_effect`): a pass on few videos is not "no regression"."""
    per_metric = dict(per_metric or {})
    base_run, new_run = load_runs([baseline, run])
    present = [set(r.summary.get("metrics", {})) for r in (base_run, new_run)]
    names = list(metrics) if metrics is not None else [n for n in base_run.summary.get("metrics", {}) if n in present[1]]
    names += [n for n in per_metric if n not in names]
    for name in per_metric:  # a tolerance for a metric neither run has is a typo, not a "missing" metric
        if not any(name in p for p in present):
            raise UsageError(f"{field_ref('max_regression', name + '=...')}: neither run has a metric {name!r}"
                             f"{did_you_mean(name, set().union(*present))}")
    shared = [n for n in names if all(n in p for p in present)]
    differences = _check_parameters([base_run, new_run], shared, force)
    paired = correct_family([paired_metric(base_run, new_run, name, test, bootstrap, alpha) for name in shared],
                            correction)
    by_name = {entry.metric: entry for entry in paired}
    entries = []
    for name in names:
        tolerance = per_metric.get(name, default)
        if name not in shared:
            lacking = " and ".join(r.name for r, p in zip((base_run, new_run), present) if name not in p)
            empty = PairedMetric(name, "", base_run.name, new_run.name, None, None, None, None, None, None, 0)
            entries.append(RegressionEntry(name, empty, str(tolerance), None, None, "missing", f"not in {lacking}"))
            continue
        entries.append(_judge_regression(by_name[name], tolerance, alpha))
    return RegressionReport(new_run.name, base_run.name, test, alpha, entries, differences, correction)



def _judge_regression(paired: PairedMetric, tolerance: Tolerance, alpha: float) -> RegressionEntry:
    if paired.diff is None:
        return RegressionEntry(paired.metric, paired, str(tolerance), None, None, "missing", paired.note)
    if paired.direction == "none":
        return RegressionEntry(paired.metric, paired, str(tolerance), None, None, "pass",
                               "descriptive (no direction): not judged")
    worse_by = -paired.diff if paired.direction == "higher" else paired.diff
    limit = tolerance.limit(paired.mean_a)
    if worse_by <= limit:
        verdict = "better" if worse_by < 0 else "within the tolerance"
        return RegressionEntry(paired.metric, paired, str(tolerance), worse_by, limit, "pass", verdict)
    if paired.n == 0:  # a run-level metric: nothing to test significance on
        return RegressionEntry(paired.metric, paired, str(tolerance), worse_by, limit, "fail",
                               f"worse beyond the tolerance; {paired.note}")
    if paired.p_decisive is None or paired.p_decisive >= alpha:
        p_text = "no test" if paired.p_value is None else f"p={paired.p_decisive:.3g} >= {alpha:g}"
        return RegressionEntry(paired.metric, paired, str(tolerance), worse_by, limit, "pass",
                               f"worse, not significant ({p_text})")
    return RegressionEntry(paired.metric, paired, str(tolerance), worse_by, limit, "fail",
                           "significantly worse")
