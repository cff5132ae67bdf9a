"""`foresight-eval check` and `compare` on the command line: exit codes, JUnit XML, annotations, JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from tests.fake_runs import write_run

GATES = """\
name: ci
gates:
  - name: quality
    metrics:
      - {metric: psnr, threshold: 30, direction: higher}
      - {metric: tc, threshold: 0.70, direction: higher, tolerance: 1.5%}
      - {metric: latency_overhead, threshold: 25%, direction: lower, required: false}
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def gate_file(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(GATES)
    return path


def invoke(runner: CliRunner, *args):
    return runner.invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_check_passes_with_an_accepted_metric_and_exits_0(runner, tmp_path, gate_file):
    run = write_run(tmp_path / "good", {"psnr": [31.0, 32.0], "tc": [0.69, 0.69]}, extra={"latency_overhead": 0.319})
    result = invoke(runner, "check", run, "--gates", gate_file, "--json")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["decision"] == "pass"
    assert [e["status"] for e in verdict["gates"][0]["entries"]] == ["pass", "accepted", "fail"]


def test_check_fails_with_exit_1_and_writes_junit_and_annotations(runner, tmp_path, gate_file):
    run = write_run(tmp_path / "bad", {"psnr": [25.0, 26.0], "tc": [0.60, 0.62]})
    junit = tmp_path / "reports" / "gates.xml"
    result = invoke(runner, "check", run, "--gates", gate_file, "--gates", "q3", "--junit", junit, "--github")
    assert result.exit_code == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "3" and root.get("tests") == "5"
    failed = {(case.get("classname"), case.get("name")) for case in root.iter("testcase") if case.find("failure") is not None}
    assert failed == {("ci.quality", "psnr"), ("ci.quality", "tc"), ("q3.Q3", "tc")}
    skipped = {case.get("name") for case in root.iter("testcase") if case.find("skipped") is not None}
    assert skipped == {"latency_overhead", "semantic_accuracy"}  # informational misses
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("::warning ")]
    assert len(errors) == 3 and any("psnr = 25.5, needs >= 30: fail" in line for line in errors)
    assert len(warnings) == 2 and all("(informational)" in line for line in warnings)


def test_check_exit_2_for_unusable_input(runner, tmp_path, gate_file):
    run = write_run(tmp_path / "run", {"psnr": [31.0, 32.0]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics:\n  - metric: psnr\n    threshold: 30\n    direction: sideways\n")
    result = invoke(runner, "check", run, "--gates", bad)
    assert result.exit_code == 2 and "bad.yaml:4" in result.stderr
    assert invoke(runner, "check", run).exit_code == 2  # nothing to check against
    assert invoke(runner, "check", run, "--gates", "gate9").exit_code == 2
    assert invoke(runner, "check", tmp_path, "--gates", gate_file).exit_code == 2  # not a run folder
    assert invoke(runner, "check", run, "--gates", gate_file, "--max-regression", "1%").exit_code == 2
    assert invoke(runner, "check", run, "--gates", gate_file, "--github", "--json").exit_code == 2


def test_check_against_a_baseline(runner, tmp_path):
    base = [30.0, 31.0, 29.0, 32.0, 30.0, 31.5, 30.5, 29.5]
    baseline = write_run(tmp_path / "baseline", {"psnr": base})
    noisy = write_run(tmp_path / "noisy", {"psnr": [b + d for b, d in zip(base, [-9, 5, -8, 4.5, -2.5, -2, 3, -5])]})
    worse = write_run(tmp_path / "worse", {"psnr": [b - 0.4 + 0.01 * i for i, b in enumerate(base)]})
    assert invoke(runner, "check", noisy, "--baseline", baseline, "--max-regression", "0.1").exit_code == 0
    result = invoke(runner, "check", worse, "--baseline", baseline, "--max-regression", "psnr=0.1", "--json")
    assert result.exit_code == 1
    entry = json.loads(result.stdout)["baseline"]["entries"][0]
    assert entry["status"] == "fail" and entry["n"] == 8 and entry["ci_high"] < 0 and entry["p_value"] < 0.05
    assert entry["p_min"] == pytest.approx(2 / 2**8) and entry["minimum_detectable_effect"] > 0
    assert invoke(runner, "check", worse, "--baseline", baseline, "--max-regression", "psnr=0.5").exit_code == 0
    junit = tmp_path / "baseline.xml"
    invoke(runner, "check", worse, "--baseline", baseline, "--junit", junit)
    assert [c.get("name") for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None] == ["psnr"]


def test_compare_cli(runner, tmp_path):
    a = write_run(tmp_path / "model_a", {"psnr": [30.0, 31.0, 29.0, 32.0]})
    b = write_run(tmp_path / "model_b", {"psnr": [31.0, 32.2, 29.9, 33.1]})
    result = invoke(runner, "compare", a, b, "--json", "--test", "wilcoxon")
    assert result.exit_code == 0
    pair = json.loads(result.stdout)["pairs"][0]
    assert pair["n"] == 4 and pair["winner"] is None and pair["p_value"] == pytest.approx(0.125)  # exact, n=4
    assert "model_a" in invoke(runner, "compare", a, b).stdout
    other = write_run(tmp_path / "other", {"psnr": [31.0, 32.2, 29.9, 33.1]}, params={"psnr": {"data_range": 255}})
    refused = invoke(runner, "compare", a, other)
    assert refused.exit_code == 2 and "psnr.params.data_range" in refused.stderr and "--force" in refused.stderr
    forced = invoke(runner, "compare", a, other, "--force")
    assert forced.exit_code == 0 and "psnr.params.data_range" in forced.stdout
    assert invoke(runner, "check", other, "--baseline", a).exit_code == 2


def test_the_example_workflows_check_commands_run(runner, tmp_path):
    """The example CI job's `check` steps, run on a hand-made run folder: exit 0/1, never a usage error."""
    import shlex

    import yaml

    from tests.conftest import REPO

    workflow = yaml.safe_load((REPO / "examples" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["evaluate"]["steps"]
    assert any(step.get("uses", "").startswith("actions/upload-artifact") for step in steps)
    env = {"RUN_DIR": str(write_run(tmp_path / "run", {"lpips": [0.2, 0.3, 0.25]}, extra={"param_efficiency": 1.1})),
           "BASELINE": str(write_run(tmp_path / "base", {"lpips": [0.2, 0.31, 0.26]}))}
    commands = [shlex.split(step["run"].replace("\n", " ")) for step in steps
                if step.get("run", "").startswith("foresight-eval check")]
    assert len(commands) == 2
    for command in commands:
        args = [arg.replace("$RUN_DIR", env["RUN_DIR"]).replace("$BASELINE", env["BASELINE"]) for arg in command[1:]]
        assert invoke(runner, *args).exit_code == 0
