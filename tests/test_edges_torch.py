"""The torch Canny (GPU path of edge_f1) against scikit-image's ``feature.canny``, on the fixture clips and on
camera-like frames with dense edges: maps equal on >= 99.9% of pixels, edge F1 within 1e-3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.feature import canny as skimage_canny

from fixtures import synthetic
from foresight_eval.io.clips import open_clip
from foresight_eval.metrics.edges_torch import STRONG, WEAK, canny, canny_candidates, hysteresis, pack_candidates
from foresight_eval.metrics.edge_matching import (
    edge_f1_of_packed_candidates,
    edge_f1_value,
    edge_precision_recall_f1,
    link_edges,
    unpack_candidates,
)
from foresight_eval.metrics.edges import edge_f1
from tests.parity import assert_parity


def _fixture_frames(path) -> torch.Tensor:
    frames = np.stack(list(open_clip(path).frames()))
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def _camera_like(seed: int, frames: int = 2, height: int = 120, width: int = 200) -> torch.Tensor:
    clip = synthetic.to_uint8(synthetic.camera_like_clip(seed, frames, height=height, width=width))
    return torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255


def _skimage_maps(frames: torch.Tensor, **params) -> np.ndarray:
    return np.stack([skimage_canny(rgb2gray(f.permute(1, 2, 0).double().numpy()), **params) for f in frames])


CASES = {
    "fixture blur_mild/clip02": lambda d: _fixture_frames(d / "preds" / "blur_mild" / "clip02.mp4")[::4],
    "fixture noise_strong/clip01": lambda d: _fixture_frames(d / "preds" / "noise_strong" / "clip01.mp4")[::4],
    "camera-like seed 0": lambda d: _camera_like(0),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("thresholds", [(1.0, 0.1, 0.2), (2.0, 0.05, 0.15)])
def test_torch_canny_matches_skimage(case, thresholds, dtype, fixtures_dir):
    """The issue's bound (issue 17): maps equal on >= 99.9% of pixels, F1 within 1e-3, in either precision
    (float32 is edge_f1's default on a GPU; measured: no pixel differs on these cases)."""
    frames = CASES[case](fixtures_dir)
    sigma, low, high = thresholds
    params = {"sigma": sigma, "low_threshold": low, "high_threshold": high}
    reference = _skimage_maps(frames, **params)
    ours = canny(frames, **params, dtype=dtype).numpy()
    assert reference.any(axis=(1, 2)).all(), "every frame must have edges for the check to mean anything"
    differing = (ours != reference).mean(axis=(1, 2))
    assert_parity(f"torch Canny ({dtype}) vs skimage.feature.canny (fraction of pixels differing)", differing,
                  np.zeros_like(differing), atol=1e-3)
    f1 = [edge_precision_recall_f1(o, r, matching="approx")[2] for o, r in zip(ours, reference)]
    assert_parity(f"torch Canny ({dtype}) vs skimage.feature.canny (edge F1 of one against the other)", f1,
                  np.ones(len(f1)), atol=1e-3)


def test_float32_canny_parts_from_skimage_on_a_few_pixels_of_dense_frames():
    """Dense camera-like 640x360 frames at sigma 2, where the precisions part: float64 equals scikit-image's
    maps, float32 differs on a handful of pixels (4.3e-6 of them when measured) and stays within the bound."""
    frames = _camera_like(3, frames=4, height=360, width=640)
    params = {"sigma": 2.0, "low_threshold": 0.05, "high_threshold": 0.15}
    reference = _skimage_maps(frames, **params)
    single, double = (canny(frames, **params, dtype=dtype).numpy() for dtype in (torch.float32, torch.float64))
    assert np.array_equal(double, reference)
    differing = single != reference
    assert 0 < differing.mean() < 1e-4  # they do part here, on a handful of pixels
    f1 = [edge_precision_recall_f1(o, r)[2] for o, r in zip(single, reference)]
    assert_parity("torch Canny float32 vs skimage.feature.canny, camera-like 640x360 (edge F1)", f1,
                  np.ones(len(f1)), atol=1e-3)


@pytest.mark.parametrize("case", list(CASES))
def test_candidates_linked_on_the_cpu_are_the_torch_canny(case, fixtures_dir):
    """edge_f1's GPU path: steps 1-3 in torch, hysteresis by connected components in the workers."""
    frames = CASES[case](fixtures_dir)
    candidates = canny_candidates(frames).numpy()
    assert set(np.unique(candidates)) == {0, WEAK, STRONG}
    linked = np.stack([link_edges(frame) for frame in candidates])
    whole = canny(frames).numpy()
    assert linked.any() and np.array_equal(linked, whole)
    assert_parity("Canny candidates linked in the workers vs skimage.feature.canny (pixels differing)",
                  (linked != _skimage_maps(frames)).mean(axis=(1, 2)), np.zeros(len(frames)), atol=1e-3)
    edges = whole[0]
    assert link_edges(edges) is edges  # edges already (a cached reference): as they are


@pytest.mark.parametrize("width", [200, 203])  # whole bytes, and a row padded to them
def test_candidates_reach_the_workers_as_numpy_packbits_and_unpack_to_themselves(width):
    """The GPU path hands the maps over as bits (pack_candidates on the device, unpack_candidates in the worker)."""
    frames = torch.cat([_camera_like(1, height=60, width=width), _camera_like(2, height=60, width=width)])
    candidates = canny_candidates(frames)
    packed = pack_candidates(candidates).numpy()
    assert packed.shape == (4, 2, 60, -(-width // 8)) and packed.dtype == np.uint8
    maps = candidates.numpy()
    assert set(np.unique(maps)) == {0, WEAK, STRONG}
    for frame, bits in zip(maps, packed):
        assert np.array_equal(bits[0], np.packbits(frame >= WEAK, axis=-1))
        assert np.array_equal(bits[1], np.packbits(frame == STRONG, axis=-1))
        assert np.array_equal(unpack_candidates(bits, width), frame)
    f1 = edge_f1_of_packed_candidates(packed[0], packed[3], width)
    assert 0 < f1 < 1 and f1 == edge_f1_value(link_edges(maps[0]), link_edges(maps[3]))


def test_edge_f1_is_the_same_with_either_detector(fixtures_dir):
    ref = _fixture_frames(fixtures_dir / "refs" / "clip03.mp4")[::6]
    pred = _fixture_frames(fixtures_dir / "preds" / "shift_mild" / "clip03.mp4")[::6]
    with_skimage = edge_f1(pred, ref, detector="skimage")
    assert (with_skimage < 1).any()
    assert_parity("edge_f1 detector=torch vs detector=skimage", edge_f1(pred, ref, detector="torch"), with_skimage,
                  atol=1e-3)


def _components_with_strong(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """scikit-image's hysteresis step: 8-connected components of ``weak`` holding a ``strong`` pixel."""
    labels, _ = ndimage.label(weak, np.ones((3, 3), bool))
    return np.isin(labels, np.unique(labels[strong & weak])) & weak


def test_hysteresis_matches_connected_components(rng):
    # A serpentine one pixel wide, strong only at one end (hundreds of dilations to cross), and random blobs.
    serpentine = np.zeros((24, 24), bool)
    serpentine[1:23:4, 1:23] = True
    for k, row in enumerate(range(1, 19, 4)):
        serpentine[row:row + 5, 22 if k % 2 == 0 else 1] = True
    blobs = rng.random((2, 24, 24)) < 0.45
    weak = np.stack([serpentine, blobs[0], blobs[1]])
    strong = np.zeros_like(weak)
    strong[0, 1, 1] = True
    strong[1:] = rng.random((2, 24, 24)) < 0.02
    reference = np.stack([_components_with_strong(w, s) for w, s in zip(weak, strong)])
    assert reference[0].sum() == serpentine.sum() and 0 < reference[1:].sum() < weak[1:].sum()
    ours = hysteresis(torch.from_numpy(weak), torch.from_numpy(strong)).numpy()
    assert_parity("hysteresis by dilation vs scipy.ndimage.label components (pixels differing)",
                  (ours != reference).mean(axis=(1, 2)), np.zeros(3), atol=0)


def test_linking_on_the_cpu_is_scikit_images_labelling(rng):
    """``link_edges`` labels with OpenCV: the same components as scikit-image's ``scipy.ndimage.label`` (8-connected),
    on random candidate maps whose blobs touch the borders and each other only diagonally, and the serpentine."""
    candidates = (rng.random((6, 40, 56)) < np.array([0.2, 0.35, 0.45, 0.55, 0.6, 0.7])[:, None, None]).astype(np.uint8)
    candidates[candidates == 1] += (rng.random((6, 40, 56)) < 0.03)[candidates == 1].astype(np.uint8)
    checker = (np.indices((40, 56)).sum(axis=0) % 2 == 0).astype(np.uint8)  # diagonal neighbours only
    checker[0, 0] = STRONG
    candidates = np.concatenate([candidates, checker[None]])
    for frame in candidates:
        expected = _components_with_strong(frame >= WEAK, frame == STRONG)
        assert 0 < expected.sum() and np.array_equal(link_edges(frame), expected)
    assert link_edges(checker).sum() == (checker > 0).sum()  # one component, through its corners
