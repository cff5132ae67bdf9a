"""Spatial metrics: hand-computed IoU and edge cases, parity with pycocotools / scikit-image / OpenCV /
SciPy, and orderings on the graded fixtures."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from skimage.color import rgb2gray
from skimage.feature import canny

from foresight_eval import RunContext, ScoreOptions, score
from foresight_eval.errors import UsageError
from foresight_eval.metrics.registry import prepare_metrics
from foresight_eval.io.annotations import load_reference_annotations, load_spatial_resources
from foresight_eval.io.clips import open_clip
from foresight_eval.metrics.motion import binary_iou, motion_masks, weighted_iou
from foresight_eval.metrics.objects import box_iou_matrix, mask_iou_matrix, matched_mean_iou
from foresight_eval.metrics.edge_matching import edge_match_counts, edge_precision_recall_f1
from foresight_eval.metrics.edges import edge_f1, edge_maps
from tests.parity import assert_parity

SPATIAL = ["motion_iou", "motion_iou_st", "motion_iou_weighted", "edge_f1", "box_iou", "mask_iou"]


def _frames(path) -> torch.Tensor:
    frames = np.stack(list(open_clip(path).frames()))
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


# --- IoU ---------------------------------------------------------------------------------------------

def test_mask_iou_hand_computed():
    a = torch.zeros(1, 10, 10, dtype=torch.bool)
    b = torch.zeros(1, 10, 10, dtype=torch.bool)
    a[0, 0:4, 0:4] = True  # 16 pixels
    b[0, 2:6, 2:6] = True  # 16 pixels, 4 shared
    assert binary_iou(a, b).item() == pytest.approx(4 / 28)
    assert binary_iou(a, a).item() == 1.0
    empty = torch.zeros(1, 10, 10, dtype=torch.bool)
    assert binary_iou(empty, empty).item() == 1.0  # Physics-IQ: nothing anywhere agrees perfectly
    assert binary_iou(a, empty).item() == 0.0


def test_box_iou_hand_computed():
    iou = box_iou_matrix(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 2.0, 2.0], [5.0, 5, 1, 1]]))
    assert iou[0, 0].item() == pytest.approx(1 / 7)
    assert iou[0, 1].item() == 0.0


def test_weighted_iou_hand_computed():
    pred, ref = torch.tensor([[[2.0, 0.0, 1.0]]]), torch.tensor([[[1.0, 1.0, 1.0]]])
    assert weighted_iou(pred, ref).item() == pytest.approx((1 + 0 + 1) / (2 + 1 + 1))
    assert weighted_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == 1.0


def test_matched_mean_iou_hungarian():
    # Greedy would take 0.9 (pred 0 - ref 0) and leave 0.1; the optimum pairs 0.8 + 0.7.
    iou = torch.tensor([[0.9, 0.8], [0.7, 0.1], [0.0, 0.0]])
    # 2 positive matches, the third prediction is unmatched: (0.8 + 0.7) / (3 + 2 - 2)
    assert matched_mean_iou(iou) == pytest.approx(1.5 / 3)
    assert matched_mean_iou(torch.zeros(0, 0)) == 1.0
    assert matched_mean_iou(torch.zeros(0, 2)) == 0.0


def test_iou_matrices_match_pycocotools(rng):
    boxes_a = np.c_[rng.uniform(0, 50, (6, 2)), rng.uniform(1, 30, (6, 2))]
    boxes_b = np.c_[rng.uniform(0, 50, (5, 2)), rng.uniform(1, 30, (5, 2))]
    reference = mask_utils.iou(boxes_a.tolist(), boxes_b.tolist(), [0] * 5)
    assert_parity("box_iou matrix vs pycocotools.mask.iou", box_iou_matrix(torch.tensor(boxes_a), torch.tensor(boxes_b)),
                  reference, atol=1e-12)
    masks_a, masks_b = rng.random((4, 20, 24)) > 0.6, rng.random((3, 20, 24)) > 0.5
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in (*masks_a, *masks_b)]
    reference = mask_utils.iou(rles[:4], rles[4:], [0] * 3)
    assert_parity("mask_iou matrix vs pycocotools.mask.iou",
                  mask_iou_matrix(torch.from_numpy(masks_a), torch.from_numpy(masks_b)), reference, atol=1e-12)


# --- Physics-IQ motion masks --------------------------------------------------------------------------

def physics_iq_masks_opencv(frames_rgb_uint8: np.ndarray, threshold: int = 10) -> np.ndarray:
    """Physics-IQ's binary_mask_generator.generate_mask, its OpenCV calls in order, on RGB frames."""
    kernel = np.ones((5, 5), np.uint8)
    masks, avg = [], None
    for frame in frames_rgb_uint8:
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (5, 5), 0)
        if avg is None:
            avg = gray.astype("float")
            masks.append(np.zeros_like(gray))
            continue
        cv2.accumulateWeighted(gray, avg, 0.3)
        diff = cv2.absdiff(gray, cv2.convertScaleAbs(avg))
        _, binary = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
        masks.append(cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel))
    return np.stack(masks) > 0


