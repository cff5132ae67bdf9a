"""One registry of metrics keyed by name, filled through the entry-point group ``foresight_eval.metrics``.

Each entry point loads either a :class:`Metric` subclass or a module whose import registers its metrics.
The built-in metrics come through the same group: this package's own entry points (pyproject.toml) name
its metric modules, and they load first, so a plugin cannot take a built-in's name. A source tree that is
not installed, or installed before those entry points existed, has none: then the modules of
``_BUILTIN_MODULES`` (the same list; tests/test_registry_entry_points.py keeps the two equal) are imported.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, get_args

from foresight_eval.errors import MetricDeclarationError, MetricUnavailable, UsageError, did_you_mean
from foresight_eval.metrics.base import Direction, Metric, MetricInfo, RunContext

ENTRY_POINT_GROUP = "foresight_eval.metrics"
DISTRIBUTION = "foresight-eval"  # this package's distribution: its entry points are the built-in metrics
_BUILTIN_MODULES = ("pixel", "structural", "perceptual", "temporal", "features", "latent", "motion", "objects", "edges", "detection",
                    "fvd", "inception", "videomae")

_registry: dict[str, type[Metric]] = {}
_plugin_errors: dict[str, str] = {}
_plugin_sources: dict[str, tuple[str, str | None]] = {}  # metric -> (distribution, version) of its plugin
_loaded = False


def validate_metric_class(cls: type[Metric]) -> None:
    """Refuse a metric class whose declaration would fail later, mid-run or in a table: an unknown
    direction, choices for a parameter without a default, a default outside its own choices, or a default
    that cannot be written to summary.json. Raises MetricDeclarationError naming the class and the field."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    info = getattr(cls, "info", None)
    if not isinstance(info, MetricInfo):
        raise MetricDeclarationError(f"{where}: `info` must be a MetricInfo")
    directions = get_args(Direction)
    if info.direction not in directions:
        raise MetricDeclarationError(f"{where}: direction {info.direction!r} is not one of {list(directions)}")
    for field_name, allowed in (("inputs", ("frames", "latents")), ("granularity", ("frame", "video", "set"))):
        if getattr(info, field_name) not in allowed:
            raise MetricDeclarationError(f"{where}: {field_name} {getattr(info, field_name)!r} is not one of {list(allowed)}")
    hooks, family = {"frames": (("reset", "update", "compute"), "FrameBatchMetric"),
                     "latents": (("score",), "LatentMetric")}[info.inputs]
    missing = [hook for hook in hooks if not callable(getattr(cls, hook, None))]
    if missing:
        raise MetricDeclarationError(f"{where}: a metric of {info.inputs} implements {', '.join(hooks)}; "
                                     f"missing {', '.join(missing)} (derive from {family})")
    for key, allowed in cls.choices.items():
        if key not in cls.defaults:
            raise MetricDeclarationError(f"{where}: choices for {key!r}, which has no default in `defaults`")
        if cls.defaults[key] not in allowed:
            raise MetricDeclarationError(f"{where}: default {key}={cls.defaults[key]!r} is not one of its choices {list(allowed)}")
    try:
        json.dumps(cls.defaults, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MetricDeclarationError(f"{where}: defaults must be JSON values (numbers, strings, lists): {exc}") from None


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: validate a metric class and add it under ``cls.info.name``; a second, different
    class of that name is refused."""
    validate_metric_class(cls)
    name = cls.info.name
    existing = _registry.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"metric name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _registry[name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    entries = entry_points(group=ENTRY_POINT_GROUP)
    builtin = [entry for entry in entries if _is_builtin(entry)]
    if builtin:
        for entry in builtin:
            entry.load()  # a built-in that fails to import is a broken installation: let it raise
    else:
        for module in _BUILTIN_MODULES:
            importlib.import_module(f"foresight_eval.metrics.{module}")
    for entry in (entry for entry in entries if not _is_builtin(entry)):
        before = set(_registry)
        try:
            target = entry.load()
            if inspect.isclass(target) and issubclass(target, Metric):
                register(target)
            elif set(_registry) == before:
                _plugin_errors[entry.name] = (f"{entry.value}: registered no metric (the entry point must name a "
                                              "Metric subclass or a module that registers metrics on import)")
        except Exception as exc:  # a broken plugin must not take the built-in metrics down with it
            _plugin_errors[entry.name] = f"{entry.value}: {type(exc).__name__}: {exc}"
        source = (entry.dist.name, entry.dist.version) if entry.dist is not None else (entry.value, None)
        for name in set(_registry) - before:  # a module entry point may register several metrics
            _plugin_sources[name] = source


def _is_builtin(entry) -> bool:
    """One of this package's own entry points (distribution names compared as PEP 503 does)."""
    dist = getattr(entry, "dist", None)
    return dist is not None and re.sub(r"[-_.]+", "-", dist.name).lower() == DISTRIBUTION


def metric_classes() -> dict[str, type[Metric]]:
    """Every registered metric, built-in and plugin, by name."""
    _load()
    return dict(sorted(_registry.items()))


def plugin_errors() -> dict[str, str]:
    """Entry points that failed to load, with the reason."""
    _load()
    return dict(_plugin_errors)


def in_default_set(name: str) -> bool:
    """Whether a plain `score` run includes the metric: its ``default``, and for a plugin metric that
    leaves it unset, no (installing a package must not change what a default run measures)."""
    default = get_metric_class(name).info.default
    return default if default is not None else name not in _plugin_sources


def plugin_distributions(names) -> dict[str, str | None]:
    """Distribution -> version of the plugins that provide any of the metrics ``names``, for manifests."""
    _load()
    return dict(sorted(_plugin_sources[name] for name in names if name in _plugin_sources))


def get_metric_class(name: str) -> type[Metric]:
    classes = metric_classes()
    if name not in classes:
        raise UsageError(f"unknown metric {name!r}{did_you_mean(name, classes)} (available: {', '.join(classes)})")
    return classes[name]


def create(name: str, **params: Any) -> Metric:
    """Instantiate a metric by name with the given parameters (defaults for the rest)."""
    return get_metric_class(name)(**params)


def prepare_metrics(
    names: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None,
    context: RunContext,
    inputs: str = "frames",
) -> tuple[list[Metric], dict[str, str]]:
    """Create and set up metrics. Without ``names``, every default metric of that input kind runs and
    those that cannot run are skipped with their reason; metrics asked for by name must run."""
    params = dict(params or {})
    explicit = names is not None
    if names is None:
        names = [n for n, cls in metric_classes().items() if cls.info.inputs == inputs and in_default_set(n)]
    for name in names:
        if get_metric_class(name).info.inputs != inputs:
            raise UsageError(f"metric {name!r} scores {get_metric_class(name).info.inputs}, not {inputs}")
    for name in params:
        get_metric_class(name)
        if name not in names:
            raise UsageError(f"parameters given for metric {name!r}, which is not being scored")
    metrics, skipped = [], {}
    for name in dict.fromkeys(names):
        metric = create(name, **params.get(name, {}))
        try:
            metric.setup(context)
        except MetricUnavailable as exc:
            if explicit:
                raise UsageError(f"metric {name!r} cannot run: {exc}") from exc
            skipped[name] = str(exc)
            continue
        metrics.append(metric)
    if not metrics:
        raise UsageError("no metric can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return metrics, skipped
