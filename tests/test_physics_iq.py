"""Physics-IQ parity: the motion-mask metrics and MSE under the physics-iq settings, and the Physics IQ Score,
against the numbers Physics-IQ's own code produced on the golden clips (../shared/golden, README section 1).

Tolerances: the IoUs are ratios of pixel counts, so equal masks give equal values up to float64 summation order
(1e-12). Upstream computes each frame's MSE in float32 and we in float64: 1e-6 relative (the golden README's
figure; measured 3e-8). The score and physical variance are rounded by their definition: compared exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from foresight_eval import ScoreOptions, score
from foresight_eval.cli import main
from foresight_eval.errors import UsageError
from foresight_eval.feature_cache import reference_sha256, tensor_sha256
from foresight_eval.io.video import VideoReader, write_video
from foresight_eval.iq_score import ClipTerms, iq_score, load_categories, physics_iq_score, score_physics_iq
from foresight_eval.metrics.base import FrameBatch
from foresight_eval.metrics.physics_iq import Mp4vRoundTrip, window_stop
from foresight_eval.metrics.registry import create, get_metric_class
from tests.parity import assert_parity

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
PROFILE = Path(__file__).resolve().parents[1] / "foresight_eval" / "profiles" / "physics-iq.yaml"
MASKS = {"threshold": 10, "alpha": 0.3, "morph_kernel": 5, "roundtrip": "mp4v", "downscale": 4, "window_seconds": 5}
PHYSICS_IQ = {"motion_iou": MASKS, "motion_iou_weighted": MASKS, "motion_iou_st": MASKS,
              "mse": {"downscale": 4, "window_seconds": 5}}
# ours -> golden key, for a clip's values and for its physical variance against take 2
CLIP_KEYS = {"motion_iou": "spatial_iou", "motion_iou_weighted": "weighted_spatial_iou",
             "motion_iou_st": "spatiotemporal_iou", "mse": "mse"}
VARIANCE_KEYS = {"motion_iou": "variance_spatial", "motion_iou_weighted": "variance_weighted_spatial",
                 "motion_iou_st": "variance_spatiotemporal_iou_mean", "mse": "variance_mse_mean"}
CLIPS = ("ball_lag", "late_motion", "static", "two_objects")
IOU_ATOL, MSE_RTOL = 1e-12, 1e-6

needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden reference outputs not found at {GOLDEN}")


def _expected() -> dict:
    return json.loads((GOLDEN / "expected.json").read_text())["physics-iq"]


def _tolerance(metric: str, reference) -> float:
    return MSE_RTOL * float(np.max(np.abs(reference))) if metric == "mse" else IOU_ATOL


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory):
    """The model run (predictions vs take 1) and the variance run (take 2 vs take 1), written to a folder."""
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference outputs not found at {GOLDEN}")
    out = tmp_path_factory.mktemp("physics_iq")
    clips = GOLDEN / "clips"
    result, model, variance = score_physics_iq(clips / "preds", clips / "refs", clips / "refs_take2", device="cpu",
                                               run_dir=out)
    return result, model, variance, out


def _pair(run, clip):
    return next(pair for pair in run.pairs if pair.video == clip)


@needs_golden
@pytest.mark.slow
@pytest.mark.parametrize("clip", CLIPS)
def test_clip_values_match_physics_iq(golden_runs, clip):
    _, model, variance, _ = golden_runs
    expected = _expected()[clip]
    for run, keys, reference in ((model, CLIP_KEYS, expected), (variance, VARIANCE_KEYS,
                                                                expected["physical_variance_vs_take2"])):
        pair = _pair(run, clip)
        assert pair.ok, pair.error
        for metric, key in keys.items():
            assert_parity(f"physics-iq {metric}", pair.values[metric], reference[key],
                          _tolerance(metric, reference[key]))


@needs_golden
@pytest.mark.slow
@pytest.mark.parametrize("clip", CLIPS)
def test_per_frame_lists_and_window_match_physics_iq(golden_runs, clip):
    _, model, _, _ = golden_runs
    expected = _expected()[clip]
    pair = _pair(model, clip)
    for metric, key in (("motion_iou_st", "spatiotemporal_iou"), ("mse", "mse")):
        rows = pair.per_frame[metric]
        # Only the first 5 s (150 frames at the clip's 30 fps) have rows: late_motion's 210 frames give 150.
        assert len(rows) == expected["frames"] == min(150, pair.frames)
        assert [horizon for horizon, _, _ in rows] == list(range(1, len(rows) + 1))
        reference = expected["per_frame"][key]
        assert_parity(f"physics-iq per-frame {metric}", [value for _, _, value in rows], reference,
                      _tolerance(metric, reference))


@needs_golden
@pytest.mark.slow
def test_physics_iq_score_matches_calculate_iq_score(golden_runs):
    result, model, variance, out = golden_runs
    expected = _expected()["_iq_score_set"]
    assert result["physics_iq_score"] == expected["physics_iq_score"] == 77.93
    assert result["physical_variance_all_metrics"] == expected["physical_variance_all_metrics"] == 2.6306
    assert result["clips"] == 4 and result["missing"] == []
    # The run folders written beside the score give the same score back (per_frame.csv holds exact reprs).
    assert physics_iq_score(out / "model", out / "variance") == result
    assert json.loads((out / "physics_iq.json").read_text())["physics_iq_score"] == 77.93
    # The take-2 = take-1 layout: every variance IoU is 1 and the MSE 0, so all-metrics variance is 3.
    params = {name: dict(values, fps=None) for name, values in PHYSICS_IQ.items()}
    same = score(GOLDEN / "clips" / "refs", GOLDEN / "clips" / "refs", list(params), params=params, device="cpu")
    repeated = physics_iq_score(model, same)
    assert repeated["physics_iq_score"] == expected["physics_iq_score_take2_equals_take1"] == 68.38
    assert repeated["physical_variance_all_metrics"] == expected["physical_variance_all_metrics_take2_equals_take1"]


@needs_golden
@pytest.mark.slow
def test_score_refuses_runs_scored_under_other_settings(golden_runs):
    _, model, _, _ = golden_runs
    params = {name: dict(values, roundtrip="none") if name != "mse" else values for name, values in PHYSICS_IQ.items()}
    plain = score(GOLDEN / "clips" / "refs_take2", GOLDEN / "clips" / "refs", list(params), params=params,
                  device="cpu")
    with pytest.raises(UsageError, match=r"motion_iou\.roundtrip = 'none', the physics-iq profile sets 'mp4v'"):
        physics_iq_score(model, plain)
    # Without the round trip the masks' edges differ after the 1/4 resize: the convention is not a no-op.
    assert abs(_pair(plain, "ball_lag").values["motion_iou_st"]
               - _expected()["ball_lag"]["physical_variance_vs_take2"]["variance_spatiotemporal_iou_mean"]) > 1e-3


@needs_golden
@pytest.mark.parametrize("clip", ["ball_lag", "two_objects"])
def test_mp4v_round_trip_equals_opencv_videowriter(clip, tmp_path):
    """Masks through PyAV's mpeg4 with OpenCV's settings decode to exactly what cv2.VideoWriter + VideoCapture
    give (Physics-IQ's own round trip), frame by frame."""
    from foresight_eval.metrics.motion import motion_masks

    frames = np.stack(list(VideoReader(GOLDEN / "clips" / "refs" / f"{clip}.mp4").frames()))
    masks, _ = motion_masks(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    masks = masks.numpy().astype(np.uint8) * 255
    assert masks.any()
    assert np.array_equal(_opencv_round_trip(masks, 30, tmp_path), Mp4vRoundTrip(128, 96, 30)(masks))


def test_mp4v_round_trip_of_odd_sizes_equals_opencv(tmp_path):
    """OpenCV's writer drops an odd last row and column; ours too, at another frame rate."""
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 47, 61), np.uint8)
    for t, mask in enumerate(masks):
        cv2.circle(mask, (10 + 2 * t, 20 + int(rng.integers(-2, 3))), 7, 255, -1)
    decoded = Mp4vRoundTrip(61, 47, 24)(masks)
    assert decoded.shape == (20, 46, 60)
    assert np.array_equal(_opencv_round_trip(masks, 24, tmp_path), decoded)
    assert not np.isin(decoded, (0, 255)).all()  # lossy: ringing at the edges


