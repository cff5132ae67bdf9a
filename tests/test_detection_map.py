"""COCO mAP: perfect detections give 1, values equal pycocotools run directly on the same files and
agree with faster-coco-eval, and bigger shifts give lower mAP."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from foresight_eval import ScoreOptions, score
from foresight_eval.errors import UsageError
from foresight_eval.io.annotations import load_spatial_resources
from foresight_eval.metrics.base import RunContext
from foresight_eval.metrics.registry import create
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


# --- max_dets, crowd regions, boxes partly outside the frame, zero-size boxes ---------------------------

def _hard_coco_set(fixtures_dir, tmp_path):
    """The fixture set with what COCOeval evaluates and we used to refuse: crowd regions (with RLE masks),
    reference and detected boxes partly outside the frame, zero-width and zero-height boxes, and several
    detections per image so that max_dets 1 and 10 cut."""
    rng = np.random.default_rng(3)
    gt = json.loads((fixtures_dir / "coco" / "refs.json").read_text())
    detections = json.loads((fixtures_dir / "coco" / "detections" / "shift_strong.json").read_text())
    next_id = max(a["id"] for a in gt["annotations"]) + 1
    for image in gt["images"][::3]:
        mask = np.zeros((96, 128), np.uint8, order="F")
        x, y = int(rng.integers(0, 90)), int(rng.integers(0, 60))
        mask[y:y + 30, x:x + 36] = 1
        rle = mask_utils.encode(mask)
        gt["annotations"].append({"id": next_id, "image_id": image["id"], "category_id": 1, "iscrowd": 1,
                                  "bbox": [x, y, 36, 30], "area": 36 * 30,
                                  "segmentation": {"size": [96, 128], "counts": rle["counts"].decode()}})
        next_id += 1
        # Detections inside the crowd region: ignored by COCOeval, not false positives.
        detections.append({"image_id": image["id"], "category_id": 1, "bbox": [x + 2, y + 2, 30, 25],
                           "score": float(rng.uniform(0.2, 0.9))})
    for image in gt["images"][1::4]:
        gt["annotations"].append({"id": next_id, "image_id": image["id"], "category_id": 2, "bbox": [118, 40, 20, 20],
                                  "area": 400, "iscrowd": 0})
        gt["annotations"].append({"id": next_id + 1, "image_id": image["id"], "category_id": 3, "bbox": [30, 30, 0, 12],
                                  "area": 0, "iscrowd": 0})
        next_id += 2
        detections.append({"image_id": image["id"], "category_id": 2, "bbox": [120, 41, 20, 20], "score": 0.7})
        detections.append({"image_id": image["id"], "category_id": 3, "bbox": [30, 30, 0, 12], "score": 0.6})
        detections.append({"image_id": image["id"], "category_id": 2, "bbox": [-6, 80, 14, 20], "score": 0.3})
        detections.append({"image_id": image["id"], "category_id": 1, "bbox": [10, 10, 8, 0], "score": 0.95})
    for det in detections[::2]:  # near-duplicates with lower scores: more than one detection per image
        detections.append({**det, "bbox": [v + float(rng.normal(0, 1.5)) for v in det["bbox"][:2]] + det["bbox"][2:],
                           "score": det["score"] * 0.8})
    gt_file, dt_file = tmp_path / "refs.json", tmp_path / "dets.json"
    gt_file.write_text(json.dumps(gt))
    dt_file.write_text(json.dumps(detections))
    return gt_file, dt_file


def _our_set_value(name, gt_file, dt_file, **params):
    metric = create(name, **params)
    metric.setup(RunContext(resources=load_spatial_resources(gt_file, dt_file)))
    images = json.loads(gt_file.read_text())["images"]
    return metric.compute_set([[[image["id"], image["frame"] + 1] for image in images]])["value"]


def _reference_ap(evaluator, iou_index, max_dets_index):
    """AP as COCOeval.summarize computes it, at any maxDets entry of the accumulated precision."""
    values = evaluator.eval["precision"][iou_index, :, :, 0, max_dets_index]
    return float(values[values > -1].mean())


def test_map_on_crowd_outside_and_zero_size_boxes_and_max_dets_equals_pycocotools(fixtures_dir, tmp_path):
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    gt_file, dt_file = _hard_coco_set(fixtures_dir, tmp_path)
    evaluators = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for tool, (coco_class, eval_class) in {"pycocotools": (COCO, COCOeval),
                                               "faster-coco-eval": (FasterCOCO, COCOeval_faster)}.items():
            gt = coco_class(str(gt_file))
            evaluator = eval_class(gt, gt.loadRes(str(dt_file)), "bbox")
            evaluator.params.maxDets = [1, 10, 100]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            evaluators[tool] = evaluator
    for index, max_dets in enumerate((1, 10, 100)):
        for name, iou_index in (("map50", slice(0, 1)), ("map50_95", slice(None))):
            ours = _our_set_value(name, gt_file, dt_file, max_dets=max_dets)
            assert_parity(f"{name} (crowd, outside, zero-size, max_dets 1/10/100) vs pycocotools", ours,
                          _reference_ap(evaluators["pycocotools"], iou_index, index), atol=1e-12)
            assert_parity(f"{name} (crowd, outside, zero-size, max_dets 1/10/100) vs faster-coco-eval", ours,
                          _reference_ap(evaluators["faster-coco-eval"], iou_index, index), atol=1e-6)
    # The headline at 100 is the summary's own number, and max_dets 1 really cuts.
    assert _our_set_value("map50_95", gt_file, dt_file) == pytest.approx(evaluators["pycocotools"].stats[0], abs=1e-12)
    assert _our_set_value("map50", gt_file, dt_file, max_dets=1) < _our_set_value("map50", gt_file, dt_file)


def test_max_dets_must_be_a_positive_integer():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(UsageError, match=r"map50.max_dets must be (an integer >= 1|a whole number)"):
            create("map50", max_dets=bad)
