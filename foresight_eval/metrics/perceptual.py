"""LPIPS (Zhang et al. 2018, version 0.1), scoring as the ``lpips`` package does with its own weights.

The linear calibration layers are the ones shipped inside the ``lpips`` wheel. The backbone's
ImageNet weights are torchvision's standard checkpoint, found offline by :mod:`foresight_eval.weights`
and loaded with ``weights_only=True``: the same file the ``lpips`` package itself would load from
``$TORCH_HOME/hub/checkpoints``, so scores agree with it exactly. The networks are built by
:mod:`foresight_eval.metrics.lpips_net`, which imports neither ``lpips`` nor torchvision (seconds of start-up).
"""

from __future__ import annotations

import functools
import importlib.util
import zipfile
from pathlib import Path
from typing import Any

import torch

from foresight_eval.errors import MetricUnavailable
from foresight_eval.metrics.base import FrameBatch, FrameMetric, MetricInfo, RunContext
from foresight_eval.metrics.graphs import GraphedFunction
from foresight_eval.metrics.lpips_net import LPIPSNetwork, ScalingLayer
from foresight_eval.metrics.registry import register
from foresight_eval.weights import TorchvisionCheckpoint, register_weights, weight_sha256

LPIPS_BACKBONES = {
    "alex": register_weights(TorchvisionCheckpoint("lpips-alex", "lpips (net=alex)", "AlexNet_Weights.IMAGENET1K_V1",
                                                   "alexnet-owt-7be5be79.pth")),
    "vgg": register_weights(TorchvisionCheckpoint("lpips-vgg", "lpips (net=vgg)", "VGG16_Weights.IMAGENET1K_V1",
                                                  "vgg16-397923af.pth")),
    "squeeze": register_weights(TorchvisionCheckpoint(
        "lpips-squeeze", "lpips (net=squeeze)", "SqueezeNet1_1_Weights.IMAGENET1K_V1", "squeezenet1_1-b8a52dc0.pth")),
}


def lpips_linear_file(net: str) -> Path:
    """The calibrated linear layers shipped in the ``lpips`` wheel (``lpips/weights/v0.1/<net>.pth``), found
    without importing the package (its import imports torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("the lpips package (its calibrated linear layers) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / f"{net}.pth"


def load_lpips(net: str, backbone_file: Path) -> torch.nn.Module:
    """An LPIPS model (:class:`~foresight_eval.metrics.lpips_net.LPIPSNetwork`) whose backbone holds the
    weights in ``backbone_file`` (torchvision's format) and whose linear layers are the calibrated ones
    shipped inside the ``lpips`` wheel.

    The model is built on the meta device and every tensor then assigned from its file: building it on the
    CPU would first fill the backbone with random numbers (0.3-0.7 s of every run's start, all overwritten).
    The backbone's file is memory-mapped and only its ``features`` tensors copied out: reading the whole
    file took 0.16-0.24 s of each run's set-up (2-core machine), mapping it and copying those 0.02-0.05 s.
    Strict loading checks that the files fill every parameter and buffer."""
    with torch.device("meta"):
        model = LPIPSNetwork(net)
    # Memory-mapped: only the tensors LPIPS uses are read (AlexNet's file is 233 MiB, 10 of them features);
    # a file in torch's legacy (pre-1.6, not zip) format cannot be mapped and is read whole.
    backbone = torch.load(backbone_file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(backbone_file))
    linear = torch.load(lpips_linear_file(net), map_location="cpu", weights_only=True)
    # The backbone's keys are torchvision's (`net.features.3.weight` is `features.3.weight`); the package's
    # linear layers are 1x1 convolutions (`lin2.model.1.weight`, shape (1, C, 1, 1)): their C weights.
    names = model.state_dict().keys()
    try:
        state = {**{f"scaling_layer.{key}": value for key, value in ScalingLayer().state_dict().items()},
                 **{name: backbone[name.removeprefix("net.")].clone() for name in names if name.startswith("net.")},
                 **{f"lins.{i}": linear[f"lin{i}.model.1.weight"].flatten() for i in range(len(model.lins))}}
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
    # Every step in place on a tensor made here (the concatenated copy, the backbone's outputs): the package's
    # arithmetic, bit for bit, without the (2B, C, H, W) temporaries each out-of-place step allocates and
    # fills: LPIPS 19% faster on the CPU (16 pairs of 640x360: 1.33 -> 1.08 s).
    inputs = model.scaling_layer.normalise_(torch.cat([pred, ref]))
    total = torch.zeros(pred.shape[0], dtype=pred.dtype, device=pred.device)
    # cache_enabled=False: a CUDA graph cannot hold autocast's cached weight casts (they outlive its capture)
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
        layers = model.net(inputs)
    for features, lin in zip(layers, model.lins):
        features = features.float()
        features = features.div_(torch.linalg.vector_norm(features, dim=1, keepdim=True).add_(1e-10))
        pred_features, ref_features = features.chunk(2)
        differences = pred_features.sub_(ref_features).square_()
        total += torch.einsum("bchw,c->b", differences, lin) / features[0, 0].numel()
    return total


def _lpips_of_batch(pred: torch.Tensor, ref: torch.Tensor, *, model: torch.nn.Module, precision: str) -> torch.Tensor:
    return lpips_distance(model, pred, ref, precision=precision)


# About 60 kernels per batch, launched in 6 ms of the host's time per batch of 16 pairs of 640x360 on the H200's
# host, where the GPU needs 2 ms for them: replayed from a CUDA graph once a batch shape repeats
# (metrics/graphs.py). A graph reads the model's weights where they were at its capture: the model is part of
# the key, and one model per weight file and device serves the process (_lpips_model).
_lpips_graphed = GraphedFunction(_lpips_of_batch)


@functools.lru_cache(maxsize=4)
def _lpips_model(net: str, backbone_file: Path, sha256: str, device: torch.device) -> torch.nn.Module:
    """The LPIPS model of these weights on ``device``, loaded once per process (the file's digest in the key:
    a file rewritten in place is loaded again). Never modified after loading: shared by runs."""
    return load_lpips(net, backbone_file).to(device)


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
        self.backbone_sha256 = weight_sha256(self.backbone_file, context.resources.get("cache_dir"))
        self.model = _lpips_model(self.params["net"], self.backbone_file, self.backbone_sha256, context.device)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if getattr(self, "backbone_file", None) is not None:
            described["weights"] = {"backbone": self.backbone_file.name, "sha256": self.backbone_sha256}
        return described

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        return _lpips_graphed(batch.pred, batch.ref, model=self.model, precision=self.params["precision"])
