"""foresight-eval: evaluation and benchmarking of video prediction models.

The Python API and the command line are one thing: ``foresight_eval.score`` is ``foresight-eval score``.
"""

from foresight_eval.engine import ScoreOptions, score
from foresight_eval.metrics.base import FrameBatch, FrameMetric, Metric, MetricInfo, RunContext
from foresight_eval.metrics.registry import create, metric_classes, register

__all__ = [
    "FrameBatch", "FrameMetric", "Metric", "MetricInfo", "RunContext", "ScoreOptions",
    "create", "metric_classes", "register", "score",
]