def test_opencv_motion_masks_from_decoded_frames_equal_those_from_float_frames(fixtures_dir):
    """The engine hands the OpenCV path the frames as decoded (8-bit), which it takes instead of rounding the
    [0, 1] frames back to 8 bits: the same masks and background, bit for bit."""
    decoded = torch.from_numpy(np.stack(list(open_clip(fixtures_dir / "preds" / "noise_strong" / "clip01.mp4").frames())))
    frames = torch.from_numpy(np.divide(decoded.numpy(), np.float32(255), dtype=np.float32)).permute(0, 3, 1, 2)
    first, background = motion_masks(frames[:7], backend="opencv", decoded=decoded[:7])
    second, background = motion_masks(frames[7:], background, backend="opencv", decoded=decoded[7:])
    expected_first, expected_background = motion_masks(frames[:7], backend="opencv")
    expected_second, expected_background = motion_masks(frames[7:], expected_background, backend="opencv")
    assert torch.cat([first, second])[1:].any()
    assert torch.equal(torch.cat([first, second]), torch.cat([expected_first, expected_second]))
    assert torch.equal(background, expected_background)


def test_motion_masks_match_physics_iq_opencv(fixtures_dir):
    frames = _frames(fixtures_dir / "preds" / "noise_strong" / "clip01.mp4")
    reference = physics_iq_masks_opencv(np.rint(frames.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))
    assert reference.any(axis=(1, 2)).sum() >= 15, "the clip must show motion for the check to mean anything"
    for backend in ("opencv", "torch"):
        name = f"motion_masks backend={backend}"
        # Two batches carry the running background across the batch boundary.
        first, background = motion_masks(frames[:7], backend=backend)
        second, _ = motion_masks(frames[7:], background, backend=backend)
        ours = torch.cat([first, second])
        # Grayscale, blur, threshold and morphology are bit-exact in torch too; OpenCV's fused
        # multiply-add in the running background can break a rounding tie the other way on a few pixels.
        differing = (ours.numpy() != reference).mean(axis=(1, 2))
        atol = 0 if backend == "opencv" else 1e-3
        assert_parity(f"{name} vs Physics-IQ OpenCV (fraction of pixels differing)", differing,
                      np.zeros_like(differing), atol=atol)
        expected = torch.from_numpy(reference)
        agreement = [binary_iou(ours, expected).mean().item(), binary_iou(ours.any(0)[None], expected.any(0)[None]).item()]
        assert_parity(f"{name} vs Physics-IQ OpenCV (IoU, mean per frame / over time)", agreement, [1.0, 1.0],
                      atol=0.005 if atol else 0)


# --- edges --------------------------------------------------------------------------------------------

