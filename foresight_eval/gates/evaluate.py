"""Judging a run against a gate set: each metric's status, each gate's decision, the overall decision."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from foresight_eval.errors import UsageError, close_matches, did_you_mean
from foresight_eval.gates.spec import Criterion, GateSet, parse_number
from foresight_eval.runs import RunLike, read_summary
from foresight_eval.targets import badness, metric_target
from foresight_eval.io.files import json_safe

Status = Literal["pass", "accepted", "fail", "missing"]
STATUSES: tuple[Status, ...] = ("pass", "accepted", "fail", "missing")


@dataclass(frozen=True)
class GateEntry:
    """One metric of one gate, judged. Readable as attributes or as a mapping (``entry["status"]``)."""

    gate: str
    metric: str
    label: str
    value: float | None
    threshold: float
    direction: str
    tolerance: float
    required: bool
    status: Status
    note: str = ""
    category: str | None = None  # judged on this category's clips only

    @property
    def blocking(self) -> bool:
        """A required entry that neither passed nor was accepted fails its gate."""
        return self.required and self.status in ("fail", "missing")

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class GateReport:
    gate_set: str
    entries: list[GateEntry]
    source: str = ""
    path: str = ""
    gates: dict[str, str] = field(default_factory=dict)  # gate name -> "pass" / "fail"

    @property
    def decision(self) -> str:
        return "fail" if any(entry.blocking for entry in self.entries) else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"gate_set": self.gate_set, "source": self.source, "path": self.path, "decision": self.decision,
                "gates": dict(self.gates), "entries": [entry.to_dict() for entry in self.entries]}


def evaluate_gates(run: RunLike, gate_set: GateSet) -> GateReport:
    """Judge ``run`` (a run folder, a loaded ``summary.json`` dict or a RunResult) against ``gate_set``.

    Values come from ``summary["metrics"][name]["mean"]``, else from the run-level figures in
    ``summary["extra"]`` (``score --extra latency_overhead=0.319``)."""
    summary = read_summary(run)
    entries = []
    for gate in gate_set.gates:
        for criterion in gate.criteria:
            value, note = _figure(summary, criterion)
            status, judged = _judge(value, criterion) if value is not None else ("missing", note)
            entries.append(GateEntry(gate.name, criterion.metric, criterion.label or criterion.metric, value,
                                     criterion.threshold, criterion.direction, criterion.tolerance,
                                     criterion.required, status, judged, criterion.category))
    decisions = {gate.name: "fail" if any(e.blocking for e in entries if e.gate == gate.name) else "pass"
                 for gate in gate_set.gates}
    return GateReport(gate_set.name, entries, gate_set.source, gate_set.path, decisions)


def _figure(summary: dict[str, Any], criterion: Criterion) -> tuple[float | None, str]:
    """The run's value for the criterion's metric, or None and why there is none."""
    name = criterion.metric
    metric = summary.get("metrics", {}).get(name)
    if metric is not None:
        recorded = metric.get("params") or {}
        for key, wanted in (criterion.params or {}).items():
            if recorded.get(key) != wanted:
                return None, f"scored with {key}={recorded.get(key)!r}; the gate is defined for {key}={wanted!r}"
        raw, where = metric.get("mean"), "its mean"
        if criterion.category is not None:
            categories = metric.get("by_category")
            if categories is None:
                return None, "the run has no categories (score --categories)"
            if criterion.category not in categories:
                return None, f"no clip of category {criterion.category!r} (categories: {', '.join(categories)})"
            raw, where = categories[criterion.category].get("mean"), f"its mean over category {criterion.category!r}"
    elif name in summary.get("extra", {}) and criterion.category is None:
        raw, where = summary["extra"][name], "the run-level figure"
    else:
        reason = summary.get("skipped_metrics", {}).get(name)
        if reason:
            return None, f"skipped when scoring: {reason}"
        _refuse_typo(summary, criterion)
        return None, "not in the run"
    if criterion.direction == "target":
        return _distance(summary["metrics"], name) if metric is not None else (None, f"{where} has no target")
    if raw is None:
        return None, f"{where} is empty (no video had a value)"
    try:
        value = parse_number(raw)
    except ValueError as exc:
        return None, f"{where}: {exc}"
    return (None, f"{where} is NaN") if math.isnan(value) else (value, "")


def _refuse_typo(summary: dict[str, Any], criterion: Criterion) -> None:
    """A gate metric that no metric of the package or its plugins is called, but that is close to one
    (or to a figure of the run), is a typo: a usage error (exit 2) rather than a silent "missing"."""
    from foresight_eval.metrics.registry import metric_classes  # imports torch: only for unknown names

    registered = set(metric_classes())
    if criterion.metric in registered:
        return
    known = registered | set(summary.get("metrics", {})) | set(summary.get("extra", {}))
    if close_matches(criterion.metric, known):
        where = f"{criterion.where}: " if criterion.where else ""
        raise UsageError(f"{where}gate metric {criterion.metric!r} is not a metric foresight-eval knows"
                         f"{did_you_mean(criterion.metric, known)}")


def _distance(metrics: dict[str, Any], name: str) -> tuple[float | None, str]:
    """A ``direction: target`` gate's value: the metric's distance to its target (foresight_eval.targets)."""
    if metric_target(name, metrics[name]) is None:
        return None, f"{name} has no target (best at an extreme): gate it with direction higher or lower"
    distance = badness(metrics, name)
    if math.isnan(distance):
        return None, f"no distance to the target (needs {name}_delta in the run, and a mean)"
    return distance, ""


def _judge(value: float, criterion: Criterion) -> tuple[Status, str]:
    """pass at or beyond the threshold; accepted when short of it by at most ``tolerance`` x |threshold|.
    A ``target`` gate's value is a distance: at most the threshold passes."""
    shortfall = criterion.threshold - value if criterion.direction == "higher" else value - criterion.threshold
    if shortfall <= 0:
        return "pass", ""
    relative = shortfall / abs(criterion.threshold) if criterion.threshold else math.inf
    side = "below" if criterion.direction == "higher" else "above"  # a target gate: the distance is above
    note = f"{relative:.1%} {side} the threshold"
    if relative <= criterion.tolerance:
        return "accepted", f"{note}, within the {criterion.tolerance:.1%} tolerance"
    return "fail", note + (f", beyond the {criterion.tolerance:.1%} tolerance" if criterion.tolerance else "")
