"""The catalogue of metrics behind `foresight-eval metrics`: metadata and whether each can run here."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from foresight_eval.distributed import resolve_device
from foresight_eval.errors import ForesightError
from foresight_eval.metrics.base import RunContext
from foresight_eval.metrics.registry import in_default_set, metric_classes, plugin_errors


def metric_catalog(weights_dir: Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Every registered metric with its metadata; ``available`` is decided by running its ``setup``."""
    context = RunContext(device=resolve_device(device), weights_dir=weights_dir)
    entries = {}
    for name, cls in metric_classes().items():
        entry = {**asdict(cls.info), "default": in_default_set(name), "needs": list(cls.info.needs),
                 "defaults": dict(cls.defaults),
                 "source": cls.__module__, "available": True, "reason": None}
        try:
            cls().setup(context)
        except ForesightError as exc:
            entry.update(available=False, reason=str(exc))
        entries[name] = entry
    return {"metrics": entries, "plugin_errors": plugin_errors()}
