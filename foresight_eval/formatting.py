"""How numbers are written for people: in terminal tables, reports and leaderboards alike.

Pure functions of numbers to text (no terminal, no HTML), so that the command line and the report render
the same value the same way, and the report does not depend on the command line.
"""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.{digits}f}"


def decimals_for(low: float | None, high: float | None, default: int = 4) -> int:
    """Decimal places that show a CI of this width to about two significant digits (a CI of 0.23 gets
    2 places, of 3.4 dB gets 1): a mean is shown no more precisely than it is known."""
    if low is None or high is None or not math.isfinite(high - low) or high - low <= 0:
        return default
    return min(10, max(0, 1 - math.floor(math.log10(high - low))))


def fixed(value: float | None, decimals: int) -> str:
    """Fixed notation only (never scientific, so a column reads the same way all down); inf stays inf."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{decimals}f}"


def estimate(mean: float | None, low: float | None, high: float | None, signed: bool = False) -> tuple[str, str]:
    """(mean, "[low, high]") with decimals from the CI's width."""
    places = decimals_for(low, high)
    text = fixed(mean, places)
    if signed and mean is not None and math.isfinite(mean) and mean >= 0:
        text = "+" + text
    return text, "–" if low is None else f"[{fixed(low, places)}, {fixed(high, places)}]"


def p_cell(p: float | None) -> str:
    """A p-value in fixed notation: 4 decimals, "<0.0001" below."""
    if p is None:
        return "–"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"
