"""LPIPS's backbones built without torchvision (foresight_eval.metrics.lpips_net): the same state-dict keys
and the same tapped outputs as torchvision's ``features`` stacks (seeded random weights), and scoring LPIPS
imports neither torchvision nor the lpips package. The whole metric against the lpips package is in
tests/test_pixel_parity.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from foresight_eval.metrics.lpips_net import TAPS, TappedFeatures
from tests.conftest import REPO
from tests.parity import assert_parity


def torchvision_features(net: str) -> torch.nn.Sequential:
    import torchvision

    torch.manual_seed(0)
    if net == "vgg":  # the features alone: the whole VGG16 draws 138 M random classifier weights
        from torchvision.models.vgg import cfgs, make_layers

        return make_layers(cfgs["D"])
    return {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1}[net]().features


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_backbone_matches_torchvision_features(net):
    reference = torchvision_features(net).eval()
    ours = TappedFeatures(net).eval()
    theirs_state = {f"features.{key}": value for key, value in reference.state_dict().items()}
    # torchvision's keys, exactly: its checkpoint files load unchanged (the layers past the last tap hold none)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs_state.items()}
    ours.load_state_dict(theirs_state, strict=True)
    images = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        taps = ours(images)
        expected, x = [], images
        for index, layer in enumerate(reference, start=1):
            x = layer(x)
            if index in TAPS[net]:
                expected.append(x.clone())
    assert [tap.shape for tap in taps] == [tap.shape for tap in expected] and len(taps) == len(TAPS[net])
    assert_parity(f"lpips backbone net={net} taps vs torchvision features", torch.cat([t.flatten() for t in taps]),
                  torch.cat([t.flatten() for t in expected]), atol=0.0)


def test_scoring_lpips_imports_neither_torchvision_nor_lpips(lpips_weights):
    """torchvision's import pulls in torch._dynamo: 1.2-1.3 s of every run's set-up here, more per torchrun rank."""
    code = ("import sys, torch\n"
            "from foresight_eval import RunContext\n"
            "from foresight_eval.metrics.registry import prepare_metrics\n"
            "(metric,), _ = prepare_metrics(['lpips'], {}, RunContext())\n"
            "from foresight_eval.metrics.perceptual import lpips_distance\n"
            "frames = torch.rand(2, 3, 64, 64)\n"
            "assert (lpips_distance(metric.model, frames, frames.flip(0)) > 0).all()\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'lpips') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_backbone_file_in_torchs_legacy_format_loads_the_same(lpips_weights, tmp_path):
    """Files in torch's zip format (torchvision's current checkpoints) are memory-mapped; a legacy-format file,
    which cannot be, is read whole: the same model."""
    from foresight_eval.metrics.perceptual import LPIPS_BACKBONES, load_lpips, lpips_distance

    mapped = LPIPS_BACKBONES["alex"].locate()
    legacy = tmp_path / mapped.name
    torch.save(torch.load(mapped, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    frames = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        values = [lpips_distance(load_lpips("alex", path), frames[:2], frames[2:]) for path in (mapped, legacy)]
    assert torch.equal(*values) and (values[0] > 0).all()
