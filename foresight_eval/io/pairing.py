"""Matching prediction clips to reference clips by relative path without extension."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from foresight_eval.errors import UsageError, field_ref
from foresight_eval.io.clips import ClipSource, discover_clips


@dataclass(frozen=True)
class ClipPair:
    key: str
    pred: Path
    ref: Path
    # Set when the key is ambiguous (two files on one side map to it); the pair is then an error row.
    problem: str | None = None


@dataclass
class Pairing:
    pairs: list[ClipPair]
    unmatched_preds: list[str] = field(default_factory=list)
    unmatched_refs: list[str] = field(default_factory=list)


def _group(clips: list[ClipSource]) -> dict[str, list[ClipSource]]:
    grouped: dict[str, list[ClipSource]] = defaultdict(list)
    for clip in clips:
        grouped[clip.key].append(clip)
    return grouped


def pair_clips(preds: Path, refs: Path, strict: bool = False) -> Pairing:
    """Pair every clip in ``preds`` with the clip of the same key in ``refs``.

    ``a/clip01.mp4`` pairs with ``a/clip01/`` (a frame folder) or ``a/clip01.npy``. Clips present on
    one side only are listed as unmatched; with ``strict`` they are a usage error.
    """
    preds, refs = Path(preds), Path(refs)
    for label, path in (("predictions", preds), ("references", refs)):
        if not path.exists():
            raise UsageError(f"{label} path {path} does not exist")
    pred_clips, ref_clips = discover_clips(preds), discover_clips(refs)
    for clips, root in ((pred_clips, preds), (ref_clips, refs)):
        if not clips:
            raise UsageError(f"no clips found under {root} (videos, .npy/.npz arrays, or folders of png/jpg frames)")
    return pair_sources(pred_clips, ref_clips, preds, refs, strict)


def pair_sources(
    pred_items: list[ClipSource], ref_items: list[ClipSource], preds: Path, refs: Path, strict: bool, noun: str = "clip"
) -> Pairing:
    """Pair discovered items (clips, latent files) of two non-empty sides by key; ``noun`` names them in errors."""
    if len(pred_items) == 1 and len(ref_items) == 1 and (preds.is_file() or refs.is_file()):
        # Two single items given directly: pair them whatever their names.
        return Pairing(pairs=[ClipPair(key=ref_items[0].key, pred=pred_items[0].path, ref=ref_items[0].path)])

    pred_by_key, ref_by_key = _group(pred_items), _group(ref_items)
    pairs = []
    for key in sorted(pred_by_key.keys() & ref_by_key.keys()):
        pred_side, ref_side = pred_by_key[key], ref_by_key[key]
        problem = None
        for side, label in ((pred_side, "predictions"), (ref_side, "references")):
            if len(side) > 1:
                names = ", ".join(str(c.path.name) for c in side)
                problem = f"ambiguous {label}: {names} all match {noun} {key!r}"
        pairs.append(ClipPair(key=key, pred=pred_side[0].path, ref=ref_side[0].path, problem=problem))
    pairing = Pairing(
        pairs=pairs,
        unmatched_preds=sorted(pred_by_key.keys() - ref_by_key.keys()),
        unmatched_refs=sorted(ref_by_key.keys() - pred_by_key.keys()),
    )
    if strict and (pairing.unmatched_preds or pairing.unmatched_refs):
        raise UsageError(
            f"{field_ref('strict')}: unmatched {noun}s "
            f"(predictions only: {pairing.unmatched_preds or 'none'}; references only: {pairing.unmatched_refs or 'none'})"
        )
    if not pairs:
        raise UsageError(f"no {noun} in {preds} has a reference of the same name in {refs}")
    return pairing
