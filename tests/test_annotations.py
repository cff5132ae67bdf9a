"""Reference annotations, detections and predicted masks: the two annotation formats agree, and every
malformed file gives an error naming the file and the entry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from foresight_eval.errors import UsageError
from foresight_eval.io.annotations import (
    AnnotationError, load_detections, load_pred_masks, load_reference_annotations, load_spatial_resources,
)


@pytest.fixture(scope="module")
def coco_refs(fixtures_dir):
    return load_reference_annotations(fixtures_dir / "coco" / "refs.json")


def _coco(**changes) -> dict:
    data = {
        "images": [{"id": 1, "video": "clip00", "frame": 0, "width": 128, "height": 96}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 1, "name": "circle"}],
    }
    data.update(changes)
    return data


def _write(path, payload) -> str:
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def test_coco_and_sidecar_annotations_agree(coco_refs, fixtures_dir):
    sidecars = load_reference_annotations(fixtures_dir / "refs")
    assert coco_refs.categories == sidecars.categories == {1: "circle", 2: "square", 3: "triangle"}
    assert set(coco_refs.image_ids) == set(sidecars.image_ids)
    assert len(coco_refs.image_ids) == 6 * 20
    for key, image_id in coco_refs.image_ids.items():
        ours, theirs = coco_refs.objects[image_id], sidecars.objects[sidecars.image_ids[key]]
        assert [(o.category_id, o.bbox) for o in ours] == [(o.category_id, o.bbox) for o in theirs]
    assert coco_refs.has_masks and sidecars.has_masks
    areas = [a["area"] for a in coco_refs.coco_dataset["annotations"]]
    assert areas == [a["area"] for a in sidecars.coco_dataset["annotations"]]


@pytest.mark.parametrize("changes, message", [
    ({"annotations": [{"image_id": 1, "category_id": 1, "bbox": [130, 10, 20, 20]}]},
     r"annotations\[0\]: bbox \[130, 10, 20, 20\] lies wholly outside the 128x96 frame"),
    ({"annotations": [{"image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2]}]},
     r"annotations\[0\]: unknown category_id 7"),
    ({"annotations": [{"image_id": 5, "category_id": 1, "bbox": [1, 1, 2, 2]}]}, r"annotations\[0\]: unknown image_id 5"),
    ({"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, -1, 2]}]}, r"negative width or height"),
    ({"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 2}]},
     r"annotations\[0\]: iscrowd must be 0 or 1, got 2"),
    ({"annotations": [{"image_id": 1, "category_id": 1}]}, r"annotations\[0\]: missing field 'bbox'"),
    ({"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2],
                       "segmentation": {"size": [10, 10], "counts": "x"}}]},
     r"segmentation size \[10, 10\] is not the frame's \[96, 128\]"),
    ({"images": [{"id": 1, "frame": 0, "width": 128, "height": 96}]}, r"images\[0\]: missing field 'video'"),
    ({"images": [{"id": 1, "video": "clip00", "frame": -1, "width": 128, "height": 96}]},
     r"images\[0\]: frame must be an integer >= 0"),
    ({"images": [{"id": 1, "video": "clip00", "frame": 0, "width": 128, "height": 96},
                 {"id": 2, "video": "clip00", "frame": 0, "width": 128, "height": 96}]},
     r"images\[1\]: video 'clip00' frame 0 is also images\[0\]"),
    ({"categories": []}, r"categories: expected a non-empty list"),
])
def test_bad_coco_annotations(tmp_path, changes, message):
    path = _write(tmp_path / "refs.json", _coco(**changes))
    with pytest.raises(AnnotationError, match=message) as info:
        load_reference_annotations(path)
    assert str(info.value).startswith(path)


def test_unreadable_annotation_file(tmp_path):
    with pytest.raises(AnnotationError, match="not readable JSON"):
        load_reference_annotations(_write(tmp_path / "refs.json", "{not json"))


def test_bad_sidecars(tmp_path, fixtures_dir):
    sidecar = json.loads((fixtures_dir / "refs" / "clip00.boxes.json").read_text())
    sidecar["frames"][3]["objects"][0]["bbox"] = [-15, 0, 10, 10]
    _write(tmp_path / "clip00.boxes.json", sidecar)
    with pytest.raises(AnnotationError, match=r"clip00.boxes.json: frames\[3\].objects\[0\]: bbox .* outside"):
        load_reference_annotations(tmp_path)
    sidecar = json.loads((fixtures_dir / "refs" / "clip00.boxes.json").read_text())
    sidecar["video"] = "other"
    _write(tmp_path / "clip00.boxes.json", sidecar)
    with pytest.raises(AnnotationError, match=r"'other' is not the clip key 'clip00'"):
        load_reference_annotations(tmp_path)
    sidecar["video"] = "clip00"
    sidecar["frames"][0]["objects"][0]["category"] = "hexagon"
    _write(tmp_path / "clip00.boxes.json", sidecar)
    with pytest.raises(AnnotationError, match=r"frames\[0\].objects\[0\]: unknown category_id 'hexagon'"):
        load_reference_annotations(tmp_path)
    sidecar["frames"][0]["objects"][0]["category"] = "circle"
    _write(tmp_path / "clip00.boxes.json", sidecar)
    np.savez(tmp_path / "clip00.masks.npz", masks=np.zeros((20, 3, 10, 10), bool), object_ids=np.arange(1, 4))
    with pytest.raises(AnnotationError, match=r"clip00.masks.npz: masks are 10x10, clip00.boxes.json says 128x96"):
        load_reference_annotations(tmp_path)
    with pytest.raises(AnnotationError, match="no .boxes.json sidecar"):
        (tmp_path / "empty").mkdir()
        load_reference_annotations(tmp_path / "empty")


def test_detections_by_image_id_or_video_and_frame(tmp_path, coco_refs):
    entries = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
               {"video": "clip05", "frame": 19, "category_id": 3, "bbox": [0, 0, 128, 96], "score": 0.1}]
    detections = load_detections(_write(tmp_path / "dets.json", entries), coco_refs)
    assert [e["image_id"] for e in detections.entries] == [1, coco_refs.image_ids[("clip05", 19)]]
    assert detections.by_image[1][0].bbox == (1.0, 2.0, 3.0, 4.0)
    assert not detections.has_masks


@pytest.mark.parametrize("entry, message", [
    ({"image_id": 999, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 1}, r"\[0\]: unknown image_id 999"),
    ({"video": "nope", "frame": 0, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 1}, r"\[0\]: unknown video 'nope'"),
    ({"video": "clip00", "frame": 20, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 1},
     r"\[0\]: unannotated frame of video 'clip00' frame 20"),
    ({"image_id": 1, "category_id": 4, "bbox": [1, 1, 2, 2], "score": 1}, r"\[0\]: unknown category_id 4"),
    ({"image_id": 1, "category_id": 1, "bbox": [100, 100, 40, 20], "score": 1},
     r"\[0\]: bbox \[100, 100, 40, 20\] lies wholly outside the 128x96 frame"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": "high"}, r"\[0\]: score must be a finite number"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}, r"\[0\]: missing field 'score'"),
    ({"category_id": 1, "bbox": [1, 1, 2, 2], "score": 1}, r"\[0\]: needs image_id, or video and frame"),
])
def test_bad_detections(tmp_path, coco_refs, entry, message):
    path = _write(tmp_path / "dets.json", [entry])
    with pytest.raises(AnnotationError, match=message) as info:
        load_detections(path, coco_refs)
    assert str(info.value).startswith(path)


def test_bad_detection_files(tmp_path, coco_refs):
    with pytest.raises(AnnotationError, match="expected a JSON list of detections"):
        load_detections(_write(tmp_path / "dets.json", {"annotations": []}), coco_refs)
    no_masks = _write(tmp_path / "boxes_only.json", [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 1}])
    with pytest.raises(AnnotationError, match="needs a 'segmentation' in every entry"):
        load_pred_masks(no_masks, coco_refs)
    with pytest.raises(UsageError, match="pred_detections needs ref_annotations"):
        load_spatial_resources(None, no_masks)


def test_cli_reports_bad_inputs_with_exit_2(tmp_path, fixtures_dir):
    runner = CliRunner()
    preds, refs = str(fixtures_dir / "preds" / "blur_mild"), str(fixtures_dir / "refs")
    bad = _write(tmp_path / "dets.json", [{"image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2], "score": 1}])
    result = runner.invoke(main, ["score", preds, refs, "--ref-annotations", str(fixtures_dir / "coco" / "refs.json"),
                                  "--pred-detections", bad])
    assert result.exit_code == 2
    assert f"{bad}: [0]: unknown category_id 9" in result.output.replace("\n", "")
    result = runner.invoke(main, ["score", preds, refs, "--metrics", "box_iou"])
    assert result.exit_code == 2
    assert "box_iou" in result.output and "needs --ref-annotations" in result.output


def test_crowd_regions_boxes_partly_outside_and_zero_size_boxes_are_read(tmp_path):
    """As COCOeval reads them: crowd kept (iscrowd 1 in the COCO dataset), boxes kept as given."""
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 1},
                   {"id": 2, "image_id": 1, "category_id": 1, "bbox": [120, 80, 20, 20]},
                   {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 7]}]
    refs = load_reference_annotations(_write(tmp_path / "refs.json", _coco(annotations=annotations)))
    assert [obj.iscrowd for obj in refs.objects[1]] == [True, False, False]
    assert [a["iscrowd"] for a in refs.coco_dataset["annotations"]] == [1, 0, 0]
    assert [a["area"] for a in refs.coco_dataset["annotations"]] == [400, 400, 0]
    assert refs.objects[1][1].bbox == (120.0, 80.0, 20.0, 20.0)


def test_box_iou_leaves_crowd_out_and_zero_size_boxes_have_iou_zero():
    import torch

    from foresight_eval.io.annotations import FrameObject
    from foresight_eval.metrics.objects import box_iou_matrix

    zero = torch.tensor([[5.0, 5.0, 0.0, 7.0]])
    assert box_iou_matrix(zero, zero).tolist() == [[0.0]]  # torchvision alone gives 0/0 = NaN
    assert box_iou_matrix(zero, torch.tensor([[0.0, 0.0, 20.0, 20.0]])).tolist() == [[0.0]]
    assert FrameObject(category_id=1, bbox=(0, 0, 1, 1)).iscrowd is False


def test_box_iou_metric_does_not_match_crowd_regions(tmp_path):
    import torch

    from foresight_eval.metrics.base import FrameBatch, RunContext
    from foresight_eval.metrics.registry import create

    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                   {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 40, 30, 30], "iscrowd": 1}]
    refs = _write(tmp_path / "refs.json", _coco(annotations=annotations))
    dets = _write(tmp_path / "dets.json", [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}])
    metric = create("box_iou")
    metric.setup(RunContext(resources=load_spatial_resources(refs, dets)))
    metric.reset()
    frames = torch.zeros(1, 3, 96, 128)
    batch = FrameBatch("clip00", frames, frames, torch.tensor([1]), torch.tensor([0]))
    # The crowd region is neither a target nor a miss: the one object is matched exactly.
    assert metric.update(batch).tolist() == [1.0]
