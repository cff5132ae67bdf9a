"""The built-in metrics register through the package's own entry points (pyproject's
``[project.entry-points."foresight_eval.metrics"]``), as plugins do, and stay built-ins: in the default
set, not listed as plugins, loaded before any plugin. A source tree without those entry points (not
installed, or installed before they existed) falls back to ``registry._BUILTIN_MODULES``.

The shared development install cannot be re-installed by a test, so each case runs a fresh interpreter
with a fake ``foresight-eval`` distribution (a dist-info folder) first on its path: it shadows the
installed one, and its entry_points.txt is the case's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from foresight_eval.metrics import registry

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json
from foresight_eval.metrics import registry
classes = registry.metric_classes()
print(json.dumps({"metrics": list(classes), "plugin_errors": registry.plugin_errors(),
                  "plugins": registry.plugin_distributions(classes),
                  "default": sorted(n for n in classes if registry.in_default_set(n)),
                  "sources": {n: cls.__module__ for n, cls in classes.items()}}))  # `metrics`' source column
"""
PLUGIN = '''
from foresight_eval import FrameMetric, MetricInfo


class NotPSNR(FrameMetric):
    info = MetricInfo(name="psnr", description="a plugin taking a built-in's name", direction="higher")

    def per_frame(self, pred, ref):
        return (pred - ref).abs().flatten(1).mean(dim=1)
'''


def fake_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")


def registered(site: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    # cwd: the repository's own foresight_eval.egg-info (an editable install writes it there) would come first
    # on `python -c`'s path and shadow the fake distribution.
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300,
                            cwd=site)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pyproject_entry_points() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["entry-points"][registry.ENTRY_POINT_GROUP]


def test_pyproject_names_every_builtin_module_the_fallback_imports():
    assert pyproject_entry_points() == {module: f"foresight_eval.metrics.{module}" for module in registry._BUILTIN_MODULES}


def test_builtins_load_from_the_packages_entry_points_and_stay_builtins(tmp_path):
    # Only the pixel module's entry point: the structural metrics (ssim) must then be missing, which shows
    # the entry points were read and the fallback list was not.
    fake_distribution(tmp_path, "foresight-eval", {"pixel": "foresight_eval.metrics.pixel"})
    fake_distribution(tmp_path, "fe-fake-plugin", {"not_psnr": "fe_fake_plugin:NotPSNR"})
    (tmp_path / "fe_fake_plugin.py").write_text(textwrap.dedent(PLUGIN))
    found = registered(tmp_path)
    assert "psnr" in found["metrics"] and "mae" in found["metrics"] and "ssim" not in found["metrics"]
    assert found["plugins"] == {}  # built-ins are not plugins: no distribution recorded in manifests
    assert "psnr" in found["default"]
    assert found["sources"]["psnr"] == "foresight_eval.metrics.pixel"
    # Built-ins load first: the plugin cannot take psnr, and says so.
    assert list(found["plugin_errors"]) == ["not_psnr"] and "is taken by foresight_eval.metrics.pixel" in \
        found["plugin_errors"]["not_psnr"]


@pytest.mark.slow
def test_without_own_entry_points_the_fallback_registers_the_same_metrics(tmp_path):
    with_entry_points, without = tmp_path / "with", tmp_path / "without"
    fake_distribution(with_entry_points, "foresight-eval", pyproject_entry_points())
    fake_distribution(without, "foresight-eval", {})
    through_entry_points, through_fallback = registered(with_entry_points), registered(without)
    assert through_entry_points == through_fallback
    assert {"psnr", "ssim", "lpips", "fvd"} <= set(through_fallback["metrics"])
    assert through_fallback["plugins"] == {} and through_fallback["plugin_errors"] == {}
