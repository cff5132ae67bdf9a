"""No work done twice: a metric and its delta (and the three motion IoUs) compute their shared part once per
batch, and with a cache folder the reference side is computed once across runs (a corrupt entry is recomputed)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fixtures import synthetic
from foresight_eval import ScoreOptions, score
from foresight_eval.metrics import edges, motion, temporal

FRAMES, BATCH = 9, 4  # three batches: pairs bridge batch boundaries, masks carry their background across them
COUNTED = {"ssim": (temporal, "ssim"),  # on the CPU tc takes ssim over the sequence (on a GPU ssim_moments)
            "difference": (temporal, "frame_difference"),
           "flow": (temporal, "optical_flow"), "masks": (motion, "motion_masks"), "edges": (edges, "edge_maps"),
           "counts": (motion, "_running_counts_graphed"),  # the cumulative IoUs' per-pixel mask counts
           "candidates": (edges, "_canny_candidates_graphed")}  # edge_f1's torch path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared_work")
    ref = synthetic.camera_like_clip(3, FRAMES, height=48, width=64)
    pred = synthetic.add_noise(synthetic.blur(ref, 1.0), 0.03, seed=3)
    for side, frames in (("preds", pred), ("refs", ref)):
        (root / side).mkdir()
        np.save(root / side / "clip.npy", synthetic.to_uint8(frames))
    return root


@pytest.fixture
def calls(monkeypatch) -> Counter:
    counter: Counter = Counter()
    for label, (module, name) in COUNTED.items():
        original = getattr(module, name)

        def counting(*args, _original=original, _label=label, **kwargs):
            counter[_label] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    return counter


def _run(clips, metrics, calls, resources=None, **kwargs):
    """A run without cache unless ``resources`` names a cache folder (a run caches by default)."""
    calls.clear()
    run = score(clips / "preds", clips / "refs", metrics, options=ScoreOptions(batch_size=BATCH), device="cpu",
                resources=resources or {"cache_dir": None}, **kwargs)
    assert all(pair.ok for pair in run.pairs), [pair.error for pair in run.pairs]
    return run, Counter(calls)


@pytest.mark.parametrize("metric, delta, part", [("tc", "tc_delta", "ssim"), ("flicker", "flicker_delta", "difference"),
                                                 ("warp_error", "warp_error_delta", "flow")])
def test_a_metric_and_its_delta_compute_the_shared_part_once(clips, calls, metric, delta, part):
    _, alone = _run(clips, [metric], calls)
    _, delta_alone = _run(clips, [delta], calls)
    _, both = _run(clips, [metric, delta], calls)
    assert alone[part] > 0 and delta_alone[part] == 2 * alone[part]  # the delta needs the reference's too
    assert both[part] == delta_alone[part]


def test_frozen_shares_the_frame_differences_of_flicker_and_flicker_delta(clips, calls):
    """frozen thresholds both sides' frame differences: the ones flicker_delta computes, not its own."""
    _, delta = _run(clips, ["flicker_delta"], calls)
    frozen_run, frozen = _run(clips, ["frozen"], calls)
    all_run, together = _run(clips, ["flicker", "flicker_delta", "frozen"], calls)
    assert delta["difference"] > 0 and frozen["difference"] == delta["difference"] == together["difference"]
    assert frozen_run.pairs[0].values["frozen"] == all_run.pairs[0].values["frozen"]


def test_the_three_motion_ious_compute_the_masks_and_their_counts_once(clips, calls):
    alone, one = _run(clips, ["motion_iou"], calls)
    weighted, _ = _run(clips, ["motion_iou_weighted"], calls)
    together, three = _run(clips, ["motion_iou", "motion_iou_st", "motion_iou_weighted"], calls)
    assert one["masks"] == one["counts"] == 2 * -(-FRAMES // BATCH)  # per batch, one call per side
    assert three["masks"] == one["masks"] and three["counts"] == one["counts"]
    for name, run in (("motion_iou", alone), ("motion_iou_weighted", weighted)):  # sharing changes no value
        assert together.pairs[0].values[name] == run.pairs[0].values[name]
        assert together.pairs[0].per_frame[name] == run.pairs[0].per_frame[name]


SUITE = ["tc_delta", "flicker_delta", "warp_error_delta", "motion_iou", "motion_iou_st", "edge_f1"]


def _values(run):
    pair = run.pairs[0]
    return pair.values, pair.per_frame


def test_reference_side_is_cached_across_runs(clips, calls, tmp_path):
    uncached, first_calls = _run(clips, SUITE, calls)
    assert not (tmp_path / "cache").exists()
    cache = {"cache_dir": tmp_path / "cache"}
    first, writing = _run(clips, SUITE, calls, resources=cache)
    assert writing == first_calls
    second, reading = _run(clips, SUITE, calls, resources=cache)
    # Second run: only the prediction side is computed (the masks' running counts, not cached: on both sides).
    assert reading == Counter({part: count if part == "counts" else count // 2 for part, count in first_calls.items()})
    assert _values(second) == _values(first) == _values(uncached)

    entries = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) >= 3 * 5  # three batches of each of five cached computations
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # truncated: unreadable, so recomputed and rewritten
    repaired, repairing = _run(clips, SUITE, calls, resources=cache)
    assert sum(repairing.values()) > sum(reading.values())
    assert _values(repaired) == _values(first)
    assert len(entries[0].read_bytes()) > 40


def test_the_gpu_paths_through_the_engine_agree_with_the_cpu_paths(clips, calls, tmp_path):
    # On a GPU, detector=auto / backend=auto pick the torch paths; forced here on the CPU, cache included.
    metrics = ["edge_f1", "warp_error", "warp_error_delta"]
    forced = {"edge_f1": {"detector": "torch"}, "warp_error": {"backend": "torch"},
              "warp_error_delta": {"backend": "torch"}}
    default, _ = _run(clips, metrics, calls)
    batches = -(-FRAMES // BATCH)
    for resources, candidates in (({}, 2 * batches), ({"cache_dir": tmp_path / "cache"}, 2 * batches),
                                  ({"cache_dir": tmp_path / "cache"}, batches)):  # warm: the prediction's only
        torch_paths, counted = _run(clips, metrics, calls, params=forced, resources=resources)
        assert counted["flow"] == 0  # OpenCV's flow never ran
        assert counted["candidates"] == candidates
        ours, reference = torch_paths.pairs[0].values, default.pairs[0].values
        assert ours["edge_f1"] == reference["edge_f1"]
        for name in ("warp_error", "warp_error_delta"):
            assert abs(ours[name] - reference[name]) <= 2e-6
    # The other precision is another computation: the float32 entries are not read for it.
    float64 = {**forced, "edge_f1": {"detector": "torch", "canny_dtype": "float64"}}
    _, counted = _run(clips, metrics, calls, params=float64, resources={"cache_dir": tmp_path / "cache"})
    assert counted["candidates"] == 2 * batches
