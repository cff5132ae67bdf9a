"""The machinery every window-feature set metric (fvd, ...) shares, driven through a cheap extractor so it
runs in seconds: Fréchet distance vs scipy's sqrtm, the TF1 bilinear resize, windows and per-horizon
values, the bootstrap CI, the reference-feature cache (hit, miss, corrupt file), the protocol fingerprint
in summary.json, and `compare` / `check --baseline` / `leaderboard` refusing runs whose fingerprints differ."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch
from click.testing import CliRunner

from foresight_eval import ScoreOptions, score
from foresight_eval.cli import main
from foresight_eval.compare import ParameterMismatch, check_regression, compare
from foresight_eval.errors import UsageError
from foresight_eval.feature_cache import FeatureCache
from foresight_eval.metrics import registry
from foresight_eval.metrics.base import MetricInfo, RunContext
from foresight_eval.metrics.distributions import frechet_distance, frechet_distance_of, gaussian_stats
from foresight_eval.metrics.set_features import WindowFeatureMetric, resize_frames
from foresight_eval.report import build_leaderboard, load_runs
from tests.clipmaker import gradient_clip


def _scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root (real part, as pytorch-fid does)."""
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n", [300, 40])  # more clips than dimensions (eigen path), fewer (cross-Gram path)
def test_frechet_eigen_path_matches_scipy_sqrtm(n):
    rng = np.random.default_rng(n)
    mixing = rng.normal(size=(64, 64))
    x = rng.normal(size=(n, 64)) @ mixing
    y = rng.normal(size=(n, 64)) @ (mixing + 0.3 * rng.normal(size=(64, 64))) + 0.5
    ours, reference = frechet_distance_of(x, y), _scipy_frechet(x, y)
    assert reference > 1.0
    assert abs(ours - reference) <= 1e-6 * reference
    # the covariance (eigen) path on the same data, whichever path frechet_distance_of took
    assert abs(frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) - reference) <= 1e-6 * reference


def test_frechet_of_a_shift_is_the_squared_shift():
    rng = np.random.default_rng(0)
    mu, sigma = gaussian_stats(rng.normal(size=(100, 8)))
    shift = np.arange(8, dtype=np.float64)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu + shift, sigma, mu, sigma) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_tf_bilinear_resize_uses_the_legacy_pixel_mapping():
    """TF1 resize_bilinear samples output pixel i at i * in / out: halving picks the even pixels exactly,
    doubling interleaves midpoints and repeats the last pixel (clamped)."""
    frames = torch.rand(2, 3, 8, 8)
    assert torch.equal(resize_frames(frames, 4, "tf_bilinear"), frames[:, :, ::2, ::2])
    up = resize_frames(frames, 16, "tf_bilinear")
    torch.testing.assert_close(up[:, :, ::2, ::2], frames)
    torch.testing.assert_close(up[:, :, 1:-1:2, ::2], (frames[:, :, :-1] + frames[:, :, 1:]) / 2)
    torch.testing.assert_close(up[:, :, -1, ::2], frames[:, :, -1])
    antialiased = resize_frames(frames, 4, "bilinear_antialias")
    assert not torch.allclose(antialiased, frames[:, :, ::2, ::2])


class TinyFeatures(WindowFeatureMetric):
    """A window-feature metric with a cheap extractor: the window's mean 4x4 frame (48-d)."""

    info = MetricInfo(name="tiny_fd", description="test", direction="lower", granularity="set", default=False)
    resolution = 4
    extractor = "test: mean 4x4 frame"
    calls = 0
    weights = None  # set by the fixture

    def load_extractor(self, context: RunContext) -> None:
        self.weights_file = TinyFeatures.weights

    def extract(self, windows: torch.Tensor) -> torch.Tensor:
        TinyFeatures.calls += len(windows)
        return windows.mean(dim=1).flatten(1)


@pytest.fixture
def tiny(tmp_path):
    registry.metric_classes()
    registry._registry["tiny_fd"] = TinyFeatures
    weights = tmp_path / "tiny.bin"
    weights.write_bytes(b"tiny weights v1")
    TinyFeatures.calls, TinyFeatures.weights = 0, weights
    yield {"cache_dir": tmp_path / "cache"}
    registry._registry.pop("tiny_fd")


def _clips(root, n, frames=6, seed=0, shift=0):
    for side, offset in (("preds", shift), ("refs", 0)):
        (root / side).mkdir(parents=True, exist_ok=True)
        for index in range(n):
            np.save(root / side / f"clip{index}.npy", gradient_clip(frames, 8, 8, seed=seed + index + offset))
    return root / "preds", root / "refs"


