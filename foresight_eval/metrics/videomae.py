"""Content-debiased FVD (Ge et al., "On the Content Bias in Fréchet Video Distance", CVPR 2024): the
Fréchet distance of self-supervised video features instead of the Kinetics-supervised I3D logits,
which weigh per-frame appearance over motion.

Features: a VideoMAE encoder (Tong et al. 2022; default ``MCG-NJU/videomae-base``, self-supervised on
Kinetics-400 with no fine-tuning) loaded with ``transformers`` from a local ``save_pretrained`` folder
(``--weights-dir/videomae-base/`` or the Hugging Face cache), run on windows of the model's
``num_frames`` frames resized to its ``image_size`` (antialiased bilinear), normalised with its
processor's mean and std; the feature of a window is the mean over tokens of the last hidden state.
Ge et al.'s own tool defaults to VideoMAE-v2 ViT-g, a checkpoint distributed outside the Hugging Face
hub: values from the two extractors differ, which the protocol fingerprint records.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import torch

from foresight_eval.errors import MetricUnavailable
from foresight_eval.metrics.base import MetricInfo, RunContext
from foresight_eval.metrics.registry import register
from foresight_eval.metrics.set_features import WindowFeatureMetric
from foresight_eval.weights import HuggingFaceModel, register_weights

VIDEOMAE = register_weights(HuggingFaceModel("videomae-base", "fvd_videomae", "MCG-NJU/videomae-base", "videomae-base"))


@register
class VideoMAEFVD(WindowFeatureMetric):
    info = MetricInfo(
        name="fvd_videomae",
        description="Content-debiased FVD (Ge et al. 2024): Fréchet distance of self-supervised VideoMAE "
        "features (mean over tokens) of 16-frame windows, prediction set vs reference set, float64",
        direction="lower",
        granularity="set",
        needs=("weights",),
        default=False,
    )
    resolution = None  # the model's image_size, read from its config in setup
    extractor = "VideoMAE encoder (transformers), mean of the last hidden state over tokens"
    value_range = "[0, 1] normalised with the processor's image_mean / image_std"
    defaults: ClassVar[dict[str, Any]] = {**WindowFeatureMetric.defaults, "resize": "bilinear_antialias"}

    def load_extractor(self, context: RunContext) -> None:
        from transformers import VideoMAEModel

        folder = VIDEOMAE.locate_folder(context.weights_dir)
        self.weights_file = folder / VIDEOMAE.filename
        model = VideoMAEModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        config = model.config
        if self.params["frames"] != config.num_frames:
            raise MetricUnavailable(f"{folder} is a {config.num_frames}-frame model; -p fvd_videomae.frames="
                                    f"{config.num_frames} (got {self.params['frames']})")
        self.resolution = config.image_size
        processor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        shape = (1, 1, 3, 1, 1)
        self.mean = torch.tensor(processor["image_mean"], dtype=torch.float32).view(shape).to(self.device)
        self.std = torch.tensor(processor["image_std"], dtype=torch.float32).view(shape).to(self.device)
        self.network = model.to(self.device, torch.float32).eval().requires_grad_(False)

    def extract(self, windows: torch.Tensor) -> torch.Tensor:
        pixels = (windows.to(self.device, torch.float32) - self.mean) / self.std  # (n, T, 3, H, W)
        return self.network(pixel_values=pixels).last_hidden_state.mean(dim=1)
