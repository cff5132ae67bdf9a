"""Shared test fixtures: the bundled fixture tree, random frames, and seeded random weights written in
the libraries' standard formats and places (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.parity import PARITY_RESULTS

# Where no GPU compiles them, Triton's kernels (metrics/flow_kernels.py) run in its interpreter, on CPU tensors in
# NumPy: the kernels' own code, tested on the CPU. Triton reads this when it is first imported (its library
# functions are kernels too, decorated then), so here, before any test imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty foresight-eval cache folder ($FORESIGHT_CACHE): scoring caches the reference
    side by default, and a test must neither write into the user's cache nor read what another test left."""
    from foresight_eval.feature_cache import CACHE_ENV

    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def benchmark_module(monkeypatch):
    """``benchmark_module(NAME)``: the script benchmarks/NAME.py as a module, imported as the scripts import each
    other (benchmarks/ first on ``sys.path``, for this test only)."""
    import importlib

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def write_random_torchvision_checkpoint(torch_home: Path, arch: str, seed: int = 0) -> Path:
    """Seeded random weights for a torchvision classifier, saved under torchvision's own file name in
    ``$TORCH_HOME/hub/checkpoints``: exactly where and how torchvision caches the real ones."""
    import os

    import torchvision

    builders = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights"),
                "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}
    builder, enum = builders[arch]
    torch.manual_seed(seed)
    model = getattr(torchvision.models, builder)()
    filename = os.path.basename(getattr(torchvision.models, enum).IMAGENET1K_V1.url)
    path = torch_home / "hub" / "checkpoints" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory) -> Path:
    """A temporary $TORCH_HOME holding seeded random LPIPS backbones (alex and squeeze)."""
    home = tmp_path_factory.mktemp("torch_home")
    for arch in ("alex", "squeeze"):
        write_random_torchvision_checkpoint(home, arch)
    return home


@pytest.fixture
def lpips_weights(torch_home, monkeypatch) -> Path:
    """Point torch's cache at the temporary $TORCH_HOME for this test."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


def pytest_terminal_summary(terminalreporter) -> None:
    if not PARITY_RESULTS:
        return
    terminalreporter.section("parity against reference implementations (max abs error / tolerance)")
    for name, (error, atol) in sorted(PARITY_RESULTS.items()):
        terminalreporter.write_line(f"{name:<60} {error:.3e} / {atol:.0e}")
