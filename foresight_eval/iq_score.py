"""The Physics IQ Score: Physics-IQ's four metrics normalised by the physical variance between two real takes.

Definition (google-deepmind/physics-IQ-benchmark, commit e457754, ``code/calculate_iq_score.py``
``calculate_iq_score``; re-implemented here, not copied). Each clip is scored twice with the ``physics-iq``
profile's metrics (:mod:`foresight_eval.metrics.physics_iq`): the prediction against the reference (take 1), and
a second real take of the same scene against take 1 (``--ref-take2``), the "physical variance" a perfect model
could not beat. With ``r4`` the rounding of every per-frame value to 4 decimals (upstream reads its per-frame
lists back from its CSV that way):

* model terms, each a mean over clips: spatial IoU (``motion_iou``), weighted spatial IoU
  (``motion_iou_weighted``), and the per-clip means of ``r4`` of the per-frame spatiotemporal IoUs
  (``motion_iou_st``) and MSEs (``mse``);
* variance terms, the same four from the take-2 run: the spatiotemporal IoU and MSE averaged over the frames
  of all clips together (pandas ``explode``: clips weigh by their frame count, unlike the model terms), then
  rounded to 4 decimals; the spatial IoU mean rounded to 5 decimals, the weighted one to 4;
* score = 100 x [(st / var_st + spatial / var_spatial + weighted / var_weighted) / 3 - (mse - var_mse)],
  clipped to [0, 100] and rounded to 2 decimals; ``physical_variance_all_metrics`` =
  round(var_st + var_spatial + var_weighted - var_mse, 4).

Upstream groups the clips by scenario (three camera views each) and averages the views' frames first; with every
scenario's views of equal length, as in the benchmark, that equals the plain mean over clips used here.
Categories (``--categories``, e.g. Physics-IQ's ``descriptions.csv``) each get the same computation on their
clips alone, their own physical variance included.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from foresight_eval.engine import score
from foresight_eval.options import ScoreOptions
from foresight_eval.errors import UsageError, field_ref
from foresight_eval.io.clips import CLIP_FILE_SUFFIXES
from foresight_eval.io.files import json_safe, write_json_atomic
from foresight_eval.results import PER_FRAME_FILE, PER_VIDEO_FILE, RunResult, load_summary

PROFILE = Path(__file__).resolve().parent / "profiles" / "physics-iq.yaml"
SPATIAL, WEIGHTED, SPATIOTEMPORAL, MSE = "motion_iou", "motion_iou_weighted", "motion_iou_st", "mse"
METRICS = (SPATIAL, WEIGHTED, SPATIOTEMPORAL, MSE)
REFERENCE = "google-deepmind/physics-IQ-benchmark@e457754 code/calculate_iq_score.py calculate_iq_score"
RESULT_FILE = "physics_iq.json"


def profile_params() -> dict[str, dict[str, Any]]:
    """The metric parameters of the packaged ``physics-iq`` profile, which both runs of a score must use."""
    document = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    return {name: dict(document["params"].get(name) or {}) for name in document["metrics"]}


@dataclass(frozen=True)
class ClipTerms:
    """One clip's inputs to the score: its two spatial IoUs and its per-frame spatiotemporal IoUs and MSEs."""

    spatial_iou: float
    weighted_spatial_iou: float
    spatiotemporal_iou: tuple[float, ...]
    mse: tuple[float, ...]


@dataclass
class _RunTerms:
    source: str
    params: dict[str, dict[str, Any]]
    clips: dict[str, ClipTerms]
    failed: list[str]


def _run_terms(run: RunResult | str | Path, label: str) -> _RunTerms:
    """The per-clip terms of a finished run (a RunResult or a run folder) scored with the four metrics."""
    if isinstance(run, RunResult):
        source = f"{label} run"
        params = {name: summary.definition.get("params", {}) for name, summary in run.metrics.items()}
        ok = [pair for pair in run.pairs if pair.ok]
        values = {pair.video: pair.values for pair in ok}
        per_frame = {pair.video: {m: [v for _, _, v in rows] for m, rows in pair.per_frame.items()} for pair in ok}
        failed = [pair.video for pair in run.pairs if not pair.ok]
    else:
        source = str(run)
        values, per_frame, failed, params = _read_run_folder(Path(run))
    missing = [name for name in METRICS if name not in params]
    if missing:
        raise UsageError(f"{source} has no {', '.join(missing)}: score it with the physics-iq metrics "
                         f"({', '.join(METRICS)})")
    clips = {}
    for video, row in values.items():
        frames = per_frame.get(video, {})
        clips[video] = ClipTerms(float(row[SPATIAL]), float(row[WEIGHTED]),
                                 tuple(frames.get(SPATIOTEMPORAL, ())), tuple(frames.get(MSE, ())))
    return _RunTerms(source, params, clips, failed)


