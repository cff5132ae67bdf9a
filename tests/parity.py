"""Shared parity harness: compare our values with a reference implementation's on the same inputs.

Every comparison records its largest absolute error, and the test session prints them all at the end
(see conftest.py), so the parity errors quoted in release notes come from the suite itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

PARITY_RESULTS: dict[str, tuple[float, float]] = {}


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def assert_parity(name: str, ours: Iterable[float] | float, reference: Iterable[float] | float, atol: float) -> float:
    """Assert |ours - reference| <= atol elementwise; record the largest error under ``name``."""
    ours_arr, ref_arr = _as_array(ours), _as_array(reference)
    assert ours_arr.shape == ref_arr.shape, f"{name}: shapes differ {ours_arr.shape} vs {ref_arr.shape}"
    assert np.isfinite(ref_arr).all(), f"{name}: the reference gave non-finite values"
    error = float(np.max(np.abs(ours_arr - ref_arr))) if ours_arr.size else 0.0
    previous = PARITY_RESULTS.get(name, (0.0, atol))[0]
    PARITY_RESULTS[name] = (max(previous, error), atol)
    assert error <= atol, f"{name}: max abs error {error:.3g} > tolerance {atol:g}"
    return error
