"""The bsds and coco profile files: the agreed format, and every metric and parameter they name is one a
metric accepts (the profile loader itself is tested with the profile infrastructure)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import foresight_eval
from foresight_eval.options import ScoreOptions
from foresight_eval.metrics.registry import create, metric_classes

PROFILES = Path(foresight_eval.__file__).parent / "profiles"
KEYS = {"name", "description", "reference", "metrics", "params", "options"}


@pytest.mark.parametrize("name, expected", [
    ("bsds", {"edge_f1": {"mode": "bsds", "granularity": "set"}}),
    ("coco", {"map50_95": {"max_dets": 100, "granularity": "set"}, "map50": {"max_dets": 100, "granularity": "set"}}),
])
def test_profile_file_is_valid(name, expected):
    profile = yaml.safe_load((PROFILES / f"{name}.yaml").read_text(encoding="utf-8"))
    assert set(profile) == KEYS
    assert profile["name"] == name
    assert isinstance(profile["description"], str) and "\n" not in profile["description"].strip()
    assert isinstance(profile["reference"], str) and profile["reference"]
    assert set(profile["metrics"]) <= set(metric_classes())
    assert set(profile["params"]) <= set(profile["metrics"])
    assert set(profile["options"]) <= {field.name for field in dataclasses.fields(ScoreOptions)}
    ScoreOptions(**profile["options"])
    for metric_name in profile["metrics"]:
        metric = create(metric_name, **profile["params"].get(metric_name, {}))  # refuses unknown or bad values
        want = dict(expected[metric_name])
        assert metric.info.granularity == want.pop("granularity")
        assert {key: metric.params[key] for key in want} == want
