"""Latent arrays dumped by models: finding and pairing the files, reading them safely, and reducing
their shapes to what a metric needs.

Formats: ``.safetensors`` (preferred), ``.npy`` / ``.npz`` (read with ``allow_pickle=False``) and
``.pt`` / ``.pth`` (read with ``torch.load(weights_only=True)``, so a pickled Python object is refused).
A file holding several tensors (safetensors, npz, a dict saved with torch.save) gives the one named by
``key``, else its only tensor, else the one named ``latents``.

Shapes, with N items (samples, clips) on the first axis:
  (N, D)             one latent vector per item
  (N, T, D)          a sequence of T latent vectors per item (T time steps or tokens)
  (N, C, T, H, W)    a video latent per item (channels, time, height, width)

Nothing is guessed: how the extra axes become the (N, D) matrix of the set metrics is the explicit
``reduce`` option, and how the spatial axes of a 5-D latent are handled is the explicit ``spatial`` option.

  spatial (5-D only)  mean: average over H, W, giving C features per time step
                      flatten: C*H*W features per time step
  reduce (T > 1)      mean: average over time, one (N, D) row per item
                      flatten: concatenate the time steps, one (N, T*D) row per item
                      per-timestep: every time step is an item of its own, (N*T, D), item n*T + t
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from foresight_eval.errors import InputError, UsageError, field_ref
from foresight_eval.io.arrays import load_array
from foresight_eval.io.clips import SIDECAR_MARKERS, ClipSource
from foresight_eval.io.pairing import Pairing, pair_sources

LATENT_SUFFIXES = frozenset({".safetensors", ".npy", ".npz", ".pt", ".pth"})
LATENT_MARKER = ".latents"  # sidecar files beside videos: clip01.latents.safetensors pairs as clip01
PREFERRED_TENSOR = "latents"
REDUCTIONS = ("mean", "flatten", "per-timestep")
SPATIAL_MODES = ("mean", "flatten")
_OTHER_SIDECARS = tuple(m for m in SIDECAR_MARKERS if m != LATENT_MARKER)


@dataclass(frozen=True)
class LatentOptions:
    """How latent files are read: the tensor to take, and how extra axes are reduced (see module doc)."""

    reduce: str | None = None
    spatial: str | None = None
    key: str | None = None
    # Only files named <name>.latents.<suffix> count (latents stored beside videos).
    sidecars_only: bool = False

    def __post_init__(self) -> None:
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise UsageError(f"{field_ref('reduce')} must be one of {list(REDUCTIONS)}, got {self.reduce!r}")
        if self.spatial is not None and self.spatial not in SPATIAL_MODES:
            raise UsageError(f"{field_ref('spatial')} must be one of {list(SPATIAL_MODES)}, got {self.spatial!r}")


def _latent_key(relative: Path) -> str | None:
    """Pairing key of a latent file (relative path without suffix or ``.latents``), None if not one."""
    if relative.suffix.lower() not in LATENT_SUFFIXES:
        return None
    stem = relative.with_suffix("").as_posix()
    if stem.endswith(_OTHER_SIDECARS):
        return None
    return stem[: -len(LATENT_MARKER)] if stem.endswith(LATENT_MARKER) else stem


def discover_latents(root: Path, sidecars_only: bool = False) -> list[ClipSource]:
    """Every latent file under ``root`` (recursive, hidden entries skipped), or ``root`` itself if a file."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(root)
    if root.is_file():
        key = _latent_key(Path(root.name))
        return [ClipSource(key=key, path=root)] if key is not None else []
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            key = _latent_key(path.relative_to(root))
            if name.startswith(".") or key is None:
                continue
            if sidecars_only and not path.with_suffix("").name.endswith(LATENT_MARKER):
                continue
            found.append(ClipSource(key=key, path=path))
    return sorted(found, key=lambda source: source.key)


def pair_latents(a: Path, b: Path, strict: bool = False, sidecars_only: bool = False) -> Pairing:
    """Pair latent files of ``a`` and ``b`` by relative name without suffix (two files pair directly)."""
    a, b = Path(a), Path(b)
    sides = []
    for label, root in (("A", a), ("B", b)):
        if not root.exists():
            raise UsageError(f"latents {label} path {root} does not exist")
        found = discover_latents(root, sidecars_only)
        if not found:
            what = "*.latents.<suffix> sidecar files" if sidecars_only else "latent files"
            raise UsageError(f"no {what} found under {root} ({', '.join(sorted(LATENT_SUFFIXES))})")
        sides.append(found)
    return pair_sources(sides[0], sides[1], a, b, strict, noun="latent file")


