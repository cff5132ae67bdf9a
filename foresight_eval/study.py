"""A study rather than one prediction folder: several seeds, clip categories, and subsets of the clips.

* **Subsets**: ``include``/``exclude`` globs on clip keys (``fnmatch``: ``*`` crosses folder levels),
  then ``limit`` (the first N keys in sorted order). The selection is recorded, and a run that scored
  fewer clips than it found is marked as a subset in its summary, reports and leaderboards.
* **Seeds**: several prediction sets of one model against one reference set. Each set is scored as
  usual (one row per seed and clip); a clip's value is the mean over its seeds, the headline the mean
  of those over clips. Its CI is a two-level bootstrap (:func:`two_level_bootstrap`); the spread
  between seeds is reported beside it.
* **Categories**: each clip key gets one or more labels from a CSV/JSON file or from its path
  (:func:`load_categories`); clips without one go to the ``unlabelled`` group. Every metric gets a mean
  and CI per category, over the clip values of that category (a clip with two labels counts in both).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from foresight_eval.errors import UsageError, field_ref
from foresight_eval.io.pairing import ClipPair, Pairing
from foresight_eval.results import PairResult, summarize
from foresight_eval.stats import BootstrapConfig, Estimate, mean_with_ci

UNLABELLED = "unlabelled"
CHUNK_ELEMENTS = 4_000_000  # resampled values held at once by the two-level bootstrap


@dataclass(frozen=True)
class Study:
    """Which clips to score and how to group them (see the module docstring)."""

    limit: int | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # A CSV/JSON file, "folder:N" / "regex:PATTERN" on the clip key, or a ready mapping key -> labels.
    categories: str | Path | Mapping[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"{field_ref('limit')} must be >= 1")

    def as_dict(self) -> dict[str, Any]:
        source = self.categories
        return {"limit": self.limit, "include": list(self.include), "exclude": list(self.exclude),
                "categories": None if source is None else "mapping" if isinstance(source, Mapping) else str(source)}


# ---------------------------------------------------------------- prediction sets (seeds)

def prediction_sets(preds: str | Path | Mapping[str, str | Path] | Sequence[str | Path]) -> dict[str, Path]:
    """Seed name -> prediction folder. One path: ``{"": path}`` (no seeds). A sequence of paths: named by
    their folder names (numbered when two share one). A mapping is taken as given."""
    if isinstance(preds, (str, Path)):
        return {"": Path(preds)}
    if isinstance(preds, Mapping):
        sets = {str(name): Path(path) for name, path in preds.items()}
    else:
        paths = [Path(p) for p in preds]
        names = [p.resolve().name for p in paths]
        sets = {(name if names.count(name) == 1 else f"{i + 1}:{name}"): p for i, (name, p) in enumerate(zip(names, paths))}
    if len(sets) < 1 or "" in sets:
        raise UsageError("seeded prediction sets need names (and at least one set)")
    for name, path in sets.items():
        if not path.is_dir():
            raise UsageError(f"prediction set {name!r}: {path} is not a folder")
    return sets


def seed_folders(root: str | Path) -> dict[str, Path]:
    """The seed folders of ``root`` (``--seeds``): every non-hidden subfolder, by name."""
    root = Path(root)
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")} \
        if root.is_dir() else {}
    if len(folders) < 2:
        raise UsageError(f"{field_ref('seeds')}: {root} should hold one folder per seed (found {len(folders)})")
    return folders


@dataclass(frozen=True)
class WorkItem:
    seed: str
    pair: ClipPair
    root: Path  # the prediction folder of the seed


def select_work(pairings: Mapping[str, Pairing], roots: Mapping[str, Path], study: Study
                ) -> tuple[list[WorkItem], dict[str, Any]]:
    """The (seed, clip pair) items to score, ordered by clip then seed, and the subset record;
    ``pairings`` and ``roots`` are keyed by seed."""
    keys = sorted({pair.key for pairing in pairings.values() for pair in pairing.pairs})
    chosen = [key for key in keys
              if (not study.include or any(fnmatch.fnmatchcase(key, g) for g in study.include))
              and not any(fnmatch.fnmatchcase(key, g) for g in study.exclude)]
    if study.limit is not None:
        chosen = chosen[:study.limit]
    if not chosen:
        raise UsageError(f"no clip left after {field_ref('include')}/{field_ref('exclude')} (of {len(keys)} found)")
    wanted = set(chosen)
    by_key: dict[str, list[WorkItem]] = defaultdict(list)
    for seed, pairing in pairings.items():
        for pair in pairing.pairs:
            if pair.key in wanted:
                by_key[pair.key].append(WorkItem(seed, pair, roots[seed]))
    items = [item for key in chosen for item in by_key[key]]
    subset = {"limit": study.limit, "include": list(study.include), "exclude": list(study.exclude),
              "found": len(keys), "selected": len(chosen), "is_subset": len(chosen) < len(keys)}
    return items, subset


# ---------------------------------------------------------------- categories

def load_categories(source: str | Path | Mapping[str, Sequence[str]], keys: Sequence[str]) -> dict[str, list[str]]:
    """Clip key -> its labels (``[UNLABELLED]`` when it has none), for each of ``keys``.

    ``source``: a mapping; ``folder:N`` (the N-th folder of the key, 1-based: ``folder:1`` of
    ``collisions/clip03`` is ``collisions``); ``regex:PATTERN`` (the first group, else the whole match,
    searched in the key); a ``.json`` file (``{"key": "label"}`` or ``{"key": ["a", "b"]}``); or a
    ``.csv`` file with ``video`` and ``category`` columns (one row per label, or labels joined by ``;``)."""
    if isinstance(source, Mapping):
        mapping = {str(k): _labels(v, str(k)) for k, v in source.items()}
    else:
        text = str(source)
        if text.startswith("folder:"):
            try:
                level = int(text[len("folder:"):])
            except ValueError:
                level = 0
            if level < 1:
                raise UsageError(f"{field_ref('categories', text)}: expected folder:N with N >= 1")
            mapping = {key: [key.split("/")[level - 1]] for key in keys if key.count("/") >= level}
        elif text.startswith("regex:"):
            try:
                pattern = re.compile(text[len("regex:"):])
            except re.error as exc:
                raise UsageError(f"{field_ref('categories', text)}: {exc}") from exc
            mapping = {}
            for key in keys:
                match = pattern.search(key)
                if match:
                    mapping[key] = [match.group(1) if pattern.groups else match.group(0)]
        else:
            mapping = _category_file(Path(text))
    return {key: mapping.get(key) or [UNLABELLED] for key in keys}


def _labels(value: Any, key: str) -> list[str]:
    labels = [value] if isinstance(value, str) else value
    if not isinstance(labels, list) or not all(isinstance(v, str) and v.strip() for v in labels):
        raise UsageError(f"categories of {key!r}: expected a label or a list of labels, got {value!r}")
    return list(dict.fromkeys(v.strip() for v in labels))


def _category_file(path: Path) -> dict[str, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{field_ref('categories', path)}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{field_ref('categories', path)}: invalid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise UsageError(f"{field_ref('categories', path)}: expected an object mapping clip keys to labels")
        return {str(k): _labels(v, str(k)) for k, v in document.items()}
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or not {"video", "category"} <= set(rows[0]):
        raise UsageError(f"{field_ref('categories', path)}: expected a CSV with 'video' and 'category' columns "
                         "(or a .json file, folder:N, regex:PATTERN)")
    mapping: dict[str, list[str]] = defaultdict(list)
    for number, row in enumerate(rows, start=2):
        labels = [label.strip() for label in (row["category"] or "").split(";") if label.strip()]
        if not row["video"] or not labels:
            raise UsageError(f"{field_ref('categories', path)}:{number}: empty video or category")
        mapping[row["video"]] += [label for label in labels if label not in mapping[row["video"]]]
    return dict(mapping)


# ---------------------------------------------------------------- statistics

def two_level_bootstrap(values: Sequence[Sequence[float]], config: BootstrapConfig = BootstrapConfig()) -> Estimate:
    """Mean over clips of each clip's mean over seeds, with a two-level percentile bootstrap CI.

    Each resample draws clips with replacement, then, within every drawn clip, its seeds with
    replacement (Davison & Hinkley 1997, *Bootstrap Methods and their Application*, section 3.8,
    hierarchical data: resampling at both stages). Clips may have different numbers of seeds.
    Resampling both stages makes the bootstrap variance a little larger than the estimator's, by about
    ``sigma_seed^2 (k - 1) / (n k^2)`` for ``n`` clips of ``k`` seeds: the CI errs on the wide side when
    seeds vary much more than clips do (see docs/study.md for the coverage measured)."""
    rows = [np.asarray([v for v in row if math.isfinite(v)], dtype=np.float64) for row in values]
    rows = [row for row in rows if row.size]
    n = len(rows)
    if n == 0:
        return Estimate(math.nan, None, None, 0)
    counts = np.array([row.size for row in rows])
    table = np.full((n, counts.max()), np.nan)
    for i, row in enumerate(rows):
        table[i, :row.size] = row
    mean = float(np.mean(np.nanmean(table, axis=1)))
    if n < 2:
        return Estimate(mean, None, None, n)
    means = _two_level_means(table, counts, config.n_resamples, np.random.default_rng(config.seed))
    alpha = (1.0 - config.confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Estimate(mean, float(low), float(high), n)


def _two_level_means(table: np.ndarray, counts: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of ``table`` (clips x seeds, NaN-padded, ``counts`` seeds per clip), vectorised
    over resamples in chunks."""
    n, width = table.shape
    chunk = max(1, CHUNK_ELEMENTS // (n * width))
    out = []
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        clips = rng.integers(0, n, size=(b, n))
        k = counts[clips]  # (b, n) seeds of each drawn clip
        seeds = np.floor(rng.random((b, n, width)) * k[..., None]).astype(np.int64)
        drawn = table[clips[..., None], seeds]  # (b, n, width)
        valid = np.arange(width) < k[..., None]  # only the first k draws of a clip with k seeds count
        clip_means = np.where(valid, drawn, 0.0).sum(axis=2) / k
        out.append(clip_means.mean(axis=1))
    return np.concatenate(out)


def _clip_table(pairs: Sequence[PairResult], metric: str) -> dict[str, list[float]]:
    """Clip -> the metric's value under each seed that scored it."""
    table: dict[str, list[float]] = defaultdict(list)
    for pair in pairs:
        if pair.ok and metric in pair.values:
            table[pair.video].append(pair.values[metric])
    return dict(table)


def _estimate(values: Sequence[Sequence[float]], seeded: bool, config: BootstrapConfig) -> Estimate:
    if seeded:
        return two_level_bootstrap(values, config)
    return mean_with_ci(np.array([v for row in values for v in row], dtype=np.float64), config)


def _figures(estimate: Estimate) -> dict[str, Any]:
    return {"mean": estimate.mean, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high, "n": estimate.n}


def seed_spread(pairs: Sequence[PairResult], metric: str, seeds: Sequence[str]) -> dict[str, Any]:
    """Between-seed spread of a metric: each seed's mean over the clips every seed scored, their
    standard deviation (ddof 1; what "mean ± sd over runs" reports), and the mean within-clip sd."""
    by_seed: dict[str, dict[str, float]] = defaultdict(dict)
    for pair in pairs:
        if pair.ok and metric in pair.values and math.isfinite(pair.values[metric]):
            by_seed[pair.seed][pair.video] = pair.values[metric]
    shared = sorted(set.intersection(*(set(by_seed.get(seed, {})) for seed in seeds))) if seeds else []
    per_seed = {seed: (float(np.mean([by_seed[seed][c] for c in shared])) if shared else None) for seed in seeds}
    means = [v for v in per_seed.values() if v is not None]
    within = [np.std([by_seed[s][c] for s in seeds], ddof=1) for c in shared] if len(seeds) > 1 else []
    return {"n_seeds": len(seeds), "shared_clips": len(shared), "per_seed": per_seed,
            "sd_between_seeds": float(np.std(means, ddof=1)) if len(means) > 1 else None,
            "mean_within_clip_sd": float(np.mean(within)) if within else None}


def clip_level(pairs: Sequence[PairResult]) -> list[PairResult]:
    """One result per clip: its ok seeds' values averaged, per frame too (by horizon and frame); a clip no
    seed scored is an error row. The input of the ordinary summary when the run is seeded."""
    groups: dict[str, list[PairResult]] = defaultdict(list)
    for pair in pairs:
        groups[pair.video].append(pair)
    merged = []
    for video, group in groups.items():
        ok = [p for p in group if p.ok]
        if not ok:
            merged.append(replace(group[0], seed=""))
            continue
        names = dict.fromkeys(name for p in ok for name in p.values)
        values = {name: float(np.mean([p.values[name] for p in ok if name in p.values])) for name in names}
        per_frame = {}
        for name in dict.fromkeys(name for p in ok for name in p.per_frame):
            rows: dict[tuple[int, int], list[float]] = defaultdict(list)
            for p in ok:
                for horizon, frame, value in p.per_frame.get(name, ()):
                    rows[(horizon, frame)].append(value)
            per_frame[name] = [(h, f, float(np.mean(v))) for (h, f), v in sorted(rows.items())]
        merged.append(PairResult(video, ok[0].pred, ok[0].ref, frames=ok[0].frames, values=values,
                                 per_frame=per_frame, set_parts=ok[0].set_parts))
    return merged


def summarize_study(pairs: list[PairResult], definitions: dict[str, dict[str, Any]], bootstrap: BootstrapConfig,
                    set_values: dict[str, Any], seeds: Sequence[str], categories: Mapping[str, list[str]] | None):
    """The run's metric summaries, with the seeded headline (mean over seeds per clip, two-level CI) and
    the per-category and between-seed breakdowns; and the run-level study record's figures."""
    seeded = "" not in seeds  # a single prediction set is named ""
    summaries = summarize(clip_level(pairs) if seeded else pairs, definitions, bootstrap, set_values)
    for name, summary in summaries.items():
        if summary.definition["granularity"] == "set":
            continue
        table = _clip_table(pairs, name)
        if seeded:
            estimate = two_level_bootstrap(list(table.values()), bootstrap)
            summary.mean, summary.ci_low, summary.ci_high, summary.n = (estimate.mean, estimate.ci_low,
                                                                        estimate.ci_high, estimate.n)
            summary.breakdown["ci"] = "two-level bootstrap: clips, then seeds within clip"
            summary.breakdown["seeds"] = seed_spread(pairs, name, seeds)
        if categories is not None:
            groups: dict[str, list[list[float]]] = defaultdict(list)
            for video, row in table.items():
                for label in categories.get(video, [UNLABELLED]):
                    groups[label].append(row)
            summary.breakdown["by_category"] = {label: _figures(_estimate(groups[label], seeded, bootstrap))
                                                for label in sorted(groups)}
    return summaries


def timing_record(pairs: Sequence[PairResult]) -> dict[str, Any]:
    """Frame rates, durations and sizes of the reference clips, as counts and ranges."""
    media = [pair.media for pair in pairs if pair.media]
    if not media:
        return {}
    rates = [m["fps"] for m in media if m.get("fps") is not None]
    durations = [m["duration"] for m in media if m.get("duration") is not None]
    sizes = [f"{m['width']}x{m['height']}" for m in media if m.get("width") is not None]
    return {
        "fps": count(rates), "pred_fps": count([m["pred_fps"] for m in media if m.get("pred_fps") is not None]),
        "sizes": count(sizes), "alignment": count([m.get("alignment") for m in media if m.get("alignment")]),
        "duration": {"min": min(durations), "mean": float(np.mean(durations)), "max": max(durations)}
        if durations else None,
        # One reference frame rate for the whole run: horizons can be read in seconds (horizon / fps).
        "common_fps": rates[0] if rates and len(set(rates)) == 1 and len(rates) == len(media) else None,
    }


def count(items: list) -> dict[str, int]:
    """How often each value occurs, keyed by its text."""
    return {str(value): items.count(value) for value in sorted(set(items), key=str)}


def add_horizon_seconds(summaries: Mapping[str, Any], fps: float | None) -> None:
    """Per-horizon entries gain ``seconds``: horizon h ends h / fps seconds after the context."""
    if not fps:
        return
    for summary in summaries.values():
        for entry in summary.per_horizon:
            entry["seconds"] = round(entry["horizon"] / fps, 6)


def unmatched(pairings: Mapping[str, Pairing], side: str) -> list[str]:
    """Unmatched clip keys of every prediction set; a seeded run names the seed: ``<seed>/<key>``."""
    return sorted({f"{seed}/{key}" if seed else key for seed, pairing in pairings.items() for key in getattr(pairing, side)})


def study_record(pairs: Sequence[PairResult], sets: Mapping[str, Path], subset: dict[str, Any], study: Study,
                 categories: Mapping[str, list[str]] | None) -> dict[str, Any]:
    """summary.json's ``study``: the subset, the seeds, the categories' sizes and the clips' timing."""
    record: dict[str, Any] = {"subset": subset, "timing": timing_record(pairs)}
    if "" not in sets:
        record["seeds"] = {"names": list(sets), "roots": {seed: str(root) for seed, root in sets.items()},
                           "rows": {seed: sum(1 for p in pairs if p.seed == seed) for seed in sets}}
    if categories is not None:
        sizes: dict[str, int] = defaultdict(int)
        for labels in categories.values():
            for label in labels:
                sizes[label] += 1
        record["categories"] = {"source": study.as_dict()["categories"], "clips": dict(sorted(sizes.items())),
                                "labels": dict(categories)}
    return record
