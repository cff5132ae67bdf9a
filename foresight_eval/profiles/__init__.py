"""Compatibility profiles: a named convention (another tool's way of computing its metrics) as data.

A profile is a YAML file, one per convention in this package (``foresight_eval/profiles/<name>.yaml``),
or any file a user writes in the same format:

```yaml
name: openstl
description: One line saying what convention this reproduces.
reference: "chengtan9907/OpenSTL@c74deb5 openstl/core/metrics.py metric()"   # where the convention comes from
metrics: [mse, mae, ssim, psnr]        # the metrics this profile scores (its default set)
params:                                 # metric parameters it fixes: {metric: {key: value}}
  mse: {reduction: sum}
options: {}                             # ScoreOptions fields it fixes (e.g. resize: ref)
```

``score --profile NAME|FILE`` scores the profile's metrics (``--metrics`` may name a subset) with its
parameters and options; a ``-p`` or option that contradicts it is refused. The run records the profile
(name, file SHA-256, its settings), and ``compare`` refuses runs scored under different profiles.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from foresight_eval.errors import UsageError, field_ref
from foresight_eval.io.files import named_or_packaged_yaml, packaged_yaml_names
from foresight_eval.metrics.registry import get_metric_class
from foresight_eval.options import current_option_names

_TOP_KEYS = ("name", "description", "reference", "metrics", "params", "options")
# Options that only change how a run is executed, never what its numbers mean: a profile cannot fix them.
_EXECUTION_OPTIONS = ("batch_size",)


class ProfileError(UsageError):
    """A profile file or name is unusable (exit 2); the message names the file and the key."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    reference: str
    metrics: tuple[str, ...]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # the file it was read from
    sha256: str = ""  # of that file's bytes

    def record(self) -> dict[str, Any]:
        """What a run folder records about the profile it was scored under."""
        return {"name": self.name, "sha256": self.sha256, "path": self.path, "reference": self.reference,
                "description": self.description, "metrics": list(self.metrics), "params": self.params,
                "options": self.options}

    def settings(self) -> list[tuple[str, Any, Any]]:
        """Every setting the profile fixes, as (``metric.key`` or ``options.key``, default, profile's value);
        a profile may fix a setting to its default so that a contradicting ``-p`` is refused."""
        from foresight_eval.options import ScoreOptions

        rows = []
        for metric, values in self.params.items():
            defaults = get_metric_class(metric).defaults
            rows += [(f"{metric}.{key}", defaults[key], value) for key, value in values.items()]
        defaults = ScoreOptions()
        rows += [(f"options.{key}", getattr(defaults, key), value) for key, value in self.options.items()]
        return rows


def profile_names() -> list[str]:
    return packaged_yaml_names(resources.files(__name__))


def _resolve(name_or_path: str | Path) -> Path:
    return named_or_packaged_yaml(name_or_path, resources.files(__name__), "profile", "profile name", ProfileError)


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """A packaged profile by name (``openstl``, ``common-metrics``...) or a profile YAML file, validated:
    every metric, parameter, parameter value and option must exist."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    path = _resolve(name_or_path)
    try:
        raw = path.read_bytes()
        document = yaml.safe_load(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
    return _parse(document, path, hashlib.sha256(raw).hexdigest())


def _parse(document: Any, path: Path, sha256: str) -> Profile:
    def error(key: str, message: str) -> ProfileError:
        return ProfileError(f"{path}: {key}: {message}")

    if not isinstance(document, dict):
        raise ProfileError(f"{path}: a profile must be a mapping with keys {', '.join(_TOP_KEYS)}")
    for key in document:
        if key not in _TOP_KEYS:
            raise error(str(key), f"unknown key (expected one of: {', '.join(_TOP_KEYS)})")
    for key in ("name", "description", "reference"):
        if not isinstance(document.get(key), str) or not document[key].strip():
            raise error(key, "must be a non-empty string")
    metrics = document.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise error("metrics", "must be a non-empty list of metric names")
    if len(set(metrics)) < len(metrics):
        raise error("metrics", "lists a metric twice")
    for metric in metrics:
        _known_metric(metric, lambda message: error("metrics", message))
    params = document.get("params") or {}
    if not isinstance(params, dict):
        raise error("params", "must be a mapping {metric: {key: value}}")
    for metric, values in params.items():
        where = f"params.{metric}"
        cls = _known_metric(metric, lambda message: error(where, message))
        if not isinstance(values, dict):
            raise error(where, "must be a mapping {key: value}")
        for key in values:
            if key not in cls.defaults:
                known = ", ".join(sorted(cls.defaults)) or "none"
                raise error(f"{where}.{key}", f"metric {metric!r} has no parameter {key!r} (parameters: {known})")
        try:
            cls(**values)  # the metric's own validation of the values (choices, ranges)
        except UsageError as exc:
            raise error(where, str(exc)) from None
    options = document.get("options") or {}
    if not isinstance(options, dict):
        raise error("options", "must be a mapping {option: value}")
    options = current_option_names(options)  # a profile written before an option was renamed
    _check_options(options, error)
    return Profile(document["name"].strip(), document["description"].strip(), document["reference"].strip(),
                   tuple(metrics), {m: dict(v) for m, v in params.items()}, dict(options), str(path), sha256)


def _known_metric(metric: Any, error):
    try:
        return get_metric_class(str(metric))
    except UsageError as exc:
        raise error(str(exc)) from None


def _check_options(options: Mapping[str, Any], error) -> None:
    from foresight_eval.options import ScoreOptions

    fields = [f.name for f in dataclasses.fields(ScoreOptions) if f.name not in _EXECUTION_OPTIONS]
    for key in options:
        if key not in fields:
            raise error(f"options.{key}", f"unknown option (a profile may fix: {', '.join(fields)})")
    try:
        ScoreOptions(**options)
    except (UsageError, TypeError) as exc:
        raise error("options", str(exc)) from None


def apply_profile(
    profile: Profile,
    metrics: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None,
    options: Any,
) -> tuple[list[str], dict[str, dict[str, Any]], Any]:
    """The metrics, parameters and options of a run under ``profile``.

    ``metrics`` may name a subset of the profile's metrics (None: all of them). A parameter in ``params``
    that the profile fixes to another value is refused, naming both; other parameters are kept. An option
    the profile fixes replaces the default; one set to another non-default value is refused."""
    from foresight_eval.options import ScoreOptions

    if metrics is None:
        names = list(profile.metrics)
    else:
        outside = [name for name in metrics if name not in profile.metrics]
        if outside:
            raise UsageError(f"{field_ref('metrics', ', '.join(outside))}: not scored by profile {profile.name!r} "
                             f"(its metrics: {', '.join(profile.metrics)}); {field_ref('metrics')} may only narrow them")
        names = list(metrics)
    merged: dict[str, dict[str, Any]] = {name: dict(values) for name, values in (params or {}).items()}
    for metric, fixed in profile.params.items():
        if metric not in names:
            continue
        given = merged.setdefault(metric, {})
        for key, value in fixed.items():
            if key in given and given[key] != value:
                raise UsageError(f"-p {metric}.{key}={given[key]!r} conflicts with profile {profile.name!r}, "
                                 f"which sets {metric}.{key}={value!r}")
            given[key] = value
    defaults = ScoreOptions()
    for key, value in profile.options.items():
        given = getattr(options, key)
        if given != getattr(defaults, key) and given != value:
            raise UsageError(f"{field_ref(key, given)} conflicts with profile {profile.name!r}, which sets {field_ref(key, value)}")
    return names, merged, dataclasses.replace(options, **profile.options)
