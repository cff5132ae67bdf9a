"""LPIPS (Zhang et al. 2018, version 0.1) through the ``lpips`` package.

The linear calibration layers are the ones shipped inside the ``lpips`` wheel. The backbone's
ImageNet weights are torchvision's standard checkpoint, found offline by :mod:`foresight_eval.weights`
and loaded with ``weights_only=True``: the same file the ``lpips`` package itself would load from
``$TORCH_HOME/hub/checkpoints``, so scores agree with it exactly.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from foresight_eval.errors import MetricUnavailable
from foresight_eval.io.files import sha256_file
from foresight_eval.metrics.base import FrameBatch, FrameMetric, MetricInfo, RunContext
from foresight_eval.metrics.registry import register
from foresight_eval.weights import TorchvisionCheckpoint, register_weights

LPIPS_BACKBONES = {
    "alex": register_weights(TorchvisionCheckpoint("lpips-alex", "lpips (net=alex)", "AlexNet_Weights.IMAGENET1K_V1")),
    "vgg": register_weights(TorchvisionCheckpoint("lpips-vgg", "lpips (net=vgg)", "VGG16_Weights.IMAGENET1K_V1")),
    "squeeze": register_weights(
        TorchvisionCheckpoint("lpips-squeeze", "lpips (net=squeeze)", "SqueezeNet1_1_Weights.IMAGENET1K_V1")
    ),
}


def load_lpips(net: str, backbone_file: Path) -> torch.nn.Module:
    """An ``lpips.LPIPS`` model whose backbone holds the weights in ``backbone_file`` (torchvision's format)
    and whose linear layers are the calibrated ones shipped inside the ``lpips`` wheel.

    The model is built on the meta device and every tensor then assigned from its file: building it on the
    CPU would first fill the backbone with random numbers (0.3-0.7 s of every run's start, all overwritten).
    Strict loading checks that the files fill every parameter and buffer."""
    import lpips

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # torchvision's deprecation notes about lpips's `pretrained=` call
        model = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    # Memory-mapped when the file is in torch's zip format: only the tensors used are read (AlexNet's
    # convolutions are 10 MB of the checkpoint's 233 MB; its classifier is not used). Older files load whole.
    backbone = torch.load(backbone_file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(backbone_file))
    linear_file = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"  # shipped in the lpips wheel
    linear = torch.load(linear_file, map_location="cpu", weights_only=True)
    # lpips splits torchvision's `features` into slices that keep the layers' original indices:
    # `net.slice2.3.weight` is torchvision's `features.3.weight`; `lins.i` are the same modules as `lin{i}`.
    names = model.state_dict().keys()
    try:
        state = {**{f"scaling_layer.{key}": value for key, value in lpips.ScalingLayer().state_dict().items()},
                 **{name: backbone[f"features.{name.split('.', 2)[2]}"] for name in names if name.startswith("net.")},
                 **{name: linear[name.replace("lins.", "lin", 1)] for name in names if name.startswith("lin")}}
        model.load_state_dict(state, strict=True, assign=True)
    except (KeyError, RuntimeError) as exc:
        raise MetricUnavailable(f"{backbone_file} does not hold torchvision {net} weights ({exc})") from exc
    return model.eval().requires_grad_(False).to(memory_format=torch.channels_last)


def lpips_distance(model: torch.nn.Module, pred: torch.Tensor, ref: torch.Tensor, *, precision: str = "float32") -> torch.Tensor:
    """LPIPS per frame for [0, 1] frames: (B, 3, H, W) pairs in, (B,) out.

    The same computation as ``lpips.LPIPS.forward`` (inputs scaled to [-1, 1], the package's scaling
    layer, backbone, channel-normalised feature differences, its linear layers, spatial mean), written
    out because the package runs the backbone twice and its 1x1-convolution head is memory-bound on CPU:
    one backbone pass over both inputs in channels-last layout and an einsum head is about 1.4x faster.
    tests/test_pixel_parity.py holds it to the package's own output.

    ``precision="bf16"`` runs the backbone's convolutions under bfloat16 autocast (the normalisation and
    the head stay float32): faster where the CPU has bf16 instructions, within 1e-4 of float32 on the
    test frames (tests/test_lpips_precision.py).
    """
    inputs = model.scaling_layer(torch.cat([pred, ref]) * 2 - 1).contiguous(memory_format=torch.channels_last)
    total = torch.zeros(pred.shape[0], dtype=pred.dtype, device=pred.device)
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        layers = model.net(inputs)
    for features, lin in zip(layers, model.lins):
        features = features.float()
        features = features / (torch.linalg.vector_norm(features, dim=1, keepdim=True) + 1e-10)
        pred_features, ref_features = features.chunk(2)
        weight = lin.model[-1].weight.flatten()
        total += torch.einsum("bchw,c->b", (pred_features - ref_features).square(), weight) / features[0, 0].numel()
    return total


@register
class LPIPS(FrameMetric):
    info = MetricInfo(
        name="lpips",
        description="Learned perceptual image patch similarity (LPIPS v0.1) per frame, mean over frames",
        direction="lower",
        needs=("weights",),
    )
    defaults = {"net": "alex", "version": "0.1", "precision": "float32"}
    choices = {"net": tuple(LPIPS_BACKBONES), "version": ("0.1",), "precision": ("float32", "bf16")}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.backbone_file = LPIPS_BACKBONES[self.params["net"]].locate(context.weights_dir)
        self.model = load_lpips(self.params["net"], self.backbone_file).to(context.device)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if getattr(self, "backbone_file", None) is not None:
            described["weights"] = {"backbone": self.backbone_file.name, "sha256": sha256_file(self.backbone_file)}
        return described

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        return lpips_distance(self.model, batch.pred, batch.ref, precision=self.params["precision"])
