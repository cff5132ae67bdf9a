"""`check`: judge a run against gate sets and/or a baseline run, and render the verdict for CI systems
(JUnit XML for test-report viewers, workflow commands for GitHub Actions annotations)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foresight_eval.compare import DEFAULT_ALPHA, RegressionEntry, RegressionReport, Tolerance, check_regression
from foresight_eval.errors import UsageError, field_ref
from foresight_eval.gates import GateEntry, GateReport, GateSet, evaluate_gates, load_gates
from foresight_eval.runs import read_summary
from foresight_eval.stats import DEFAULT_CORRECTION, DEFAULT_TEST, BootstrapConfig

OPERATORS = {"higher": ">=", "lower": "<=", "target": "distance to target <="}


@dataclass(frozen=True)
class CheckResult:
    run: str
    gate_reports: list[GateReport] = field(default_factory=list)
    regression: RegressionReport | None = None

    @property
    def decision(self) -> str:
        reports = [*self.gate_reports, *([self.regression] if self.regression else [])]
        return "fail" if any(report.decision == "fail" for report in reports) else "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "decision": self.decision, "gates": [r.to_dict() for r in self.gate_reports],
                "baseline": self.regression.to_dict() if self.regression else None}


def check(
    run: str | Path,
    gates: Sequence[str | Path | GateSet] = (),
    baseline: str | Path | None = None,
    max_regression: Tolerance = Tolerance(),
    per_metric: dict[str, Tolerance] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    test: str = DEFAULT_TEST,
    alpha: float = DEFAULT_ALPHA,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    force: bool = False,
    correction: str = DEFAULT_CORRECTION,
) -> CheckResult:
    """Judge ``run`` against each gate set (preset names, gate files or loaded sets) and, with
    ``baseline``, against that run (see :func:`foresight_eval.compare.check_regression`)."""
    if not gates and baseline is None:
        raise UsageError(f"nothing to check against: give {field_ref('gates')} and/or {field_ref('baseline')}")
    summary = read_summary(run)  # gates need only the summary; a baseline check also reads per_video.csv
    gate_sets = [g if isinstance(g, GateSet) else load_gates(g) for g in gates]
    reports = [evaluate_gates(summary, gate_set) for gate_set in gate_sets]
    regression = None
    if baseline is not None:
        regression = check_regression(run, baseline, max_regression, per_metric, metrics,
                                      test=test, alpha=alpha, bootstrap=bootstrap, force=force,
                                      correction=correction)
    return CheckResult(Path(run).resolve().name, reports, regression)


def gate_message(entry: GateEntry) -> str:
    value = "no value" if entry.value is None else f"{entry.value:.4g}"
    where = "" if entry.category is None else f" (category {entry.category})"
    message = f"{entry.metric}{where} = {value}, needs {OPERATORS[entry.direction]} {entry.threshold:.4g}: {entry.status}"
    kind = "" if entry.required else " (informational)"
    return message + kind + (f"; {entry.note}" if entry.note else "")


def regression_message(entry: RegressionEntry) -> str:
    paired = entry.comparison
    if paired.diff is None:
        return f"{entry.metric}: {entry.status}; {entry.note}"
    ci = "" if paired.ci_low is None else f", 95% CI [{paired.ci_low:.4g}, {paired.ci_high:.4g}]"
    p = "" if paired.p_value is None else f", {p_text(paired)}"
    mde = "" if paired.mde is None else f", detectable {paired.mde:.3g}"
    return (f"{entry.metric}: {paired.mean_b:.4g} vs baseline {paired.mean_a:.4g} (diff {paired.diff:+.4g}{ci}{p}, "
            f"n={paired.n}{mde}, tolerance {entry.tolerance}): {entry.status}; {entry.note}")


def p_text(paired) -> str:
    """``p=0.03 (adj. 0.06, min 0.031)``: the test's p, the family-corrected one, the smallest attainable."""
    if paired.p_value is None:
        return "no test"
    adjusted = "" if paired.p_adjusted is None else f"adj. {paired.p_adjusted:.3g}, "
    minimum = "" if paired.p_min is None else f"min {paired.p_min:.2g}"
    return f"p={paired.p_value:.3g} ({adjusted}{minimum})" if adjusted or minimum else f"p={paired.p_value:.3g}"


def junit_xml(result: CheckResult) -> str:
    """One test suite per gate set (and one for the baseline), one test case per metric. Required entries
    that fail or are missing are failures; informational ones that do not pass are skipped."""
    root = ET.Element("testsuites", name=f"foresight-eval check {result.run}")
    for report in result.gate_reports:
        suite = ET.SubElement(root, "testsuite", name=f"gates {report.gate_set}")
        for entry in report.entries:
            case = ET.SubElement(suite, "testcase", classname=f"{report.gate_set}.{entry.gate}",
                                 name=entry.metric if entry.category is None else f"{entry.metric}[{entry.category}]")
            if entry.blocking:
                ET.SubElement(case, "failure", message=gate_message(entry), type=entry.status)
            elif entry.status in ("fail", "missing"):
                ET.SubElement(case, "skipped", message=gate_message(entry))
            else:
                ET.SubElement(case, "system-out").text = gate_message(entry)
        _count(suite)
    if result.regression is not None:
        suite = ET.SubElement(root, "testsuite", name=f"baseline {result.regression.baseline}")
        for entry in result.regression.entries:
            case = ET.SubElement(suite, "testcase", classname="baseline", name=entry.metric)
            if entry.status != "pass":
                ET.SubElement(case, "failure", message=regression_message(entry), type=entry.status)
            else:
                ET.SubElement(case, "system-out").text = regression_message(entry)
        _count(suite)
    for key in ("tests", "failures", "skipped"):
        root.set(key, str(sum(int(suite.get(key)) for suite in root)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _count(suite: ET.Element) -> None:
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(len(suite.findall("testcase/failure"))))
    suite.set("skipped", str(len(suite.findall("testcase/skipped"))))
    suite.set("errors", "0")


def github_annotations(result: CheckResult) -> list[str]:
    """GitHub Actions workflow commands: an error per blocking entry or regression, a warning per accepted
    or informational miss, a notice per regression that is not significant."""
    lines = []
    for report in result.gate_reports:
        for entry in report.entries:
            level = "error" if entry.blocking else "warning" if entry.status != "pass" else None
            if level:
                lines.append(_annotation(level, f"{report.gate_set} {entry.gate} {entry.metric}", gate_message(entry)))
    if result.regression is not None:
        for entry in result.regression.entries:
            level = "error" if entry.status != "pass" else "notice" if entry.within_noise else None
            if level:
                lines.append(_annotation(level, f"regression vs {result.regression.baseline} {entry.metric}",
                                         regression_message(entry)))
    return lines


def _annotation(level: str, title: str, message: str) -> str:
    # Escapes from GitHub's workflow-command format (actions/toolkit, command.ts).
    def data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:
        return data(text).replace(":", "%3A").replace(",", "%2C")

    return f"::{level} title={prop(title)}::{data(message)}"
