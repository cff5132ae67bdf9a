"""The Kinetics-400 Inception-v1 I3D of the original FVD, as a PyTorch module.

Architecture of Carreira & Zisserman, "Quo Vadis, Action Recognition?" (CVPR 2017), as released by
DeepMind (``kinetics-i3d/i3d.py``, Sonnet v1) and exported to TF-Hub as ``i3d-kinetics-400/1``: the
network the FVD of Unterthiner et al. ("Towards Accurate Generative Models of Video", 2018) is defined
with. Details that matter for exact logits and that a plain PyTorch port gets wrong:

* TensorFlow ``SAME`` padding for every convolution and max-pool: ``pad = max((ceil(n/s)-1)*s + k - n, 0)``
  split with the extra element AFTER (asymmetric); max-pool pads with -inf (padding never wins).
* Batch norm (Sonnet v1) has an offset but no scale, epsilon 1e-3, inference statistics.
* The logits: average pool (2, 7, 7) VALID, a 1x1x1 convolution with bias, then the mean over time.

Inputs are (B, 3, T, H, W) float32 in [-1, 1] at 224x224; the output is the (B, 400) logits, the
features the TF FVD uses. The weights are ``i3d_k400.safetensors`` (see :mod:`foresight_eval.i3d_weights`),
in this module's own state-dict names and layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPSILON = 1e-3
NUM_CLASSES = 400

# Inception modules in order: name -> (branch0 1x1, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 1x1),
# preceded by the named max-pool (kernel, stride) where one sits before the module.
INCEPTION = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
POOL_BEFORE = {"Mixed_3b": ((1, 3, 3), (1, 2, 2)), "Mixed_4b": ((3, 3, 3), (2, 2, 2)), "Mixed_5b": ((2, 2, 2), (2, 2, 2))}


def same_padding(sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF ``SAME`` padding of a (T, H, W) input in ``F.pad``'s order (last dimension first): the total
    padding keeps ceil(n / s) outputs; an odd total puts the extra element at the end."""
    pads: list[int] = []
    for n, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    x = F.pad(x, same_padding(tuple(x.shape[2:]), kernel, stride), value=-math.inf)
    return F.max_pool3d(x, kernel, stride)


class Unit3D(nn.Module):
    """Convolution (SAME padding) + Sonnet-v1 batch norm (offset only) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=False)
        self.register_buffer("bn_offset", torch.zeros(out_channels))
        self.register_buffer("bn_mean", torch.zeros(out_channels))
        self.register_buffer("bn_var", torch.ones(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride)))
        shape = (1, -1, 1, 1, 1)
        x = (x - self.bn_mean.view(shape)) * torch.rsqrt(self.bn_var.view(shape) + BN_EPSILON) + self.bn_offset.view(shape)
        return F.relu(x)


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch0 = Unit3D(in_channels, b0)
        self.branch1 = nn.Sequential(Unit3D(in_channels, b1a), Unit3D(b1a, b1b, (3, 3, 3)))
        self.branch2 = nn.Sequential(Unit3D(in_channels, b2a), Unit3D(b2a, b2b, (3, 3, 3)))
        self.branch3 = Unit3D(in_channels, b3)
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(pooled)], dim=1)


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics-400 logits, averaged over time (the "Logits" endpoint)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        channels = 192
        self.mixed = nn.ModuleDict()
        for name, widths in INCEPTION:
            self.mixed[name] = InceptionModule(channels, widths)
            channels = self.mixed[name].out_channels
        self.logits = nn.Conv3d(channels, num_classes, (1, 1, 1), bias=True)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> (B, num_classes) logits."""
        x = self.Conv3d_1a_7x7(video)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        for name, module in self.mixed.items():
            if name in POOL_BEFORE:
                x = max_pool_same(x, *POOL_BEFORE[name])
            x = module(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID
        return self.logits(x).squeeze(4).squeeze(3).mean(dim=2)


def load_i3d(path: Path, device: torch.device | str = "cpu") -> InceptionI3d:
    """The network with the weights of ``path`` (safetensors only), in float32, in eval mode."""
    from safetensors.torch import load_file

    model = InceptionI3d()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device=device, dtype=torch.float32).eval()
