"""LPIPS's networks (Zhang et al. 2018, version 0.1) built in plain torch, without importing torchvision.

The ``lpips`` package builds its backbone through ``torchvision.models``, whose import pulls in
``torch._dynamo``: 1.2-1.3 s of every run's set-up on the 2-core machine, seconds per rank under `torchrun`.
The backbones here are the convolution, ReLU and max-pooling layers of torchvision's AlexNet, VGG16 and
SqueezeNet 1.1 ``features`` stacks (the part LPIPS taps), under the same state-dict keys
(``features.3.weight``), so torchvision's own checkpoint files load unchanged. tests/test_lpips_net.py
holds each to torchvision's ``features`` and the whole metric to the ``lpips`` package.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, cat, channels_last, empty, nn, tensor

# Per backbone: the channels of each tapped layer, and the index after which each tap is taken (the ends
# of the ``lpips`` package's slices, e.g. relu1 of AlexNet is the output of features[1]).
TAPS = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30), "squeeze": (2, 5, 8, 10, 11, 12, 13)}
TAP_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512),
                "squeeze": (64, 128, 256, 384, 384, 512, 512)}
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)  # torchvision "D"


class Fire(nn.Module):
    """SqueezeNet's fire module (Iandola et al. 2016), with torchvision's attribute names."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1)


def backbone_layers(net: str) -> list[nn.Module]:
    """The layers of torchvision's ``features`` for ``net`` up to LPIPS's last tap (the in-place ReLUs are
    safe: every tap is followed by a pooling or a convolution, which leaves its input alone)."""
    relu = partial(nn.ReLU, inplace=True)
    if net == "alex":
        return [nn.Conv2d(3, 64, 11, stride=4, padding=2), relu(), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), relu(), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), relu(), nn.Conv2d(384, 256, 3, padding=1), relu(),
                nn.Conv2d(256, 256, 3, padding=1), relu()]
    if net == "vgg":
        layers: list[nn.Module] = []
        channels = 3
        for width in VGG16_LAYERS:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), relu()]
                channels = width
        return layers
    if net == "squeeze":
        pool = partial(nn.MaxPool2d, 3, 2, ceil_mode=True)
        return [nn.Conv2d(3, 64, 3, stride=2), relu(), pool(), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(), Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256)]
    raise ValueError(f"unknown LPIPS backbone {net!r}")


class TappedFeatures(nn.Module):
    """torchvision's ``features`` stack (as ``self.features``, so its state-dict keys are torchvision's),
    returning the outputs after each layer index in ``taps``."""

    def __init__(self, net: str):
        super().__init__()
        self.features = nn.Sequential(*backbone_layers(net))
        self.taps = TAPS[net]

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for index, layer in enumerate(self.features, start=1):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class ScalingLayer(nn.Module):
    """LPIPS's input normalisation: [0, 1] images to [-1, 1], then (x - shift) / scale per channel (its constants)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def normalise_(self, images: Tensor) -> Tensor:
        """``images`` (B, 3, H, W) in [0, 1], normalised in place (the package's arithmetic, step by step) and
        returned channels-last, the layout the backbone runs fastest in."""
        normalised = images.mul_(2).sub_(1).sub_(self.shift).div_(self.scale)
        return normalised.contiguous(memory_format=channels_last)


class LPIPSNetwork(nn.Module):
    """The modules of one LPIPS v0.1 model: ``scaling_layer``, the tapped backbone ``net`` and ``lins``, the
    per-channel weights of each tap's linear (1x1 convolution, no bias) layer. Scoring is
    :func:`foresight_eval.metrics.perceptual.lpips_distance`."""

    def __init__(self, net: str):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = TappedFeatures(net)
        self.lins = nn.ParameterList([nn.Parameter(empty(channels)) for channels in TAP_CHANNELS[net]])
