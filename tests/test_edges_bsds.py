"""Edge F1: the bounded-time one-to-one matcher and the BSDS boundary-benchmark mode.

The matcher's tests run both of its ways (the ``matcher`` fixture): SciPy's maximum flow, as the run's own
process matches, and the compiled Hopcroft-Karp (``edge_matching_compiled``), as the workers do. References:
SciPy's ``linear_sum_assignment`` on the candidate graph (an independent maximum matching), the previous
matcher (``maximum_bipartite_matching``) where it finishes, each other, hand-computed cases, and
pyEdgeEval 0.2.8 (a Python port of the BSDS benchmark: ``correspondPixels``' C++ matcher, MATLAB's
``bwmorph`` thinning, ``calculate_metrics``), a test dependency.
"""

from __future__ import annotations

import importlib
import math
import shutil
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree
from skimage.morphology import thin

from foresight_eval.engine import score
from foresight_eval.options import ScoreOptions
from foresight_eval.errors import UsageError
from foresight_eval.metrics.registry import create
from foresight_eval.metrics import edge_matching
from foresight_eval.metrics.edge_matching import bsds_edge_counts, edge_precision_recall_f1, max_edge_matching
from foresight_eval.metrics.edges import bsds_scores, bsds_thresholds
from tests.parity import assert_parity

DIAGONAL_128x96 = math.hypot(96, 128)


