"""Numbers as the reports read them from a run's summary."""

from __future__ import annotations

import math
from typing import Any


def as_number(value: Any) -> float:
    """A number from summary.json, where NaN is stored as null (and infinities as +-1e999, or as "inf" /
    "-inf" strings in older run folders, which :func:`foresight_eval.results.load_summary` converts)."""
    if value is None:
        return math.nan
    return float(value)
