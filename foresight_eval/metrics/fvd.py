"""Fréchet video distance (Unterthiner et al., "Towards Accurate Generative Models of Video: A New
Metric & Challenges", 2018) with the original network: the TF-Hub Kinetics-400 I3D, ported to PyTorch
(:mod:`foresight_eval.metrics.i3d`), weights from ``foresight-eval weights fetch i3d-k400``.

As the TF FVD (google-research ``frechet_video_distance``): each window of 16 frames is resized to
224x224 with TF1 bilinear resizing, scaled to [-1, 1], and its 400 Kinetics logits are the features;
the Fréchet distance between the Gaussians of the prediction and reference windows is computed in
float64. The network runs in float32 (no reduced precision: FVD moves with small feature changes).
Protocol, defaults and how other tools differ: docs/fvd.md.
"""

from __future__ import annotations

import torch

from foresight_eval.i3d_weights import I3DKinetics400
from foresight_eval.metrics.base import MetricInfo, RunContext
from foresight_eval.metrics.i3d import load_i3d
from foresight_eval.metrics.registry import register
from foresight_eval.metrics.set_features import WindowFeatureMetric
from foresight_eval.weights import register_weights

I3D_WEIGHTS = register_weights(I3DKinetics400())


@register
class FVD(WindowFeatureMetric):
    info = MetricInfo(
        name="fvd",
        description="Fréchet video distance over the prediction set vs the reference set: Kinetics-400 I3D "
        "logits of 16-frame windows at 224x224 (TF FVD protocol), float64 Fréchet distance, bootstrap CI "
        "over clips; protocol fingerprint in the run summary",
        direction="lower",
        granularity="set",
        needs=("weights",),
        default=False,
    )
    resolution = 224
    extractor = "i3d-k400 (TF-Hub i3d-kinetics-400/1) logits, 400-d, mean over time"

    def load_extractor(self, context: RunContext) -> None:
        self.weights_file = I3D_WEIGHTS.locate(context.weights_dir)
        self.network = load_i3d(self.weights_file, self.device)

    def extract(self, windows: torch.Tensor) -> torch.Tensor:
        # (n, T, 3, H, W) in [0, 1] -> (n, 3, T, H, W) in [-1, 1], as the TF FVD's 2 * x / 255 - 1
        video = windows.to(self.device, torch.float32).permute(0, 2, 1, 3, 4) * 2.0 - 1.0
        return self.network(video)
