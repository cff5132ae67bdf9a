"""Object metrics: are the annotated objects where they should be?

Annotation metrics (need ``--ref-annotations``, see :mod:`foresight_eval.io.annotations`)
----------------------------------------------------------------------------------------
Crowd regions (``iscrowd: 1``) are not objects to match: both metrics leave them out.

* ``mask_iou``: reference object masks against predicted masks (``--pred-masks``, or the
  ``segmentation`` of ``--pred-detections``). ``mode=foreground`` (default): IoU of the union of all
  object masks; ``mode=instances``: Hungarian matching of instance masks as for ``box_iou``.
* ``box_iou``: predicted boxes with score >= ``score_threshold`` against reference boxes, matched one
  to one by the Hungarian algorithm on IoU (``scipy.optimize.linear_sum_assignment``; with
  ``class_aware``, boxes of different categories have IoU 0). Every box left without a partner of
  positive IoU, on either side, counts as 0; the frame's value is the mean over matched pairs and
  unmatched boxes. A frame with no box on either side scores 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from foresight_eval.errors import MetricUnavailable
from foresight_eval.io.annotations import ReferenceAnnotations, decode_masks
from foresight_eval.metrics.base import FrameBatch, FrameMetric, MetricInfo, RunContext
from foresight_eval.metrics.motion import binary_iou
from foresight_eval.metrics.registry import register


def box_iou_matrix(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of COCO [x, y, w, h] boxes: (N, 4) and (M, 4) in, (N, M) out (torchvision); a
    zero-area box has IoU 0 with every box, as in COCO (torchvision gives 0/0 for two of them)."""
    # Imported here: torchvision's import pulls in torch._dynamo (1-4 s), which listing the metrics and
    # every run without box IoU would otherwise pay at start-up.
    from torchvision.ops import box_convert, box_iou as torchvision_box_iou

    iou = torchvision_box_iou(box_convert(pred.double(), "xywh", "xyxy"), box_convert(ref.double(), "xywh", "xyxy"))
    return torch.nan_to_num(iou, nan=0.0)


def mask_iou_matrix(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of masks: (N, H, W) and (M, H, W) bool in, (N, M) out (0 where both are empty)."""
    a, b = pred.flatten(1).double(), ref.flatten(1).double()
    intersection = a @ b.T
    union = a.sum(dim=1)[:, None] + b.sum(dim=1)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def matched_mean_iou(iou: torch.Tensor) -> float:
    """Hungarian one-to-one matching maximising total IoU; the mean over matched pairs of positive IoU
    and every box (either side) left unmatched, which counts 0. Nothing on either side gives 1."""
    n_pred, n_ref = iou.shape
    if n_pred == 0 and n_ref == 0:
        return 1.0
    if n_pred == 0 or n_ref == 0:
        return 0.0
    from scipy.optimize import linear_sum_assignment  # on first use: 0.1-0.2 s of a `score` process's start-up

    matrix = iou.detach().cpu().double().numpy()
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    matched = matrix[rows, cols]
    matched = matched[matched > 0]
    return float(matched.sum() / (n_pred + n_ref - matched.size))


def _require(context: RunContext, name: str, option: str) -> Any:
    resource = context.resources.get(name)
    if resource is None:
        raise MetricUnavailable(f"needs {option}")
    return resource


def _image_ids(annotations: ReferenceAnnotations, batch: FrameBatch) -> list[int]:
    size = tuple(batch.ref.shape[-2:])
    return [annotations.image_id(batch.video, frame, size) for frame in batch.frame_index.tolist()]


@register
class BoxIoU(FrameMetric):
    info = MetricInfo(
        name="box_iou",
        description="Predicted boxes matched one to one to reference boxes (Hungarian on IoU), unmatched boxes "
        "count 0, mean per frame",
        direction="higher",
        needs=("annotations", "detections"),
    )
    defaults = {"score_threshold": 0.5, "class_aware": True}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.annotations = _require(context, "annotations", "--ref-annotations (reference boxes)")
        self.detections = _require(context, "detections", "--pred-detections (boxes detected on the predicted frames)")

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        values = []
        for image_id in _image_ids(self.annotations, batch):
            refs = [obj for obj in self.annotations.objects[image_id] if not obj.iscrowd]
            preds = [obj for obj in self.detections.by_image[image_id] if obj.score >= self.params["score_threshold"]]
            iou = box_iou_matrix(torch.tensor([o.bbox for o in preds]).view(-1, 4),
                                 torch.tensor([o.bbox for o in refs]).view(-1, 4))
            if self.params["class_aware"]:
                same = torch.tensor([[p.category_id == r.category_id for r in refs] for p in preds]).view(iou.shape)
                iou = iou * same
            values.append(matched_mean_iou(iou))
        return torch.tensor(values, dtype=torch.float64)


@register
class MaskIoU(FrameMetric):
    info = MetricInfo(
        name="mask_iou",
        description="IoU of predicted against reference object masks per frame (mode foreground: union of "
        "objects; instances: Hungarian-matched instances), mean over frames",
        direction="higher",
        needs=("annotations", "masks"),
    )
    defaults = {"mode": "foreground", "score_threshold": 0.5}
    choices = {"mode": ("foreground", "instances")}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.annotations = _require(context, "annotations", "--ref-annotations with masks")
        if not self.annotations.has_masks:
            raise MetricUnavailable(f"the reference annotations {self.annotations.source} carry no masks")
        self.pred_masks = context.resources.get("pred_masks")
        if self.pred_masks is None:
            detections = context.resources.get("detections")
            if detections is None or not detections.has_masks:
                raise MetricUnavailable("needs --pred-masks, or --pred-detections with a segmentation per detection")
            self.pred_masks = detections

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        height, width = batch.ref.shape[-2:]
        values = []
        for frame, image_id in zip(batch.frame_index.tolist(), _image_ids(self.annotations, batch)):
            objects = [obj for obj in self.annotations.objects[image_id] if not obj.iscrowd]
            ref_masks = torch.from_numpy(decode_masks(objects, height, width))
            pred_masks = torch.from_numpy(np.asarray(self.pred_masks.frame_masks(
                batch.video, frame, height, width, self.params["score_threshold"])))
            if self.params["mode"] == "foreground":
                values.append(float(binary_iou(pred_masks.any(dim=0)[None], ref_masks.any(dim=0)[None])[0]))
            else:
                values.append(matched_mean_iou(mask_iou_matrix(pred_masks, ref_masks)))
        return torch.tensor(values, dtype=torch.float64)