def _opencv_round_trip(masks: np.ndarray, fps: int, folder: Path) -> np.ndarray:
    path = str(folder / "masks.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, masks.shape[:0:-1], isColor=False)
    for mask in masks:
        writer.write(mask)
    writer.release()
    capture, decoded = cv2.VideoCapture(path), []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        assert (image == image[:, :, :1]).all()  # B = G = R: one channel holds everything
        decoded.append(image[:, :, 0])
    return np.stack(decoded)


def _batch(horizons, fps=None) -> FrameBatch:
    horizon = torch.tensor(horizons)
    frames = torch.zeros(len(horizons), 3, 4, 4)
    return FrameBatch("clip", frames, frames, horizon, horizon - 1, fps=fps)


def test_window_counts_frames_starting_before_the_limit():
    params = {"window_seconds": 5, "fps": None, "downscale": 1}
    assert window_stop(_batch(range(140, 160), fps=30), params) == 11  # horizons 140..150
    assert window_stop(_batch(range(140, 160), fps=30000 / 1001), params) == 11  # ceil(149.85) = 150
    assert window_stop(_batch(range(110, 130), fps=24), params) == 11  # 120 frames at 24 fps
    assert window_stop(_batch(range(140, 160)), params) == 11  # no frame rate (frame folder, array): 30
    assert window_stop(_batch(range(110, 130), fps=30), {**params, "fps": 24}) == 11  # the parameter wins
    assert window_stop(_batch(range(140, 160), fps=30), {**params, "window_seconds": None}) == 20
    # a decimal window is taken as written: 0.2 s at 10 fps is 2 frames (the float 0.2 is a hair above 0.2)
    assert window_stop(_batch(range(1, 6), fps=10), {**params, "window_seconds": 0.2}) == 2
    assert window_stop(_batch(range(1, 6), fps=10), {**params, "window_seconds": 0.3}) == 3


def test_a_window_is_a_batch_of_its_own():
    """What a windowed metric hands per_frame: the first frames, whose shared work is shared by the metrics
    with the same window and never answers for the whole batch."""
    batch = _batch(range(1, 6), fps=24)
    assert batch.head(5) is batch
    head = batch.head(2)
    assert head.horizon.tolist() == [1, 2] and head.frame_index.tolist() == [0, 1] and len(head.ref) == 2
    assert (head.video, head.fps) == (batch.video, batch.fps)
    assert batch.head(2).shared("work", object) is head.shared("work", object)
    assert batch.shared("work", object) is not head.shared("work", object)
    assert reference_sha256(head) == tensor_sha256(batch.ref[:2]) != reference_sha256(batch)


def test_window_uses_each_clips_own_frame_rate(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (130, 24, 32, 3), dtype=np.uint8)
    for folder in ("preds", "refs"):
        write_video(tmp_path / folder / "video24.mp4", frames, fps=24)
        np.save(tmp_path / folder / "array.npy", frames)
    assert VideoReader(tmp_path / "refs" / "video24.mp4").fps == 24
    run = score(tmp_path / "preds", tmp_path / "refs", ["mse"], params={"mse": {"window_seconds": 5}}, device="cpu")
    rows = {pair.video: len(pair.per_frame["mse"]) for pair in run.pairs}
    assert rows == {"video24": 120, "array": 130}  # 5 s at 24 fps; the array falls back to 30 fps (150 > 130)
    run = score(tmp_path / "preds", tmp_path / "refs", ["mse"], params={"mse": {"window_seconds": 2}},
                device="cpu", options=ScoreOptions(context=10))
    assert {pair.video: len(pair.per_frame["mse"]) for pair in run.pairs} == {"video24": 48, "array": 60}


def test_quarter_resolution_mse_is_of_8_bit_opencv_resized_frames(rng):
    pred, ref = (rng.integers(0, 256, (3, 24, 32, 3), dtype=np.uint8) for _ in range(2))
    as_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    batch = FrameBatch("clip", as_tensor(pred), as_tensor(ref), torch.arange(1, 4), torch.arange(3))
    ours = create("mse", downscale=4).per_frame(batch)
    small = [np.stack([cv2.resize(f, (8, 6)) for f in x]).astype(np.float64) / 255 for x in (pred, ref)]
    assert_parity("mse downscale=4 vs cv2.resize", ours, ((small[0] - small[1]) ** 2).mean(axis=(1, 2, 3)), 1e-15)


@pytest.mark.parametrize("params, message", [
    ({"roundtrip": "h264"}, "roundtrip must be one of"),
    ({"downscale": 0}, "downscale must be an integer >= 1"),
    ({"downscale": 2.5}, "downscale must be a whole number"),
    ({"window_seconds": -1}, "window_seconds must be a positive number"),
    ({"fps": 0}, "fps must be a positive number"),
])
def test_bad_pipeline_parameters_are_refused(params, message):
    with pytest.raises(UsageError, match=message):
        create("motion_iou", **params)


def _terms(spatial, weighted, st, mse):
    return ClipTerms(spatial, weighted, tuple(st), tuple(mse))


def test_iq_score_by_hand():
    """Two clips of different lengths: model terms are means over clips, variance terms over all frames."""
    model = {"a": _terms(0.5, 0.4, [0.2, 0.4], [0.01, 0.03]), "b": _terms(0.7, 0.6, [0.6] * 4, [0.02] * 4)}
    variance = {"a": _terms(0.8, 0.9, [0.5, 0.7], [0.001, 0.002]), "b": _terms(0.9, 0.7, [0.8] * 4, [0.0] * 4)}
    result = iq_score(model, variance)
    st, spatial, weighted, mse = (0.3 + 0.6) / 2, 0.6, 0.5, (0.02 + 0.02) / 2
    var_st, var_spatial, var_weighted = round((0.5 + 0.7 + 3.2) / 6, 4), 0.85, 0.8
    var_mse = round(0.003 / 6, 4)
    expected = 100 * ((st / var_st + spatial / var_spatial + weighted / var_weighted) / 3 - (mse - var_mse))
    assert result["physics_iq_score"] == round(expected, 2)
    assert result["physical_variance_all_metrics"] == round(var_st + var_spatial + var_weighted - var_mse, 4)
    assert result["physical_variance"] == {"spatial_iou": 0.85, "weighted_spatial_iou": 0.8,
                                           "spatiotemporal_iou": var_st, "mse": var_mse}


def test_iq_score_rounds_per_frame_values_clips_and_refuses_zero_variance():
    # Per-frame values are rounded to 4 decimals first, as upstream reads them back from its CSV.
    tiny = {"a": _terms(1.0, 1.0, [1.0], [0.00004])}
    assert iq_score(tiny, tiny)["terms"]["mse"] == 0.0
    perfect = {"a": _terms(1.0, 1.0, [1.0], [0.0])}
    half = {"a": _terms(0.5, 0.5, [0.5], [0.0])}
    assert iq_score(perfect, half)["physics_iq_score"] == 100.0  # better than the physical variance: capped
    disjoint = {"a": _terms(0.0, 0.0, [0.0], [0.01])}
    result = iq_score(perfect, disjoint)
    assert result["physics_iq_score"] is None and "physical variance of" in result["reason"]
    with pytest.raises(UsageError, match="same, non-empty set of clips"):
        iq_score(perfect, {"b": perfect["a"]})


def test_categories_from_physics_iq_descriptions(tmp_path):
    csv = tmp_path / "descriptions.csv"
    csv.write_text("scenario,description,category,generated_video_name\n"
                   "0001_perspective-left_take-1_x.mp4,\"A, b\",Solid Mechanics,0001_perspective-left_x.mp4\n"
                   "0002_perspective-left_take-1_y.mp4,c,Optics,0002_perspective-left_y.mp4\n")
    assert load_categories(csv) == {"0001_perspective-left_x": "Solid Mechanics", "0002_perspective-left_y": "Optics"}
    (tmp_path / "bad.csv").write_text("name,kind\na,b\n")
    with pytest.raises(UsageError, match="needs a 'category' column"):
        load_categories(tmp_path / "bad.csv")


@needs_golden
@pytest.mark.slow
def test_physics_iq_command_with_categories(tmp_path):
    """The command on a two-clip subset: one category per clip, each scored on its own clip."""
    for folder in ("preds", "refs", "refs_take2"):
        for clip in ("static", "ball_lag"):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"{clip}.mp4").write_bytes((GOLDEN / "clips" / folder / f"{clip}.mp4").read_bytes())
    (tmp_path / "categories.csv").write_text("clip,category\nstatic.mp4,Statics\nball_lag,Motion\n")
    result = CliRunner().invoke(main, ["physics-iq", str(tmp_path / "preds"), str(tmp_path / "refs"), "--ref-take2",
                                       str(tmp_path / "refs_take2"), "--categories", str(tmp_path / "categories.csv"),
                                       "--device", "cpu", "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == json.loads((tmp_path / "run" / "physics_iq.json").read_text())
    assert set(summary["categories"]) == {"Statics", "Motion"} and summary["uncategorised"] == []
    static = summary["categories"]["Statics"]
    assert static["clips"] == 1 and static["terms"]["spatial_iou"] == 1.0
    # static: every IoU is 1 on both sides, so the score is 100 less the MSE gap, in percent
    mse_gap = static["terms"]["mse"] - static["physical_variance"]["mse"]
    assert static["physics_iq_score"] == round(100 * (1 - mse_gap), 2)
    assert (tmp_path / "run" / "model" / "summary.json").is_file()
    assert (tmp_path / "run" / "variance" / "per_frame.csv").is_file()
    missing = CliRunner().invoke(main, ["physics-iq", str(tmp_path / "preds"), str(tmp_path / "refs"),
                                        "--ref-take2", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2


def test_profile_yaml_names_metrics_and_parameters_that_exist():
    profile = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    assert profile["name"] == "physics-iq"
    assert set(profile) == {"name", "description", "reference", "metrics", "params", "options"}
    assert "e457754" in profile["reference"] and profile["options"] == {}
    assert set(profile["params"]) <= set(profile["metrics"])
    for name in profile["metrics"]:
        params = profile["params"].get(name, {})
        assert set(params) <= set(get_metric_class(name).defaults), name
        create(name, **params)  # every value is accepted
    assert profile["params"] == PHYSICS_IQ  # the settings the parity tests above run under
    assert profile["description"].strip()


@needs_golden
@pytest.mark.slow
def test_clips_failed_in_either_run_are_left_out_and_listed(golden_runs):
    import copy

    from foresight_eval.results import fail_pair

    _, model, variance, _ = golden_runs
    broken = copy.deepcopy(variance)
    fail_pair(_pair(broken, "two_objects"), "decoding failed")
    result = physics_iq_score(model, broken)
    assert result["missing"] == ["two_objects"] and result["clips"] == 3
    subset = [clip for clip in CLIPS if clip != "two_objects"]
    terms = [{clip: _clip_terms(run, clip) for clip in subset} for run in (model, variance)]
    assert result["physics_iq_score"] == iq_score(*terms)["physics_iq_score"] != 77.93


def _clip_terms(run, clip) -> ClipTerms:
    pair = _pair(run, clip)
    return ClipTerms(pair.values["motion_iou"], pair.values["motion_iou_weighted"],
                     tuple(v for _, _, v in pair.per_frame["motion_iou_st"]), tuple(v for _, _, v in pair.per_frame["mse"]))
