"""foresight-eval: evaluation and benchmarking of video prediction models.

The Python API and the command line are one thing: ``foresight_eval.score`` is ``foresight-eval score``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Imported on first use (PEP 562), so that `import
# foresight_eval.cli` -- every start of the command line -- does not pay for torch and SciPy.
_EXPORTS = {
    "ScoreOptions": "foresight_eval.options", "score": "foresight_eval.engine",
    "FrameBatch": "foresight_eval.metrics.base", "FrameMetric": "foresight_eval.metrics.base",
    "FrameBatchMetric": "foresight_eval.metrics.base", "ConsecutivePairMetric": "foresight_eval.metrics.base",
    "Metric": "foresight_eval.metrics.base", "MetricInfo": "foresight_eval.metrics.base",
    "RunContext": "foresight_eval.metrics.base",
    "create": "foresight_eval.metrics.registry", "metric_classes": "foresight_eval.metrics.registry",
    "register": "foresight_eval.metrics.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'foresight_eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
