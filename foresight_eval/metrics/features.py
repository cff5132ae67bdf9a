"""Feature consistency: how stable a predicted video's DINOv2 features are over time (needs weights).

Each horizon frame goes through the model folder's own image processor (``AutoImageProcessor``; for
DINOv2: bicubic resize of the short side to 256, centre crop 224, ImageNet mean/std; frames are already
in [0, 1], so it runs with ``do_rescale=False``, batched on the scoring device) and ``Dinov2Model``; the
frame's feature is ``pooler_output``, the final-layer-normed CLS token (VBench uses the CLS token of
DINO ViT-B/16 the same way). With c(a, b) = max(0, cosine(a, b)), as VBench clips it:

* ``pairs=both`` (default, VBench's "subject consistency"): the value at horizon t >= 2 is
  (c(f_{t-1}, f_t) + c(f_1, f_t)) / 2, the clip's value the mean over t;
* ``pairs=consecutive``: c(f_{t-1}, f_t); ``pairs=first``: c(f_1, f_t).

f_1 is the first *horizon* frame: context frames never reach the metrics. ``feature_consistency_delta``
is the prediction's value minus the reference video's own, frame by frame.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from foresight_eval.io.files import sha256_file
from foresight_eval.metrics.base import FrameBatch, MetricInfo, RunContext
from foresight_eval.metrics.registry import register
from foresight_eval.metrics.temporal import ConsecutivePairMetric
from foresight_eval.weights import HuggingFaceModel, register_weights

DINOV2_MODELS = {
    variant: register_weights(HuggingFaceModel(
        f"dinov2-{variant}", f"feature_consistency (model={variant})", f"facebook/dinov2-{variant}", f"dinov2-{variant}"
    ))
    for variant in ("small", "base", "large")
}
PAIRINGS = ("both", "consecutive", "first")


@lru_cache(maxsize=2)  # feature_consistency and its delta share one loaded model
def load_feature_model(folder: Path, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """A model and its image processor from a local ``save_pretrained`` folder; never touches the network."""
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as transformers_logging

    bar_was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # the CLI draws its own progress on stderr
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    finally:
        if bar_was_on:
            transformers_logging.enable_progress_bar()
    return model.to(device).eval().requires_grad_(False), processor


def frame_features(model: torch.nn.Module, processor: Any, frames: torch.Tensor) -> torch.Tensor:
    """One feature vector per [0, 1] frame: (N, 3, H, W) in, (N, D) out (the model's ``pooler_output``)."""
    inputs = processor(images=frames, do_rescale=False, return_tensors="pt", device=frames.device)
    return model(pixel_values=inputs["pixel_values"].to(frames.device)).pooler_output


def feature_consistency(
    earlier: torch.Tensor, later: torch.Tensor, first: torch.Tensor, pairs: str = "both"
) -> torch.Tensor:
    """VBench-style consistency of each frame's features ``later`` (N, D) with its predecessor's ``earlier``
    (N, D) and with the first frame's ``first`` (1, D); cosines clipped at 0. (N,) out."""
    consecutive = F.cosine_similarity(earlier, later, dim=1).clamp_min(0)
    to_first = F.cosine_similarity(first.expand_as(later), later, dim=1).clamp_min(0)
    return {"both": (consecutive + to_first) / 2, "consecutive": consecutive, "first": to_first}[pairs]


class _FeatureConsistency(ConsecutivePairMetric):
    defaults = {"model": "small", "pairs": "both"}
    choices = {"model": tuple(DINOV2_MODELS), "pairs": PAIRINGS}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.model_folder = DINOV2_MODELS[self.params["model"]].locate_folder(context.weights_dir)
        self.model, self.processor = load_feature_model(self.model_folder, context.device)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["params"]["feature"] = "pooler_output (final-layer-normed CLS token)"
        if getattr(self, "model_folder", None) is not None:
            weights = self.model_folder / "model.safetensors"
            described["weights"] = {"model": DINOV2_MODELS[self.params["model"]].repo_id, "file": weights.name,
                                    "sha256": sha256_file(weights)}
        return described

    def reset(self) -> None:
        super().reset()
        self._first: dict[str, torch.Tensor] = {}

    def _role_values(self, batch: FrameBatch, role: str) -> torch.Tensor:
        # One model pass per batch and role, shared by feature_consistency and its delta.
        key = ("dinov2 features", self.model_folder, role)
        features = batch.shared(key, lambda: frame_features(self.model, self.processor, getattr(batch, role)))
        first = self._first.setdefault(role, features[:1])
        earlier, later = self._pairs(role, features)
        return feature_consistency(earlier, later, first, self.params["pairs"])


@register
class FeatureConsistency(_FeatureConsistency):
    info = MetricInfo(
        name="feature_consistency",
        description="DINOv2 feature consistency of the predicted horizon frames (VBench subject consistency: "
        "mean of the clipped cosine to the previous frame and to the first frame)",
        direction="higher",
        target="reference",
        needs=("weights",),
    )


@register
class FeatureConsistencyDelta(_FeatureConsistency):
    info = MetricInfo(
        name="feature_consistency_delta",
        description="feature_consistency of the prediction minus that of the reference, frame by frame",
        direction="higher",
        target=0.0,
        needs=("weights",),
    )
    versus_reference = True
