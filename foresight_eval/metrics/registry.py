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
_BUILTIN_MODULES = ("pixel", "structural", "perceptual", "temporal", "features", "latent", "spatial", "detection",
                    "fvd", "inception", "videomae")

_registry: dict[str, type[Metric]] = {}
_plugin_errors: dict[str, str] = {}
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
        try:
            target = entry.load()
            if inspect.isclass(target) and issubclass(target, Metric):
                register(target)
        except Exception as exc:  # a broken plugin must not take the built-in metrics down with it
            _plugin_errors[entry.name] = f"{entry.value}: {type(exc).__name__}: {exc}"


def metric_classes() -> dict[str, type[Metric]]:
    """Every registered metric, built-in and plugin, by name."""
    _load()
    return dict(sorted(_registry.items()))


def plugin_errors() -> dict[str, str]:
    """Entry points that failed to load, with the reason."""
    _load()
    return dict(_plugin_errors)


def get_metric_class(name: str) -> type[Metric]:
    classes = metric_classes()
    if name not in classes:
        raise UsageError(f"unknown metric {name!r} (available: {', '.join(classes)})")
    return classes[name]


def create(name: str, **params: Any) -> Metric:
    """Instantiate a metric by name with the given parameters (defaults for the rest)."""
    return get_metric_class(name)(**params)
