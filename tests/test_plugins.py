"""Third-party metrics through the `foresight_eval.metrics` entry-point group: a tiny plugin package is
really installed (pip, into a temporary folder) and found by a fresh `foresight-eval` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.clipmaker import gradient_clip

PLUGIN_MODULE = '''
import torch
from foresight_eval import FrameMetric, MetricInfo


class MaxError(FrameMetric):
    info = MetricInfo(name="max_error", description="largest absolute pixel error", direction="lower")
    defaults = {"scale": 1.0}

    def per_frame(self, batch):
        return self.params["scale"] * (batch.pred - batch.ref).abs().flatten(1).amax(dim=1)


class MinError(FrameMetric):
    """Written against the old signature, per_frame(self, pred, ref): still called that way."""

    info = MetricInfo(name="min_error", description="smallest absolute pixel error", direction="lower", default=True)

    def per_frame(self, pred, ref):
        return (pred - ref).abs().flatten(1).amin(dim=1)
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    (source / "fe_plugin_demo").mkdir(parents=True)
    (source / "fe_plugin_demo" / "__init__.py").write_text(PLUGIN_MODULE)
    (source / "fe_plugin_demo" / "broken.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    (source / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "fe-plugin-demo"
        version = "0.0.1"
        [project.entry-points."foresight_eval.metrics"]
        max_error = "fe_plugin_demo:MaxError"
        min_error = "fe_plugin_demo:MinError"
        broken = "fe_plugin_demo.broken:Nothing"
    '''))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True)
    return site


def run_cli(site, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "foresight_eval", *args], capture_output=True, text=True, env=env)


def test_installed_plugin_is_listed_and_scores(plugin_site, tmp_path):
    listing = run_cli(plugin_site, "metrics", "--json")
    assert listing.returncode == 0, listing.stderr
    catalog = json.loads(listing.stdout)
    assert catalog["metrics"]["max_error"]["source"] == "fe_plugin_demo"
    assert "this plugin is broken on purpose" in catalog["plugin_errors"]["broken"]

    frames = gradient_clip()
    shifted = frames.copy()
    shifted[:, 0, 0, 0] = frames[:, 0, 0, 0] ^ 0xFF
    for side, data in (("preds", shifted), ("refs", frames)):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "clip.npy", data)
    result = run_cli(plugin_site, "score", str(tmp_path / "preds"), str(tmp_path / "refs"),
                     "-m", "max_error,mae", "-p", "max_error.scale=2", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    per_frame_max = np.abs(shifted.astype(int) - frames.astype(int)).reshape(len(frames), -1).max(axis=1)
    expected = 2 * per_frame_max.mean() / 255
    assert abs(summary["metrics"]["max_error"]["mean"] - expected) < 1e-6
    assert summary["metrics"]["max_error"]["params"] == {"scale": 2}

    assert summary["manifest"]["plugins"] == {"fe-plugin-demo": "0.0.1"}  # the distribution behind max_error

    # A plain run: the plugin that declared default=True joins the default set, the other does not.
    plain = run_cli(plugin_site, "score", str(tmp_path / "preds"), str(tmp_path / "refs"), "--json")
    assert plain.returncode == 0, plain.stderr
    ran = json.loads(plain.stdout)["metrics"]
    assert "min_error" in ran and "max_error" not in ran and "psnr" in ran
    assert ran["min_error"]["mean"] == 0.0  # the old per_frame(pred, ref): every frame has unchanged pixels
    assert catalog["metrics"]["max_error"]["default"] is False and catalog["metrics"]["min_error"]["default"] is True
    assert catalog["metrics"]["psnr"]["default"] is True and catalog["metrics"]["flicker_score"]["default"] is False


def test_installed_plugin_passes_the_exported_contract_test(plugin_site, tmp_path):
    """What a plugin author's own test suite does: foresight_eval.testing.check_metric on their metric."""
    code = ("import sys; from pathlib import Path; from fe_plugin_demo import MaxError, MinError; "
            "from foresight_eval.testing import check_metric; "
            "check_metric(MaxError, workdir=Path(sys.argv[1]) / 'max', params={'scale': 2}); "
            "check_metric(MinError, workdir=Path(sys.argv[1]) / 'min'); print('contract ok')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "contract ok" in result.stdout
