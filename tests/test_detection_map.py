"""COCO mAP: perfect detections give 1, values equal pycocotools run directly on the same files and
agree with faster-coco-eval, and bigger shifts give lower mAP."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from foresight_eval import ScoreOptions, score
from foresight_eval.io.annotations import load_spatial_resources
from tests.parity import assert_parity

MAPS = ["map50", "map50_95"]


def _score_maps(fixtures_dir, detections, preds="blur_mild", context=0):
    resources = load_spatial_resources(fixtures_dir / "coco" / "refs.json", detections)
    run = score(fixtures_dir / "preds" / preds, fixtures_dir / "refs", MAPS, device="cpu",
                options=ScoreOptions(context=context), resources=resources)
    assert not run.failed
    return run.metrics


def _pycocotools_stats(gt_file, dt_file, image_ids=None):
    """AP@[.5:.95] and AP@.5 from pycocotools' own loaders and summary, nothing of ours in between."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(str(dt_file)), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[0], evaluator.stats[1]


def test_identical_detections_give_one(fixtures_dir, tmp_path):
    gt = json.loads((fixtures_dir / "coco" / "refs.json").read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    path = tmp_path / "perfect.json"
    path.write_text(json.dumps(perfect))
    metrics = _score_maps(fixtures_dir, path)
    for name in MAPS:
        assert metrics[name].mean == 1.0
        assert metrics[name].set_values["per_category"] == {"circle": 1.0, "square": 1.0, "triangle": 1.0}
        assert metrics[name].set_values["n_images"] == 120


def test_map_equals_pycocotools_on_the_same_files(fixtures_dir):
    gt_file, dt_file = fixtures_dir / "coco" / "refs.json", fixtures_dir / "coco" / "detections" / "shift_strong.json"
    ap, ap50 = _pycocotools_stats(gt_file, dt_file)
    metrics = _score_maps(fixtures_dir, dt_file, "shift_strong")
    assert 0 < ap < ap50 < 1
    assert_parity("map50_95 vs pycocotools COCOeval.stats[0]", metrics["map50_95"].mean, ap, atol=1e-12)
    assert_parity("map50 vs pycocotools COCOeval.stats[1]", metrics["map50"].mean, ap50, atol=1e-12)


def test_per_horizon_map_equals_pycocotools_on_that_horizon(fixtures_dir):
    gt_file, dt_file = fixtures_dir / "coco" / "refs.json", fixtures_dir / "coco" / "detections" / "shift_strong.json"
    metrics = _score_maps(fixtures_dir, dt_file, "shift_strong", context=4)
    per_horizon = metrics["map50_95"].set_values["per_horizon"]
    assert [row["horizon"] for row in per_horizon] == list(range(1, 17))
    assert metrics["map50_95"].set_values["n_images"] == 6 * 16
    # Horizon 3 is frame 6 of each clip (context 4: horizon = frame - 4 + 1).
    gt = json.loads(gt_file.read_text())
    image_ids = [image["id"] for image in gt["images"] if image["frame"] == 6]
    ap, _ = _pycocotools_stats(gt_file, dt_file, image_ids)
    assert_parity("map50_95 at one horizon vs pycocotools on that horizon's frames", per_horizon[2]["value"], ap,
                  atol=1e-12)


@pytest.mark.parametrize("prediction_set", ["shift_mild", "shift_strong", "dropped_frame"])
def test_map_agrees_with_faster_coco_eval(fixtures_dir, prediction_set):
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    gt_file = fixtures_dir / "coco" / "refs.json"
    dt_file = fixtures_dir / "coco" / "detections" / f"{prediction_set}.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = FasterCOCO(str(gt_file))
        evaluator = COCOeval_faster(gt, gt.loadRes(str(dt_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = _score_maps(fixtures_dir, dt_file, prediction_set)
    assert_parity("map50_95 vs faster-coco-eval", metrics["map50_95"].mean, evaluator.stats[0], atol=1e-6)
    assert_parity("map50 vs faster-coco-eval", metrics["map50"].mean, evaluator.stats[1], atol=1e-6)


def test_bigger_shift_gives_lower_map(fixtures_dir):
    mild = _score_maps(fixtures_dir, fixtures_dir / "coco" / "detections" / "shift_mild.json", "shift_mild", 4)
    strong = _score_maps(fixtures_dir, fixtures_dir / "coco" / "detections" / "shift_strong.json", "shift_strong", 4)
    blur = _score_maps(fixtures_dir, fixtures_dir / "coco" / "detections" / "blur_mild.json", "blur_mild", 4)
    assert blur["map50_95"].mean == 1.0  # blur leaves the objects where they are
    assert blur["map50_95"].mean > mild["map50_95"].mean > strong["map50_95"].mean
    assert mild["map50"].mean >= strong["map50"].mean
