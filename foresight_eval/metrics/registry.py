"""One registry of metrics keyed by name: built-ins register on import, plugins through entry points.

A third-party package exposes metrics in the entry-point group ``foresight_eval.metrics``; each entry
point loads either a :class:`Metric` subclass or a module whose import registers its metrics.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

from foresight_eval.errors import UsageError
from foresight_eval.metrics.base import Metric

ENTRY_POINT_GROUP = "foresight_eval.metrics"
_BUILTIN_MODULES = ("pixel", "structural", "perceptual", "temporal", "features", "latent", "spatial", "detection")

_registry: dict[str, type[Metric]] = {}
_plugin_errors: dict[str, str] = {}
_plugin_sources: dict[str, tuple[str, str | None]] = {}  # metric -> (distribution, version) of its plugin
_loaded = False


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: add a metric under ``cls.info.name``; a second, different class of that name is refused."""
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
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"foresight_eval.metrics.{module}")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        before = set(_registry)
        try:
            target = entry.load()
            if inspect.isclass(target) and issubclass(target, Metric):
                register(target)
        except Exception as exc:  # a broken plugin must not take the built-in metrics down with it
            _plugin_errors[entry.name] = f"{entry.value}: {type(exc).__name__}: {exc}"
        source = (entry.dist.name, entry.dist.version) if entry.dist is not None else (entry.value, None)
        for name in set(_registry) - before:  # a module entry point may register several metrics
            _plugin_sources[name] = source


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
        raise UsageError(f"unknown metric {name!r} (available: {', '.join(classes)})")
    return classes[name]


def create(name: str, **params: Any) -> Metric:
    """Instantiate a metric by name with the given parameters (defaults for the rest)."""
    return get_metric_class(name)(**params)
