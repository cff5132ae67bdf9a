"""What the installed package holds: foresight_eval/ and nothing of the development tree. The synthetic
scenes live in fixtures/synthetic.py (the tests, benchmarks and fixture generator use them); the wheel is
built from ``foresight_eval*`` packages only (pyproject's packages.find), so a module that imported the
development tree would break on every `pip install .` but pass every test run from a checkout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import foresight_eval

PACKAGE = Path(foresight_eval.__file__).resolve().parent
REPO = PACKAGE.parent
DEVELOPMENT_TREE = ("fixtures", "tests", "benchmarks", "examples")


def test_the_wheel_takes_only_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["foresight_eval*"]
    assert not (PACKAGE / "synthetic.py").exists()
    assert (REPO / "fixtures" / "synthetic.py").is_file()


def test_no_package_module_imports_the_development_tree():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(REPO)}: {name}" for name in names
                          if name.split(".")[0] in DEVELOPMENT_TREE or name == "foresight_eval.synthetic"]
    assert offenders == []