def _grid_edges(shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    edges = np.zeros((100, 100), dtype=bool)
    dy, dx = shift
    for k in (20, 45, 70):
        edges[k + dy, 10 + dx:90 + dx] = True
        edges[10 + dy:90 + dy, k + dx] = True
    return edges


def test_edge_f1_against_itself_and_shifts():
    ref = _grid_edges()
    radius = 0.0075 * np.hypot(100, 100)  # 1.06 px
    assert radius < 2
    for matching in ("exact", "approx"):
        assert edge_precision_recall_f1(ref, ref, matching=matching)[2] == 1.0
        # A 1-px shift is inside the tolerance: every pixel has its own partner.
        assert edge_precision_recall_f1(_grid_edges((0, 1)), ref, matching=matching)[2] == 1.0
        # A 3-px diagonal shift is outside it: only the crossings of the grid still meet.
        assert edge_precision_recall_f1(_grid_edges((3, 3)), ref, matching=matching)[2] < 0.2


def test_edge_f1_exact_is_one_to_one_approx_is_not():
    ref = np.zeros((100, 100), dtype=bool)
    ref[50, 10:90] = True
    pred = ref.copy()
    pred[51, 10:90] = True  # a doubled line: every pixel is near the reference, half of them without a partner
    precision, recall, _ = edge_precision_recall_f1(pred, ref, matching="exact")
    assert (precision, recall) == (0.5, 1.0)
    precision, recall, _ = edge_precision_recall_f1(pred, ref, matching="approx")
    assert (precision, recall) == (1.0, 1.0)


def test_edge_matching_count_matches_scipy_assignment(rng):
    radius = 2.5
    counts, reference = [], []
    for _ in range(4):
        pred, ref = rng.random((30, 30)) > 0.93, rng.random((30, 30)) > 0.93
        counts.append(edge_match_counts(pred, ref, radius, "exact")[0])
        p, r = np.argwhere(pred), np.argwhere(ref)
        far = np.linalg.norm(p[:, None] - r[None], axis=2) > radius
        rows, cols = linear_sum_assignment(far.astype(float))
        reference.append(int((~far[rows, cols]).sum()))
    assert_parity("edge matched pairs vs scipy linear_sum_assignment", counts, reference, atol=0)


def test_edge_maps_match_skimage_canny(fixtures_dir):
    frames = _frames(fixtures_dir / "preds" / "blur_mild" / "clip02.mp4")[::5]
    ours = edge_maps(frames)
    uint8 = np.rint(frames.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    reference = np.stack([canny(rgb2gray(frame), sigma=1.0, low_threshold=0.1, high_threshold=0.2) for frame in uint8])
    assert reference.any()
    assert_parity("edge maps vs skimage.feature.canny (pixels differing)", ours.astype(float), reference.astype(float),
                  atol=0)


def test_edge_f1_of_identical_frames_is_one(fixtures_dir):
    frames = _frames(fixtures_dir / "refs" / "clip00.mp4")[:3]
    assert edge_f1(frames, frames).tolist() == [1.0, 1.0, 1.0]


# --- through the engine -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_clip_sets(fixtures_dir, tmp_path_factory):
    """Two clips of the reference and shift sets, to keep engine runs short."""
    root = tmp_path_factory.mktemp("spatial")
    for folder in ("refs", "preds/shift_mild", "preds/shift_strong", "preds/blur_mild"):
        (root / folder).mkdir(parents=True)
        for key in ("clip00", "clip03"):
            for source in (fixtures_dir / folder).glob(f"{key}.*"):
                shutil.copy(source, root / folder / source.name)
    return root


def test_bigger_shift_scores_lower(two_clip_sets, fixtures_dir):
    results = {}
    for name in ("shift_mild", "shift_strong"):
        resources = load_spatial_resources(fixtures_dir / "coco" / "refs.json",
                                           fixtures_dir / "coco" / "detections" / f"{name}.json")
        run = score(two_clip_sets / "preds" / name, two_clip_sets / "refs", SPATIAL, device="cpu",
                    options=ScoreOptions(context=4), resources=resources)
        assert not run.failed
        results[name] = {metric: summary.mean for metric, summary in run.metrics.items()}
    for metric in SPATIAL:
        assert results["shift_mild"][metric] > results["shift_strong"][metric], metric


def test_sidecar_annotations_give_the_same_scores_as_coco(two_clip_sets, fixtures_dir):
    coco = load_spatial_resources(fixtures_dir / "coco" / "refs.json",
                                  fixtures_dir / "coco" / "detections" / "shift_mild.json")
    sidecars = {"annotations": load_reference_annotations(two_clip_sets / "refs"), "detections": coco["detections"]}
    means = []
    for resources in (coco, sidecars):
        run = score(two_clip_sets / "preds" / "shift_mild", two_clip_sets / "refs", ["mask_iou"], device="cpu",
                    options=ScoreOptions(context=4), resources=resources)
        means.append(run.metrics["mask_iou"].mean)
    assert means[0] == pytest.approx(means[1], abs=1e-12)


def test_annotation_metrics_unavailable_without_inputs(two_clip_sets):
    _, skipped = prepare_metrics(None, None, RunContext())
    for name in ("box_iou", "mask_iou", "map50", "map50_95"):
        assert "needs --ref-annotations" in skipped[name]
    assert not {"motion_iou", "motion_iou_st", "motion_iou_weighted", "edge_f1"} & set(skipped)
    with pytest.raises(UsageError, match="box_iou.*needs --ref-annotations"):
        score(two_clip_sets / "preds" / "blur_mild", two_clip_sets / "refs", ["box_iou"], device="cpu")


def test_unannotated_video_is_an_error_row(two_clip_sets, fixtures_dir, tmp_path):
    refs = tmp_path / "refs"
    shutil.copytree(two_clip_sets / "refs", refs)
    (refs / "clip03.boxes.json").unlink()
    (refs / "clip03.masks.npz").unlink()
    resources = load_spatial_resources(refs, None, two_clip_sets / "refs")  # reference masks as "predictions"
    run = score(two_clip_sets / "preds" / "blur_mild", refs, ["mask_iou"], device="cpu",
                options=ScoreOptions(context=4), resources=resources)
    assert [pair.video for pair in run.failed] == ["clip03"]
    assert "no annotations for video 'clip03'" in run.failed[0].error
    assert run.metrics["mask_iou"].mean == 1.0  # the same masks on both sides


def test_motion_metrics_share_their_masks_and_equal_their_separate_runs(fixtures_dir):
    """The three motion metrics compute the masks once per batch; each still gets what it gets alone."""
    from foresight_eval import ScoreOptions, score

    names = ["motion_iou", "motion_iou_st", "motion_iou_weighted"]
    options = ScoreOptions(context=4, batch_size=5)
    preds, refs = fixtures_dir / "preds" / "shift_strong", fixtures_dir / "refs"
    together = score(preds, refs, names, options=options)
    for name in names:
        alone = score(preds, refs, [name], options=options)
        assert [p.values[name] for p in alone.pairs] == [p.values[name] for p in together.pairs]


@pytest.mark.parametrize("by_addition", [True, False])
@pytest.mark.parametrize("frames", [0, 1, 7])
def test_running_mask_counts_equal_a_cumulative_sum(by_addition, frames):
    from foresight_eval.metrics.motion import running_counts

    generator = torch.Generator().manual_seed(frames)
    masks = torch.rand((frames, 9, 13), generator=generator) > 0.6
    start = torch.randint(0, 50, (9, 13), generator=generator, dtype=torch.int32)
    expected = masks.to(torch.int32).cumsum(dim=0)
    assert torch.equal(running_counts(masks, by_addition=by_addition), expected)
    counted = running_counts(masks, start, by_addition=by_addition)
    assert counted.dtype == torch.int32 and torch.equal(counted, expected + start)
