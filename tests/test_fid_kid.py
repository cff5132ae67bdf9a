"""fid and kid against torchmetrics' FrechetInceptionDistance / KernelInceptionDistance on the same frames
and the same seeded random weights, written as torch-fidelity's own weight file in torch's hub cache."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from foresight_eval import score
from foresight_eval.metrics.distributions import frechet_distance
from foresight_eval.metrics.inception import INCEPTION_WEIGHTS
from tests.clipmaker import gradient_clip

pytest.importorskip("torch_fidelity")


@pytest.fixture(scope="module")
def inception_home(tmp_path_factory) -> Path:
    """A $TORCH_HOME holding seeded random InceptionV3 weights under torch-fidelity's file name."""
    return write_random_inception(tmp_path_factory.mktemp("torch_home"))


def write_random_inception(home: Path) -> Path:
    """Seeded random InceptionV3 weights under torch-fidelity's file name in ``home/hub/checkpoints``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    with mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", return_value={}), \
            mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict"):
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in network.modules():  # He initialisation: default-initialised features are ~1e-6, FID ~1e-12
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = home / "hub" / "checkpoints" / INCEPTION_WEIGHTS.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return home


@pytest.fixture
def clips(tmp_path):
    for side, offset in (("preds", 5), ("refs", 0)):
        (tmp_path / side).mkdir()
        for index in range(2):
            np.save(tmp_path / side / f"c{index}.npy", gradient_clip(2, 40, 48, seed=index + offset))
    return tmp_path / "preds", tmp_path / "refs"


def _frames(folder: Path) -> torch.Tensor:
    return torch.cat([torch.from_numpy(np.load(p)).permute(0, 3, 1, 2).float() / 255 for p in sorted(folder.glob("*.npy"))])


@pytest.mark.slow
def test_fid_and_kid_match_torchmetrics(inception_home, clips, monkeypatch, tmp_path):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    monkeypatch.setenv("TORCH_HOME", str(inception_home))
    preds, refs = clips
    run = score(preds, refs, ["fid", "kid"], device="cpu", resources={"cache_dir": tmp_path / "cache"},
                params={"fid": {"resamples": 0}, "kid": {"resamples": 0, "subset_size": 4, "subsets": 3}})
    assert not run.failed
    weights = str(INCEPTION_WEIGHTS.locate())
    fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=weights)
    # KernelInceptionDistance takes no weight path; it takes the FID's extractor as its feature network.
    kid = KernelInceptionDistance(feature=fid.inception, normalize=True, subset_size=4, subsets=3)
    for side, real in ((refs, True), (preds, False)):
        fid.update(_frames(side), real=real)
        kid.update((_frames(side) * 255).byte(), real=real)  # a custom feature network gets the uint8 frames itself
    # Same features: torchmetrics' accumulated float64 statistics give our value through the exact
    # (symmetric) covariance path.
    n = int(fid.real_features_num_samples)
    stats = []
    for prefix in ("real", "fake"):
        total = getattr(fid, f"{prefix}_features_sum").double()
        mean = total / n
        cov = (getattr(fid, f"{prefix}_features_cov_sum").double() - n * torch.outer(mean, mean)) / (n - 1)
        stats += [mean.numpy(), cov.numpy()]
    reference_mean, reference_cov, pred_mean, pred_cov = stats
    exact = frechet_distance(pred_mean, pred_cov, reference_mean, reference_cov)
    assert exact > 1.0
    assert run.metrics["fid"].mean == pytest.approx(exact, rel=1e-5)
    # and torchmetrics' own compute() (eigenvalues of S1 S2, returned in float32): 2e-7 relative measured.
    assert run.metrics["fid"].mean == pytest.approx(float(fid.compute()), rel=1e-4)
    expected_kid, expected_std = (float(v) for v in kid.compute())
    assert expected_kid > 1e-6
    # 4 frames per side: every subset is the whole set, so torchmetrics' random subsets change nothing.
    assert run.metrics["kid"].mean == pytest.approx(expected_kid, rel=1e-4)
    assert run.metrics["kid"].set_values["kid_std"] == pytest.approx(expected_std, abs=1e-4 * abs(expected_kid))
    protocol = run.metrics["fid"].set_values["protocol"]
    assert protocol["n_windows"] == {"pred": 4, "ref": 4} and protocol["frames"] == 1
