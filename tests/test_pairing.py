"""Pairing predictions with references by relative path without extension."""

from __future__ import annotations

import numpy as np
import pytest

from foresight_eval.errors import UsageError
from foresight_eval.io.clips import discover_clips
from foresight_eval.io.pairing import pair_clips
from tests.clipmaker import gradient_clip, write_container, write_frames_folder


@pytest.fixture
def tree(tmp_path):
    frames = gradient_clip()
    preds, refs = tmp_path / "preds", tmp_path / "refs"
    write_container(preds / "a" / "clip01.mp4", frames, "libx264", "yuv420p")
    np.save(preds / "a" / "clip02.npy", frames)
    write_frames_folder(preds / "b" / "clip03", frames)
    np.save(preds / "only_pred.npy", frames)
    write_frames_folder(refs / "a" / "clip01", frames)
    write_container(refs / "a" / "clip02.mkv", frames, "ffv1", "bgr0")
    (refs / "b").mkdir(parents=True)
    np.save(refs / "b" / "clip03.npy", frames)
    np.save(refs / "only_ref.npy", frames)
    (refs / "notes.txt").write_text("ignored")
    np.savez(refs / "a" / "clip01.masks.npz", masks=np.zeros((1, 2, 2), dtype=bool))
    return preds, refs


def test_pairs_across_formats_and_folders(tree):
    preds, refs = tree
    pairing = pair_clips(preds, refs)
    assert [(p.key, p.pred.name, p.ref.name) for p in pairing.pairs] == [
        ("a/clip01", "clip01.mp4", "clip01"),
        ("a/clip02", "clip02.npy", "clip02.mkv"),
        ("b/clip03", "clip03", "clip03.npy"),
    ]
    assert pairing.unmatched_preds == ["only_pred"]
    assert pairing.unmatched_refs == ["only_ref"]


def test_sidecar_files_are_not_clips(tree):
    _, refs = tree
    assert "a/clip01.masks" not in {clip.key for clip in discover_clips(refs)}


def test_strict_refuses_unmatched_clips(tree):
    preds, refs = tree
    with pytest.raises(UsageError, match="only_pred"):
        pair_clips(preds, refs, strict=True)


def test_two_files_on_one_side_with_one_key_make_an_error_row(tree):
    preds, refs = tree
    np.save(preds / "a" / "clip01.npy", gradient_clip())
    pair = next(p for p in pair_clips(preds, refs).pairs if p.key == "a/clip01")
    assert "ambiguous predictions" in pair.problem


def test_single_files_pair_directly(tmp_path):
    np.save(tmp_path / "x.npy", gradient_clip())
    np.save(tmp_path / "y.npy", gradient_clip())
    pairing = pair_clips(tmp_path / "x.npy", tmp_path / "y.npy")
    assert len(pairing.pairs) == 1 and pairing.pairs[0].key == "y"


def test_empty_folder_is_a_usage_error(tmp_path):
    (tmp_path / "preds").mkdir()
    np.save(tmp_path / "ref.npy", gradient_clip())
    with pytest.raises(UsageError, match="no clips found"):
        pair_clips(tmp_path / "preds", tmp_path / "ref.npy")


def test_no_common_names_is_a_usage_error(tmp_path):
    for side, name in (("preds", "a"), ("refs", "b")):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / f"{name}.npy", gradient_clip())
    with pytest.raises(UsageError, match="has a reference of the same name"):
        pair_clips(tmp_path / "preds", tmp_path / "refs")