def _score(preds, refs, resources, run_dir=None, **params):
    run = score(preds, refs, ["tiny_fd"], params={"tiny_fd": {"frames": 4, "resamples": 50, **params}},
                device="cpu", resources=resources, run_dir=run_dir)
    return run


def test_value_ci_protocol_and_small_n_warning(tmp_path, tiny):
    preds, refs = _clips(tmp_path, 6, shift=100)
    run = _score(preds, refs, tiny, run_dir=tmp_path / "run")
    figures = run.metrics["tiny_fd"].set_values
    features = {side: np.stack([TinyFeatures.extract(None, resize_frames(
        torch.from_numpy(np.load(path)).permute(0, 3, 1, 2).float()[:4] / 255, 4, "tf_bilinear")[None]).numpy()[0]
        for path in sorted((tmp_path / side).glob("*.npy"))]) for side in ("preds", "refs")}
    assert figures["value"] == pytest.approx(frechet_distance_of(features["preds"], features["refs"]), rel=1e-6)
    assert figures["value"] > 0.01
    assert figures["ci_low"] <= figures["value"] <= figures["ci_high"]
    assert run.metrics["tiny_fd"].ci_low == figures["ci_low"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    protocol = summary["metrics"]["tiny_fd"]["set"]["protocol"]
    assert protocol["n_clips"] == {"pred": 6, "ref": 6} and protocol["frames"] == 4 and protocol["resolution"] == 4
    assert protocol["context_frames_excluded"] == [0] and len(protocol["weights_sha256"]) == 64
    assert protocol["resize"] == "tf_bilinear" and len(protocol["reference_set_sha256"]) == 64
    assert "fewer than 256" in summary["metrics"]["tiny_fd"]["set"]["warnings"][0]


def test_context_frames_are_excluded_and_recorded(tmp_path, tiny):
    preds, refs = _clips(tmp_path, 3, frames=6)
    run = score(preds, refs, ["tiny_fd"], params={"tiny_fd": {"frames": 4}}, device="cpu", resources=tiny,
                options=ScoreOptions(context=2))
    assert run.metrics["tiny_fd"].set_values["protocol"]["context_frames_excluded"] == [2]
    short = score(preds, refs, ["tiny_fd"], params={"tiny_fd": {"frames": 5}}, device="cpu", resources=tiny,
                  options=ScoreOptions(context=2))
    assert len(short.failed) == 3 and "windows of 5 frames" in short.failed[0].error


def test_all_windows_give_per_horizon_values(tmp_path, tiny):
    preds, refs = _clips(tmp_path, 4, frames=7, shift=50)
    run = _score(preds, refs, tiny, window="all", stride=1)
    figures = run.metrics["tiny_fd"].set_values
    assert [row["horizon"] for row in figures["per_horizon"]] == [1, 2, 3, 4]
    assert all(row["n"] == 4 and row["mean"] > 0 for row in figures["per_horizon"])
    assert run.metrics["tiny_fd"].per_horizon == figures["per_horizon"]  # the report's horizon curve
    assert figures["protocol"]["n_windows"] == {"pred": 16, "ref": 16}


def test_reference_cache_hit_miss_and_corrupt_file(tmp_path, tiny):
    preds, refs = _clips(tmp_path, 3, shift=7)
    first = _score(preds, refs, tiny)
    assert first.metrics["tiny_fd"].set_values["cache"] == {"hits": 0, "misses": 3} and TinyFeatures.calls == 6
    second = _score(preds, refs, tiny)
    assert second.metrics["tiny_fd"].set_values["cache"] == {"hits": 3, "misses": 0} and TinyFeatures.calls == 9
    assert second.metrics["tiny_fd"].mean == first.metrics["tiny_fd"].mean
    # A different extractor fingerprint (here: the window length) misses.
    assert _score(preds, refs, tiny, frames=3).metrics["tiny_fd"].set_values["cache"]["hits"] == 0
    # A corrupt file and a file holding another clip's features are recomputed, not trusted.
    folders = {path.parent for path in (tiny["cache_dir"] / "features").glob("*/*.safetensors")}
    assert len(folders) == 2
    files = sorted((tiny["cache_dir"] / "features" / _folder_of(first)).iterdir())
    files[0].write_bytes(b"not a safetensors file")
    shutil.copy(files[2], files[1])
    third = _score(preds, refs, tiny)
    assert third.metrics["tiny_fd"].set_values["cache"] == {"hits": 1, "misses": 2}
    assert third.metrics["tiny_fd"].mean == first.metrics["tiny_fd"].mean
    assert _score(preds, refs, tiny).metrics["tiny_fd"].set_values["cache"]["hits"] == 3  # rewritten


def _folder_of(run) -> str:
    """The cache folder of a run's extractor fingerprint (the protocol minus the per-run entries)."""
    from foresight_eval.feature_cache import fingerprint_digest

    protocol = run.metrics["tiny_fd"].set_values["protocol"]
    run_entries = ("context_frames_excluded", "n_clips", "n_windows", "reference_set_sha256")
    return fingerprint_digest({k: v for k, v in protocol.items() if k not in run_entries})[:32]


def test_cache_rejects_entries_of_another_fingerprint(tmp_path):
    cache_a, cache_b = FeatureCache(tmp_path, {"frames": 16}), FeatureCache(tmp_path, {"frames": 8})
    cache_a.put("ab" * 32, torch.ones(1, 3))
    assert torch.equal(cache_a.get("ab" * 32), torch.ones(1, 3))
    assert cache_b.get("ab" * 32) is None and cache_a.get("cd" * 32) is None
    assert (cache_a.hits, cache_a.misses) == (1, 1)


@pytest.fixture
def two_protocols(tmp_path, tiny):
    """The same predictions scored against references that differ in one clip's content."""
    preds, refs = _clips(tmp_path / "a", 3, shift=9)
    other_refs = tmp_path / "b_refs"
    shutil.copytree(refs, other_refs)
    np.save(other_refs / "clip0.npy", gradient_clip(6, 8, 8, seed=77))
    run_a, run_b = tmp_path / "run_a", tmp_path / "run_b"
    _score(preds, refs, tiny, run_dir=run_a)
    _score(preds, other_refs, tiny, run_dir=run_b)
    return run_a, run_b


def test_compare_and_check_refuse_different_fingerprints_naming_them(two_protocols):
    run_a, run_b = two_protocols
    with pytest.raises(ParameterMismatch) as refused:
        compare([run_a, run_b])
    assert any(d.startswith("tiny_fd.protocol.reference_set_sha256:") for d in refused.value.differences)
    assert compare([run_a, run_b], force=True).parameter_differences
    with pytest.raises(ParameterMismatch):
        check_regression(run_b, run_a)
    result = CliRunner().invoke(main, ["check", str(run_b), "--baseline", str(run_a)])
    assert result.exit_code == 2 and "tiny_fd.protocol.reference_set_sha256" in result.output
    forced = CliRunner().invoke(main, ["check", str(run_b), "--baseline", str(run_a), "--force",
                                       "--max-regression", "tiny_fd=1000"])
    assert forced.exit_code == 0, forced.output
    result = CliRunner().invoke(main, ["compare", str(run_a), str(run_b)])
    assert result.exit_code == 2 and "tiny_fd.protocol.reference_set_sha256" in result.output


def test_leaderboard_refuses_different_fingerprints_unless_split(two_protocols, tmp_path):
    run_a, run_b = two_protocols
    with pytest.raises(UsageError, match="tiny_fd.protocol.reference_set_sha256"):
        build_leaderboard(load_runs([str(run_a), str(run_b)]))
    board = build_leaderboard(load_runs([str(run_a), str(run_b)]), split=True)
    assert len(board.tables) == 2
    assert any("tiny_fd.protocol" in reason for reason in board.tables[1].separated_because)


def test_same_protocol_compares(tmp_path, tiny):
    preds, refs = _clips(tmp_path, 3, shift=3)
    _score(preds, refs, tiny, run_dir=tmp_path / "one")
    _score(preds, refs, tiny, run_dir=tmp_path / "two")
    comparison = compare([tmp_path / "one", tmp_path / "two"])
    assert comparison.pairs[0].diff == 0.0


def test_cli_cache_dir_and_small_n_warning(tmp_path, tiny):
    preds, refs = _clips(tmp_path, 2, shift=1)
    args = ["score", str(preds), str(refs), "-m", "tiny_fd", "-p", "tiny_fd.frames=4", "--cache-dir",
            str(tmp_path / "mycache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "fewer than 256" in result.output
    assert len(list((tmp_path / "mycache" / "features").glob("*/*.safetensors"))) == 2
