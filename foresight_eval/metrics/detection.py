"""COCO detection mAP of detections on predicted frames, through pycocotools itself.

The reference annotations are the ground truth and every scored frame (after ``--context``) of every
successfully scored clip is one COCO image; ``--pred-detections`` holds the detector's output on the
predicted frames (COCO results format). ``COCOeval`` (iouType ``bbox``, area ``all``, at most
``max_dets`` detections per image, default 100, as ``params.maxDets``: any value >= 1 is honoured)
runs once over the whole prediction set and once per horizon, so:

* ``map50``: AP at IoU 0.5 (``COCOeval.stats[1]``);
* ``map50_95``: AP averaged over IoU 0.50:0.05:0.95 (``COCOeval.stats[0]``, "COCO mAP").

Both are run-level (``granularity="set"``): the summary's ``set`` holds ``value`` (the headline),
``per_horizon`` and ``per_category`` AP. AP is averaged over categories that have ground truth in the
evaluated frames (-1 entries are left out, as COCO does); a frame set without ground truth gives NaN.
Crowd annotations (``iscrowd: 1``) are ignore regions and boxes partly outside the frame or of zero
size count as given, all inside COCOeval itself (tests/test_detection_map.py: parity with pycocotools
and faster-coco-eval).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from foresight_eval.errors import MetricUnavailable, UsageError
from foresight_eval.io.annotations import Detections, ReferenceAnnotations
from foresight_eval.metrics.base import FrameBatch, FrameBatchMetric, MetricInfo, RunContext
from foresight_eval.metrics.registry import register


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress on stdout


def coco_ground_truth(annotations: ReferenceAnnotations) -> COCO:
    gt = COCO()
    gt.dataset = annotations.coco_dataset
    with _quiet():
        gt.createIndex()
    return gt


def coco_results(gt: COCO, entries: list[dict[str, Any]]) -> COCO:
    """``gt.loadRes`` of the detections (copied: loadRes edits them); an empty COCO when there are none,
    which loadRes cannot take."""
    if entries:
        with _quiet():
            return gt.loadRes([dict(entry) for entry in entries])
    empty = COCO()
    empty.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]), "annotations": []}
    with _quiet():
        empty.createIndex()
    return empty


def coco_precision(gt: COCO, dt: COCO, image_ids: list[int], max_dets: int = 100) -> tuple[np.ndarray, COCOeval]:
    """COCOeval's accumulated precision array [T, R, K, A, M] over ``image_ids`` (bbox), M = 1: ``max_dets``.

    COCOeval matches each image's detections greedily in score order, so evaluating ``max_dets`` alone
    gives its entry of a [1, 10, 100] evaluation, and the last M entry is always the one asked for."""
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.imgIds = sorted(image_ids)
    evaluator.params.maxDets = [max_dets]
    with _quiet():
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"], evaluator


def average_precision(precision: np.ndarray, iou_index: slice, category_index: int | slice = slice(None)) -> float:
    """Mean precision over the valid (> -1) entries: COCOeval.summarize's rule (area all, the one maxDets)."""
    values = precision[iou_index, :, category_index, 0, -1]
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


class _CocoMAP(FrameBatchMetric):
    iou_index: ClassVar[slice]
    defaults = {"max_dets": 100}

    def __init__(self, **params: Any):
        super().__init__(**params)
        max_dets = self.params["max_dets"]
        if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 1:
            raise UsageError(f"{self.info.name}.max_dets must be an integer >= 1, got {max_dets!r}")

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.annotations: ReferenceAnnotations = context.resources.get("annotations")
        self.detections: Detections = context.resources.get("detections")
        if self.annotations is None:
            raise MetricUnavailable("needs --ref-annotations (ground-truth boxes of the reference frames)")
        if self.detections is None:
            raise MetricUnavailable("needs --pred-detections (detections on the predicted frames, COCO results)")

    def reset(self) -> None:
        self._clip_images: dict[int, int] = {}

    def update(self, batch: FrameBatch) -> None:
        size = tuple(batch.ref.shape[-2:])
        for frame, horizon in zip(batch.frame_index.tolist(), batch.horizon.tolist()):
            self._clip_images[self.annotations.image_id(batch.video, frame, size)] = horizon
        return None

    def compute(self) -> list[list[int]]:
        # The clip's part: [image id, horizon] of each scored frame. The engine keeps it only for clips
        # scored to the end, so the frames of a clip that failed midway never join the evaluated set.
        return [[image_id, horizon] for image_id, horizon in self._clip_images.items()]

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        thresholds = np.linspace(0.5, 0.95, 10)[self.iou_index]
        described["params"].update({"iou_type": "bbox", "area": "all",
                                    "iou_thresholds": [round(float(t), 2) for t in np.atleast_1d(thresholds)]})
        return described

    def compute_set(self, parts: list[list[list[int]]]) -> dict[str, Any]:
        images = {image_id: horizon for part in parts for image_id, horizon in part}
        gt = coco_ground_truth(self.annotations)
        dt = coco_results(gt, self.detections.entries)
        if not images:
            return {"value": math.nan, "n_images": 0, "per_horizon": [], "per_category": {}}
        max_dets = self.params["max_dets"]
        precision, evaluator = coco_precision(gt, dt, list(images), max_dets)
        category_ids = evaluator.params.catIds
        by_horizon: dict[int, list[int]] = defaultdict(list)
        for image_id, horizon in images.items():
            by_horizon[horizon].append(image_id)
        per_horizon = []
        for horizon in sorted(by_horizon):
            horizon_precision, _ = coco_precision(gt, dt, by_horizon[horizon], max_dets)
            per_horizon.append({"horizon": horizon, "value": average_precision(horizon_precision, self.iou_index),
                                "n_images": len(by_horizon[horizon])})
        return {
            "value": average_precision(precision, self.iou_index),
            "n_images": len(images),
            "n_detections": sum(len(dt.getAnnIds(imgIds=[i])) for i in images),
            "per_horizon": per_horizon,
            "per_category": {self.annotations.categories[cid]: average_precision(precision, self.iou_index, k)
                             for k, cid in enumerate(category_ids)},
        }


@register
class MAP50(_CocoMAP):
    info = MetricInfo(
        name="map50",
        description="COCO box AP at IoU 0.5 of detections on the predicted frames (pycocotools), over the "
        "prediction set; per horizon and per category in the run summary",
        direction="higher",
        granularity="set",
        needs=("annotations", "detections"),
    )
    iou_index = slice(0, 1)


@register
class MAP50_95(_CocoMAP):
    info = MetricInfo(
        name="map50_95",
        description="COCO box AP averaged over IoU 0.50:0.05:0.95 of detections on the predicted frames "
        "(pycocotools), over the prediction set; per horizon and per category in the run summary",
        direction="higher",
        granularity="set",
        needs=("annotations", "detections"),
    )
    iou_index = slice(None)