def _read_run_folder(path: Path):
    try:
        summary = load_summary(path)
        with open(path / PER_VIDEO_FILE, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        with open(path / PER_FRAME_FILE, newline="", encoding="utf-8") as handle:
            frame_rows = list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise UsageError(f"{path} is not a finished run folder ({exc.filename} missing)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable run folder: {exc}") from exc
    params = {name: definition.get("params", {}) for name, definition in summary["metrics"].items()}
    values = {row["video"]: row for row in rows if row["status"] == "ok"}
    per_frame: dict[str, dict[str, list[float]]] = {}
    # per_frame.csv holds repr() of every value, so float() gives back the exact numbers, in frame order.
    for row in frame_rows:
        if row["video"] in values:
            per_frame.setdefault(row["video"], {}).setdefault(row["metric"], []).append(float(row["value"]))
    return values, per_frame, [row["video"] for row in rows if row["status"] != "ok"], params


def _check_params(run: _RunTerms, expected: Mapping[str, Mapping[str, Any]]) -> None:
    for metric, wanted in expected.items():
        for key, value in wanted.items():
            got = run.params[metric].get(key)
            if got != value:
                raise UsageError(f"{run.source}: {metric}.{key} = {got!r}, the physics-iq profile sets {value!r}; "
                                 "the Physics IQ Score is defined for the profile's settings only")


def _r4(values: Iterable[float]) -> list[float]:
    return [round(value, 4) for value in values]


def iq_score(model: Mapping[str, ClipTerms], variance: Mapping[str, ClipTerms]) -> dict[str, Any]:
    """The Physics IQ Score of a set of clips (module docstring): ``model`` holds each clip's prediction-vs-take-1
    terms, ``variance`` its take-2-vs-take-1 terms, under the same keys."""
    if not model or set(model) != set(variance):
        raise UsageError("the Physics IQ Score needs the same, non-empty set of clips in both runs")
    clips = sorted(model)
    if any(not model[c].spatiotemporal_iou or not model[c].mse or not variance[c].spatiotemporal_iou
           or not variance[c].mse for c in clips):
        raise UsageError("a clip has no per-frame spatiotemporal IoU or MSE values")
    terms = {
        "spatial_iou": float(np.mean([model[c].spatial_iou for c in clips])),
        "weighted_spatial_iou": float(np.mean([model[c].weighted_spatial_iou for c in clips])),
        "spatiotemporal_iou": float(np.mean([np.mean(_r4(model[c].spatiotemporal_iou)) for c in clips])),
        "mse": float(np.mean([np.mean(_r4(model[c].mse)) for c in clips])),
    }

    def all_frames(field: str) -> list[float]:  # upstream's pandas explode: every clip's frames in one list
        return [value for clip in clips for value in _r4(getattr(variance[clip], field))]

    # np.round, not round(): upstream rounds NumPy scalars, whose rounding NumPy does (scale, rint, unscale).
    physical = {
        "spatial_iou": float(np.round(np.mean([variance[c].spatial_iou for c in clips]), 5)),
        "weighted_spatial_iou": float(np.round(np.mean([variance[c].weighted_spatial_iou for c in clips]), 4)),
        "spatiotemporal_iou": float(np.round(np.mean(all_frames("spatiotemporal_iou")), 4)),
        "mse": float(np.round(np.mean(all_frames("mse")), 4)),
    }
    all_metrics = float(np.round(physical["spatiotemporal_iou"] + physical["spatial_iou"]
                                 + physical["weighted_spatial_iou"] - physical["mse"], 4))
    result: dict[str, Any] = {"physics_iq_score": None, "physical_variance_all_metrics": all_metrics,
                              "clips": len(clips), "terms": terms, "physical_variance": physical}
    zero = [name for name in ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou") if physical[name] == 0]
    if zero:
        result["reason"] = f"physical variance of {', '.join(zero)} is 0: the two takes share no motion"
        return result
    ratios = sum(terms[name] / physical[name] for name in ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou"))
    raw = 100 * (ratios / 3 - (terms["mse"] - physical["mse"]))
    result["physics_iq_score"] = float(np.round(min(max(raw, 0.0), 100.0), 2))
    return result


def load_categories(path: str | Path) -> dict[str, str]:
    """Clip -> scenario category from a CSV with a ``category`` column and the clip in a ``clip`` column, or in
    ``generated_video_name`` as Physics-IQ's ``descriptions/descriptions.csv`` has it. Names are taken without
    their file suffix."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{field_ref('categories', path)}: {exc}") from exc
    columns = set(rows[0]) if rows else set()
    key = next((c for c in ("clip", "generated_video_name") if c in columns), None)
    if key is None or "category" not in columns:
        raise UsageError(f"{field_ref('categories', path)}: needs a 'category' column and a 'clip' (or 'generated_video_name') "
                         "column")
    categories = {}
    for row in rows:
        name = Path(row[key].strip())
        stem = name.with_suffix("").as_posix() if name.suffix.lower() in CLIP_FILE_SUFFIXES else name.as_posix()
        categories[stem] = row["category"].strip()
    return categories


def _category_of(clip: str, categories: Mapping[str, str]) -> str | None:
    return categories.get(clip) or categories.get(clip.rsplit("/", 1)[-1])


def physics_iq_score(model: RunResult | str | Path, variance: RunResult | str | Path,
                     categories: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Physics IQ Score, overall and per category, from two finished runs (RunResults or run folders) scored
    with the ``physics-iq`` profile: predictions against take 1 (``model``), take 2 against take 1 (``variance``).

    Clips that failed or are missing in either run are left out and listed under ``missing``."""
    expected = profile_params()
    runs = [_run_terms(model, "model"), _run_terms(variance, "variance")]
    for run in runs:
        _check_params(run, expected)
    if runs[0].params[SPATIAL].get("fps") != runs[1].params[SPATIAL].get("fps"):
        raise UsageError("the two runs were scored at different frame rates (fps parameter)")
    common = sorted(set(runs[0].clips) & set(runs[1].clips))
    everything = set(runs[0].clips) | set(runs[1].clips) | set(runs[0].failed) | set(runs[1].failed)
    if not common:
        raise UsageError("no clip was scored in both runs")
    result: dict[str, Any] = {
        "reference": REFERENCE,
        **iq_score({c: runs[0].clips[c] for c in common}, {c: runs[1].clips[c] for c in common}),
        "missing": sorted(everything - set(common)),
        "params": expected,
    }
    if categories is not None:
        groups: dict[str, list[str]] = {}
        for clip in common:
            groups.setdefault(_category_of(clip, categories) or "", []).append(clip)
        result["uncategorised"] = groups.pop("", [])
        result["categories"] = {name: iq_score({c: runs[0].clips[c] for c in clips},
                                               {c: runs[1].clips[c] for c in clips})
                                for name, clips in sorted(groups.items())}
    return result


def score_physics_iq(preds: str | Path, refs: str | Path, ref_take2: str | Path, *,
                     categories: Mapping[str, str] | None = None, options: ScoreOptions = ScoreOptions(),
                     fps: float | None = None, run_dir: str | Path | None = None,
                     **score_kwargs: Any) -> tuple[dict[str, Any], RunResult, RunResult]:
    """Score ``preds`` against ``refs`` and ``ref_take2`` against ``refs`` with the ``physics-iq`` profile's
    metrics and compute the Physics IQ Score. ``fps`` sets the window's frame rate for every clip (default: each
    reference clip's own). With ``run_dir``: the two run folders go to ``run_dir/model`` and ``run_dir/variance``,
    the score to ``run_dir/physics_iq.json``. ``score_kwargs`` go to :func:`score` (one process: not under
    `torchrun`)."""
    params = {name: {**settings, "fps": fps} for name, settings in profile_params().items()}
    if not Path(ref_take2).exists():
        raise UsageError(f"{field_ref('ref_take2', ref_take2)}: does not exist")
    runs = []
    for name, predictions in (("model", preds), ("variance", ref_take2)):
        runs.append(score(predictions, refs, list(params), params=params, options=options,
                          run_dir=None if run_dir is None else Path(run_dir) / name, **score_kwargs))
    result = physics_iq_score(runs[0], runs[1], categories)
    if run_dir is not None:
        write_json_atomic(Path(run_dir) / RESULT_FILE, json_safe(result))
    return result, runs[0], runs[1]

