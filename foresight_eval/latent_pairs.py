"""Scoring one latent file pair: the per-pair function of `foresight-eval latents` and of ``score --latents``.

A pair's result keeps, besides its values, what the run's summary needs of it later, as plain JSON in
``PairResult.set_parts`` (so it survives the run journal and ``--resume``, with no pickle): per metric, the
per-item values (``item_values``; a run of one file pair bootstraps its CI over them) and the per-pair
``details`` (probe penalties, RBF bandwidths, warnings), where the metric gives them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from foresight_eval.errors import InputError
from foresight_eval.io.latents import LatentOptions, load_latent_pair
from foresight_eval.io.pairing import ClipPair
from foresight_eval.metrics.latent import LatentMetric
from foresight_eval.results import PairResult, fail_pair


def score_latent_pair(pair: ClipPair, metrics: list[LatentMetric], options: LatentOptions,
                      device: torch.device) -> PairResult:
    """Score one latent file pair; any failure becomes an error row with a one-line reason."""
    result = PairResult(video=pair.key, pred=str(pair.pred), ref=str(pair.ref))
    try:
        if pair.problem:
            raise InputError(pair.problem)
        latent_pair = load_latent_pair(pair.key, pair.pred, pair.ref, options, device)
        for metric in metrics:
            score = metric.score(latent_pair)
            result.values[metric.name] = score.value
            if score.curve:
                result.per_frame[metric.name] = score.curve
            part: dict[str, Any] = {}
            if score.item_values is not None:  # float64 as a list: JSON keeps every digit
                part["item_values"] = score.item_values.detach().double().cpu().tolist()
            if score.details:
                part["details"] = score.details
            if part:
                result.set_parts[metric.name] = part
        result.frames = latent_pair.items
    except InputError as exc:
        fail_pair(result, str(exc))
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure of one pair must not lose the run
        fail_pair(result, f"{type(exc).__name__}: {exc}")
    return result


def item_values(result: PairResult, metric: str) -> np.ndarray | None:
    """The per-item values a metric kept for ``result`` (float64; NaN comes back from a journal's null)."""
    values = result.set_parts.get(metric, {}).get("item_values")
    return None if values is None else np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def details(result: PairResult, metric: str) -> dict[str, Any]:
    """The per-pair details a metric gave for ``result`` ({} when none)."""
    return result.set_parts.get(metric, {}).get("details", {})