def soft_edges(height: int, width: int, seed: int) -> np.ndarray:
    """A dense soft edge map in [0, 1]: Sobel magnitude of smooth random texture, normalised."""
    texture = cv2.resize(np.random.default_rng(seed).random((height // 8, width // 8)).astype(np.float32),
                         (width, height), interpolation=cv2.INTER_CUBIC)
    magnitude = np.hypot(cv2.Sobel(texture, cv2.CV_32F, 1, 0), cv2.Sobel(texture, cv2.CV_32F, 0, 1))
    return (magnitude / magnitude.max()).astype(np.float64)


def candidate_pairs(pred: np.ndarray, ref: np.ndarray, radius: float) -> tuple[np.ndarray, int, int]:
    pred_points, ref_points = np.argwhere(pred), np.argwhere(ref)
    adjacency = np.zeros((len(pred_points), len(ref_points)))
    for row, columns in enumerate(cKDTree(ref_points).query_ball_point(pred_points, r=radius)):
        adjacency[row, columns] = 1
    return adjacency, len(pred_points), len(ref_points)


# --- the matcher --------------------------------------------------------------------------------------

def use_matcher(monkeypatch, matcher: str) -> None:
    """max_edge_matching's way for the test: "compiled" where its module is loaded (the workers), else "scipy";
    the process is left as it was (the module loaded or not) when the test ends."""
    if matcher == "compiled":
        was_loaded = edge_matching.COMPILED_MATCHING in sys.modules
        compiled = importlib.import_module(edge_matching.COMPILED_MATCHING)
        if not was_loaded:
            del sys.modules[edge_matching.COMPILED_MATCHING]  # so that monkeypatch removes it again at the end
        monkeypatch.setitem(sys.modules, edge_matching.COMPILED_MATCHING, compiled)
    else:
        monkeypatch.delitem(sys.modules, edge_matching.COMPILED_MATCHING, raising=False)


@pytest.fixture(params=["scipy", "compiled"])
def matcher(request, monkeypatch) -> str:
    use_matcher(monkeypatch, request.param)
    return request.param


def test_the_compiled_matcher_counts_what_scipys_max_flow_counts(rng, monkeypatch):
    """Both ways on random maps of every density, radii below and above the look-up's bound (the k-d tree's
    pairs), and Canny-like dense maps: the same count, pixel for pixel."""
    counts = {"scipy": [], "compiled": []}
    cases = []
    for _ in range(150):
        height, width = rng.integers(2, 50, size=2)
        cases.append((rng.random((height, width)) < rng.uniform(0.01, 0.7),
                      rng.random((height, width)) < rng.uniform(0.01, 0.7), rng.uniform(0.5, 14.0)))
    strength = soft_edges(96, 128, 3)
    cases.append((strength > 0.5, np.roll(strength, 2, axis=1) > 0.45, 0.0075 * DIAGONAL_128x96))
    for way in counts:
        use_matcher(monkeypatch, way)
        counts[way] = [max_edge_matching(pred, ref, radius) for pred, ref, radius in cases]
    assert_parity("edge matching: compiled Hopcroft-Karp vs SciPy's max flow", counts["compiled"], counts["scipy"],
                  atol=0)
    assert any(radius > 11.3 for _, _, radius in cases)  # past _MOST_OFFSETS (400 offsets): the k-d tree's pairs


def test_matching_equals_an_assignment_on_the_candidate_graph(rng, matcher):
    """Independent reference: a maximum matching is an assignment maximising the number of 1-entries."""
    ours, reference = [], []
    for _ in range(12):
        pred, ref = rng.random((40, 50)) < 0.08, rng.random((40, 50)) < 0.08
        radius = rng.uniform(0.5, 3.0)
        adjacency, _, _ = candidate_pairs(pred, ref, radius)
        rows, cols = linear_sum_assignment(adjacency, maximize=True)
        reference.append(adjacency[rows, cols].sum())
        ours.append(max_edge_matching(pred, ref, radius))
    assert_parity("edge matching (max flow) vs scipy linear_sum_assignment", ours, reference, atol=0)


def test_matching_equals_the_previous_matcher_where_it_finishes(matcher):
    """The previous matcher (SciPy's Hopcroft-Karp) on maps small enough for it to finish."""
    ours, previous = [], []
    for seed in range(3):
        strength = soft_edges(96, 128, seed)
        pred, ref = strength > 0.5, np.roll(strength, 2, axis=1) > 0.45
        radius = 0.0075 * DIAGONAL_128x96
        graph = csr_matrix(candidate_pairs(pred, ref, radius)[0])
        previous.append(int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum()))
        ours.append(max_edge_matching(pred, ref, radius))
    assert_parity("edge matching vs scipy maximum_bipartite_matching", ours, previous, atol=0)


@pytest.mark.parametrize("radius", [0.5, 1.0, math.sqrt(2), 2.0, math.sqrt(5), 3.7, 5.507, 9.0])
@pytest.mark.parametrize("way", ["look-up", "k-d tree"])
def test_pixel_pairs_within_the_radius_are_the_k_d_trees(rng, radius, way, monkeypatch):
    """The offset look-up finds exactly the pairs SciPy's k-d tree finds, boundary distances included
    (integer radii and square roots of integers put pixels exactly on the circle), also when the look-up
    runs in blocks; and the k-d tree's lists come out as the same index arrays, grouped by predicted pixel."""
    monkeypatch.setattr(edge_matching, "_LOOKUP_BLOCK", 500)  # several blocks on these maps
    monkeypatch.setattr(edge_matching, "_MOST_OFFSETS", 10**9 if way == "look-up" else 0)
    for density in (0.02, 0.3):
        pred, ref = rng.random((37, 53)) < density, rng.random((37, 53)) < density
        pred_points, ref_points = np.argwhere(pred), np.argwhere(ref)
        found = edge_matching._pairs_within(pred, ref, radius)
        neighbours = cKDTree(ref_points).query_ball_point(pred_points, r=radius)
        expected = {(row, column) for row, columns in enumerate(neighbours) for column in columns}
        assert set(zip(*(part.tolist() for part in found))) == expected
        assert len(found[0]) == len(expected)  # no pair twice
        assert (np.diff(found[0]) >= 0).all()  # grouped by predicted pixel: max_edge_matching lays rows out so


def test_hand_computed_matches(matcher):
    ref = np.zeros((10, 10), bool)
    ref[5, 2:8] = True  # 6 pixels in a row
    pred = np.zeros_like(ref)
    pred[6, 2:5] = True  # 3 pixels one row below: all within 1
    pred[0, 0] = True  # far from everything
    assert max_edge_matching(pred, ref, 1.0) == 3
    assert max_edge_matching(pred, ref, 0.99) == 0  # the radius is inclusive: distance 1 needs radius >= 1
    # Two predicted pixels competing for one reference pixel: one to one.
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    two = np.zeros_like(one)
    two[2, 1] = two[2, 3] = True
    assert max_edge_matching(two, one, 1.0) == 1
    assert max_edge_matching(two, np.zeros_like(one), 1.0) == 0
    # A first choice to undo: the predicted pixel at (0, 1) reaches the reference pixels at (0, 2) and (1, 1)
    # and is offered (0, 2) first (the offsets go row-major); the one at (0, 3) reaches only (0, 2). Both pair
    # only by an augmenting path that moves the first to (1, 1).
    pred, ref = np.zeros((2, 4), bool), np.zeros((2, 4), bool)
    pred[0, 1] = pred[0, 3] = ref[0, 2] = ref[1, 1] = True
    assert max_edge_matching(pred, ref, 1.0) == 2


def test_dense_map_matches_in_bounded_time(matcher):
    """A 256x192 Sobel map thresholded to half its pixels: SciPy's Hopcroft-Karp ran over 30 s on it
    (measured while writing this test); the max-flow matcher takes well under a second."""
    strength = soft_edges(192, 256, 7)
    pred, ref = strength > np.median(strength), np.roll(strength, 3, axis=0) > np.median(strength)
    start = time.perf_counter()
    matched = max_edge_matching(pred, ref, 0.0075 * math.hypot(192, 256))
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"dense matching took {elapsed:.1f} s"
    # Every pixel at the same place on both sides can pair with itself: a lower bound of the maximum.
    assert (pred & ref).sum() <= matched <= min(pred.sum(), ref.sum())


# --- BSDS parity ----------------------------------------------------------------------------------------

def test_thinning_matches_bsds_bwmorph():
    """skimage's thin against pyEdgeEval's port of MATLAB's bwmorph(..., 'thin', Inf), which BSDS applies:
    the same algorithm (Lam, Lee and Suen), apart from a few pixels at the end of some strokes."""
    binary_thin = pytest.importorskip("pyEdgeEval.preprocess", reason="pyEdgeEval is a test dependency").binary_thin
    differing, total = 0, 0
    for seed in range(6):
        strength = soft_edges(96, 128, seed)
        for threshold in bsds_thresholds(9):
            edges = strength >= threshold
            differing += int((thin(edges) != binary_thin(edges)).sum())
            total += int(binary_thin(edges).sum())
    assert_parity("bsds thinning vs bwmorph (fraction of edge pixels differing)", differing / total, 0.0, atol=1e-4)


def _bsds_case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    strengths = [soft_edges(96, 128, seed) for seed in range(4)]
    refs = [thin(np.roll(strength, 1, axis=0) > 0.35) for strength in strengths]
    refs[3][:] = False  # a frame without reference edges: its predicted pixels are false positives
    return strengths, refs


def test_bsds_matching_against_correspond_pixels():
    """BSDS's correspondPixels solves a min-cost assignment where an unmatched pixel costs 100 radii, on a
    sparse random graph of outlier edges: it maximises the matched count up to a few pixels that its
    outlier graph leaves out. Ours is the exact maximum, so never below. BSDS seeds that random graph from
    the clock, so its shortfall varies between runs: up to 0.56% of the predicted pixels in 8 repetitions."""
    correspond_pixels = pytest.importorskip("pyEdgeEval._lib", reason="pyEdgeEval is a test dependency").correspond_pixels
    shortfall = []
    for strength, ref in zip(*_bsds_case()):
        if not ref.any():
            continue
        for threshold in (0.2, 0.4, 0.6):
            edges = thin(strength >= threshold)
            theirs, _, _, _ = correspond_pixels(edges, ref, max_dist=0.0075)
            ours = max_edge_matching(edges, ref, 0.0075 * DIAGONAL_128x96)
            assert ours >= (theirs > 0).sum()
            shortfall.append((ours - (theirs > 0).sum()) / edges.sum())
    assert_parity("bsds matched pixels vs correspondPixels (fraction of predicted pixels)", shortfall,
                  np.zeros(len(shortfall)), atol=2e-2)


def test_bsds_scores_against_pyedgeeval():
    """ODS/OIS: the arithmetic on the same counts is pyEdgeEval's exactly; end to end (its thinning and
    clock-seeded matcher, ours) within the few pixels the two tests above measure: 7e-5 to 1.7e-3 in 6 runs."""
    evaluation = pytest.importorskip("pyEdgeEval.common.binary_label", reason="pyEdgeEval is a test dependency")
    from pyEdgeEval.common.metrics import compute_rec_prec_f1, interpolated_max_scores

    thresholds = bsds_thresholds(9)
    strengths, refs = _bsds_case()
    counts = np.stack([bsds_edge_counts(strength, ref, thresholds) for strength, ref in zip(strengths, refs)])
    ours = bsds_scores(counts, thresholds)
    # Their scoring of our counts.
    total = counts.sum(axis=0).astype(np.float64)
    recall, precision, _ = compute_rec_prec_f1(total[0], total[1], total[2], total[3])
    threshold, ods_recall, ods_precision, ods_f1 = interpolated_max_scores(thresholds, recall, precision)
    assert_parity("bsds ODS arithmetic vs pyEdgeEval interpolated_max_scores",
                  [ours["ods"][k] for k in ("f1", "precision", "recall", "threshold")],
                  [ods_f1, ods_precision, ods_recall, threshold], atol=1e-12)
    # End to end: their pipeline on the same maps.
    samples = [{"name": str(k), "strength": s, "ref": r} for k, (s, r) in enumerate(zip(strengths, refs))]
    _, _, overall = evaluation.calculate_metrics(
        lambda sample: evaluation.evaluate_boundaries_threshold(thresholds, sample["strength"], sample["ref"],
                                                                max_dist=0.0075),
        9, samples, nproc=1)
    assert_parity("bsds ODS/OIS F1 vs pyEdgeEval end to end", [ours["ods"]["f1"], ours["ois"]["f1"]],
                  [overall["ODS_f1"], overall["OIS_f1"]], atol=5e-3)


def test_bsds_pools_counts_over_frames_and_empty_scores_zero():
    thresholds = np.array([0.5])
    ref = np.zeros((20, 20), bool)
    ref[10, :] = True  # 20 reference pixels
    good = ref.astype(float)  # a perfect frame
    bad = np.zeros((20, 20))
    bad[0, :4] = 1.0  # 4 predicted pixels, all far from the reference row
    counts = np.stack([bsds_edge_counts(good, ref, thresholds), bsds_edge_counts(bad, ref, thresholds)])
    assert counts[:, :, 0].tolist() == [[20, 20, 20, 20], [0, 20, 0, 4]]
    scores = bsds_scores(counts, thresholds)
    # Pooled: precision 20/24, recall 20/40, F1 = 2pr/(p+r) = 0.625; the mean of per-frame F1 would be 0.5.
    assert scores["ods"]["f1"] == pytest.approx(0.625, abs=1e-12)
    assert scores["ois"]["f1"] == pytest.approx(0.625, abs=1e-12)
    assert (scores["ods"]["precision"], scores["ods"]["recall"]) == pytest.approx((20 / 24, 0.5), abs=1e-12)
    empty = np.stack([bsds_edge_counts(np.zeros((20, 20)), np.zeros((20, 20), bool), thresholds)])
    assert bsds_scores(empty, thresholds)["ods"]["f1"] == 0.0  # BSDS: no edges anywhere scores 0
    # mode=frame keeps its convention: two empty maps agree perfectly.
    assert edge_precision_recall_f1(np.zeros((20, 20), bool), np.zeros((20, 20), bool))[2] == 1.0


def test_ods_picks_one_threshold_ois_one_per_frame():
    """Two frames whose best thresholds differ: OIS (per-frame best) beats ODS (one for the set)."""
    thresholds = np.array([0.25, 0.75])
    ref = np.zeros((30, 30), bool)
    ref[15, 5:25] = True
    strong, weak = np.zeros((30, 30)), np.zeros((30, 30))
    strong[15, 5:25] = 1.0
    strong[2, :] = 0.5  # clutter above the low threshold only
    weak[15, 5:25] = 0.5  # the right edges, but weak: found at the low threshold only
    counts = np.stack([bsds_edge_counts(strong, ref, thresholds), bsds_edge_counts(weak, ref, thresholds)])
    scores = bsds_scores(counts, thresholds)
    assert scores["ois"]["f1"] == pytest.approx(1.0)
    assert scores["ods"]["f1"] < scores["ois"]["f1"]
    assert [row["f1"] for row in scores["per_threshold"]] == pytest.approx([2 * (40 / 70) * 1 / (40 / 70 + 1), 2 / 3])


# --- the metric -------------------------------------------------------------------------------------------

def test_bsds_mode_parameters():
    metric = create("edge_f1", mode="bsds")
    assert metric.info.granularity == "set" and create("edge_f1").info.granularity == "frame"
    assert metric.describe()["params"]["mode"] == "bsds"
    with pytest.raises(UsageError, match="needs matching=exact"):
        create("edge_f1", mode="bsds", matching="approx")
    with pytest.raises(UsageError, match="thresholds must be an integer >= 1"):
        create("edge_f1", mode="bsds", edges="input", thresholds=0)
    with pytest.raises(UsageError, match="mode must be one of"):
        create("edge_f1", mode="odd")


@pytest.fixture(scope="module")
def edge_clips(fixtures_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    for folder in ("refs", "preds/shift_mild"):
        (root / folder).mkdir(parents=True)
        for source in (fixtures_dir / folder).glob("clip0[01].mp4"):
            shutil.copy(source, root / folder / source.name)
    return root


def test_bsds_mode_through_the_engine(edge_clips):
    """Run-level value from counts pooled over both clips, equal to scoring the frames directly."""
    run = score(edge_clips / "preds" / "shift_mild", edge_clips / "refs", ["edge_f1"], device="cpu",
                params={"edge_f1": {"mode": "bsds"}}, options=ScoreOptions(context=16))
    assert not run.failed
    summary = run.metrics["edge_f1"]
    assert summary.definition["granularity"] == "set"
    figures = summary.set_values
    assert figures["n_frames"] == sum(pair.frames for pair in run.pairs)
    assert 0 < summary.mean == figures["ods"]["f1"] < 1
    assert [row["horizon"] for row in figures["per_horizon"]] == sorted({row["horizon"] for row in figures["per_horizon"]})


def test_bsds_mode_on_edge_map_clips_scores_every_threshold(edge_clips):
    """edges=input: the frames' luminance is the edge strength, binarised at each of the thresholds."""
    run = score(edge_clips / "preds" / "shift_mild", edge_clips / "refs", ["edge_f1"], device="cpu",
                params={"edge_f1": {"mode": "bsds", "edges": "input", "thresholds": 3}},
                options=ScoreOptions(context=18))
    assert not run.failed
    figures = run.metrics["edge_f1"].set_values
    assert [row["threshold"] for row in figures["per_threshold"]] == pytest.approx([0.25, 0.5, 0.75])
    assert 0 <= figures["ods"]["f1"] <= 1 and 0 <= figures["ois"]["f1"] <= 1
    # The ODS lies on the curve interpolated between thresholds: never below its best sampled point.
    assert figures["ods"]["f1"] >= max(row["f1"] for row in figures["per_threshold"]) - 1e-12