def _pick(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise InputError(f"{path}: no tensor named {key!r} (holds {names})")
        return key
    if len(names) == 1:
        return names[0]
    if PREFERRED_TENSOR in names:
        return PREFERRED_TENSOR
    raise InputError(f"{path}: holds {names or 'no tensors'}; name one with --key, or store one tensor or one named "
                     f"{PREFERRED_TENSOR!r}")


def _read_safetensors(path: Path, key: str | None) -> torch.Tensor:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.get_tensor(_pick(path, list(handle.keys()), key))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from exc


def _read_torch(path: Path, key: str | None) -> torch.Tensor:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError or EOFError
        raise InputError(
            f"{path}: refused: torch.load(weights_only=True) cannot read it as plain tensors (it may carry a pickled "
            f"Python object, which is never loaded; save a tensor or a dict of tensors, or use .safetensors): "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(loaded, torch.Tensor):
        return loaded
    if isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded[_pick(path, [str(k) for k in loaded], key)]
    raise InputError(f"{path}: holds a {type(loaded).__name__}, not a tensor or a dict of tensors")


def _read_numpy(path: Path, key: str | None) -> torch.Tensor:
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                array = archive[_pick(path, list(archive.files), key)]
        except ValueError as exc:
            raise InputError(f"{path}: array holds Python objects (pickled data), refused") from exc
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable array ({exc})") from exc
    else:
        array = load_array(path, mmap=False)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{path}: dtype {array.dtype} is not a real number type")
    return torch.from_numpy(np.ascontiguousarray(array))


def read_latents(path: Path, key: str | None = None) -> torch.Tensor:
    """One latent tensor from a file, checked: (N, D), (N, T, D) or (N, C, T, H, W), non-empty, finite."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: does not exist or is not a file")
    if suffix == ".safetensors":
        tensor = _read_safetensors(path, key)
    elif suffix in (".pt", ".pth"):
        tensor = _read_torch(path, key)
    elif suffix in (".npy", ".npz"):
        tensor = _read_numpy(path, key)
    else:
        raise InputError(f"{path}: unsupported latent file type {suffix!r} (use {', '.join(sorted(LATENT_SUFFIXES))})")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise InputError(f"{path}: dtype {tensor.dtype} is not a real number type")
    if tensor.ndim not in (2, 3, 5):
        raise InputError(f"{path}: latent shape {tuple(tensor.shape)} is none of (N, D), (N, T, D), (N, C, T, H, W)")
    if tensor.numel() == 0:
        raise InputError(f"{path}: latent array of shape {tuple(tensor.shape)} is empty")
    if tensor.is_floating_point():
        finite = torch.isfinite(tensor).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            raise InputError(f"{path}: {bad.numel()} item(s) hold NaN or inf values (first: item {int(bad[0])})")
    else:
        tensor = tensor.double()
    return tensor


def to_sequences(tensor: torch.Tensor, spatial: str | None, path: Path) -> torch.Tensor:
    """Any accepted shape as (N, T, F): (N, D) is one step; (N, C, T, H, W) per ``spatial``."""
    if tensor.ndim == 2:
        return tensor.unsqueeze(1)
    if tensor.ndim == 3:
        return tensor
    n, c, t, h, w = tensor.shape
    steps = tensor.permute(0, 2, 1, 3, 4)  # (N, T, C, H, W)
    if h * w == 1:
        return steps.reshape(n, t, c)
    if spatial is None:
        raise InputError(f"{path}: latents are (N, C, T, H, W) = {tuple(tensor.shape)}; choose how the spatial axes "
                         "are reduced with --spatial mean (C features per step) or --spatial flatten (C*H*W)")
    if spatial == "mean":
        return steps.mean(dim=(3, 4))
    return steps.reshape(n, t, c * h * w)


def to_matrix(sequences: torch.Tensor, reduce: str | None, path: Path) -> torch.Tensor:
    """(N, T, F) sequences as the (N', D) matrix of the set metrics, per ``reduce`` (see module doc)."""
    n, t, f = sequences.shape
    if t == 1:
        return sequences[:, 0]
    if reduce is None:
        raise InputError(f"{path}: latents have {t} time steps per item; choose how they become one vector with "
                         "--reduce mean, --reduce flatten or --reduce per-timestep")
    if reduce == "mean":
        return sequences.mean(dim=1)
    if reduce == "flatten":
        return sequences.reshape(n, t * f)
    return sequences.reshape(n * t, f)


@dataclass
class LatentPair:
    """The two sides of one matched latent file pair, as read (sequences (N, T, F), stored dtype)."""

    key: str
    a_path: Path
    b_path: Path
    a: torch.Tensor
    b: torch.Tensor
    reduce: str | None = None

    def __post_init__(self) -> None:
        if self.a.shape[0] != self.b.shape[0]:
            raise InputError(f"{self.a_path} has {self.a.shape[0]} items, {self.b_path} has {self.b.shape[0]}; "
                             "the two sides must hold the same items in the same order")
        self._matrices: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def items(self) -> int:
        return int(self.a.shape[0])

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N', Da) and (N', Db) item-by-feature matrices, reduced once and shared by the set metrics."""
        if self._matrices is None:
            a, b = to_matrix(self.a, self.reduce, self.a_path), to_matrix(self.b, self.reduce, self.b_path)
            if a.shape[0] != b.shape[0]:
                raise InputError(f"--reduce {self.reduce}: {self.a_path} gives {a.shape[0]} items, {self.b_path} "
                                 f"gives {b.shape[0]} (different numbers of time steps)")
            self._matrices = (a, b)
        return self._matrices

    def groups(self) -> np.ndarray:
        """The item each row of :meth:`matrices` comes from (N',): with ``per-timestep`` the T rows of an item
        share its index, so that cross-validation keeps them on one side of every split."""
        rows = self.matrices()[0].shape[0]
        return np.arange(rows) // (rows // self.items)


def load_latent_pair(key: str, a_path: Path, b_path: Path, options: LatentOptions,
                     device: torch.device = torch.device("cpu")) -> LatentPair:
    """Read, check and shape both files of a pair; any problem is an InputError naming the file."""
    sides = []
    for path in (a_path, b_path):
        tensor = read_latents(path, options.key)
        sides.append(to_sequences(tensor, options.spatial, path).to(device))
    return LatentPair(key, Path(a_path), Path(b_path), sides[0], sides[1], options.reduce)
