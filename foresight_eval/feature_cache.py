"""An on-disk cache of reference-clip features, so a second run against the same references skips their
extraction.

An entry is keyed by the SHA-256 of the clip's scored frames (the float32 pixels the extractor is given,
so a re-encoded file with the same pixels still hits and any changed pixel misses) and by the extractor
fingerprint (network, weight-file SHA-256, resolution, resize, window parameters): a folder per
fingerprint digest, a safetensors file per clip. Entries are written atomically; an entry that cannot be
read, or whose recorded keys do not match, is treated as missing (and rewritten), never trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from foresight_eval.io.files import write_atomic

CACHE_ENV = "FORESIGHT_CACHE"
CACHE_USE_RESOURCE = "cache_use"  # RunContext.resources key of the run's CacheUse (set by the engine)
# Boolean maps (edges, motion masks: a byte per pixel in torch) are stored as packed bits, 8x smaller on disk
# (the default suite's entries, 640x360: 53 -> 16 MB for 3 clips x 32 frames); the metadata key PACKED_BOOL + name
# holds the tensor's shape.
PACKED_BOOL = "packed_bool_shape:"


def user_cache_dir() -> Path:
    """foresight-eval's cache folder: ``$FORESIGHT_CACHE``, else ``$XDG_CACHE_HOME/foresight-eval``
    (``~/.cache/foresight-eval``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foresight-eval"


class CacheWarning(UserWarning):
    """The cache folder cannot be written: the run goes on without caching."""


@dataclass
class CacheUse:
    """A run's cache: its folder (None: off) and what the run did with it, recorded in the run manifest."""

    root: Path | None
    hits: int = 0
    misses: int = 0
    # why it is off or stopped writing ("--no-cache", or the error of the first failed write)
    note: str | None = None

    def write_failed(self, error: OSError) -> None:
        """A write failed (read-only folder, full disk): warn once; entries are no longer written."""
        if self.note is None:
            self.note = f"not written: {error}"
            warnings.warn(f"cache folder {self.root} cannot be written ({error}): going on without caching",
                          CacheWarning, stacklevel=4)

    def as_dict(self) -> dict[str, Any]:
        return {"dir": None if self.root is None else str(self.root), "hits": self.hits, "misses": self.misses,
                "note": self.note}


def open_run_cache(resources: Mapping[str, Any]) -> CacheUse:
    """The cache of a scoring run from its ``resources["cache_dir"]``: a folder, None for no cache (``--no-cache``),
    or absent for :func:`user_cache_dir`. A folder that cannot be created or written is one
    :class:`CacheWarning` and no cache, not a failure."""
    if "cache_dir" in resources and resources["cache_dir"] is None:
        return CacheUse(None, note="off (--no-cache)")
    use = CacheUse(Path(resources.get("cache_dir") or user_cache_dir()))
    try:
        use.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=use.root):  # writable: a folder may exist read-only
            pass
    except OSError as exc:
        use.write_failed(exc)
        use.root = None
    return use


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Features of clips under one extractor fingerprint, in ``<root>/features/<fingerprint digest>/``."""

    def __init__(self, root: Path | None, fingerprint: dict[str, Any], use: CacheUse | None = None):
        """``root`` None: no cache (every lookup misses, nothing is written). ``use``: the run's cache, whose
        hit and miss counts this one adds to."""
        self.digest = fingerprint_digest(fingerprint)
        self.use = use if use is not None else CacheUse(None if root is None else Path(root))
        self.folder = None if root is None else Path(root) / "features" / self.digest[:32]
        self.hits = self.misses = 0

    def _path(self, clip_sha256: str) -> Path:
        return self.folder / f"{clip_sha256}.safetensors"

    def get(self, clip_sha256: str) -> torch.Tensor | None:
        tensors = self.get_tensors(clip_sha256)
        return None if tensors is None else tensors.get("features")

    def put(self, clip_sha256: str, features: torch.Tensor) -> None:
        self.put_tensors(clip_sha256, {"features": features.detach().to("cpu", torch.float32)})

    def get_tensors(self, clip_sha256: str) -> dict[str, torch.Tensor] | None:
        """Every tensor of the entry (on the CPU, dtypes and shapes as put), or None: missing or unreadable."""
        from safetensors import safe_open

        if self.folder is None:
            return None
        path = self._path(clip_sha256)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            if metadata.get("clip_sha256") != clip_sha256 or metadata.get("fingerprint") != self.digest:
                raise ValueError("keys do not match")
            tensors = {name: _unpacked(tensor, metadata.get(PACKED_BOOL + name)) for name, tensor in tensors.items()}
        except Exception:  # noqa: BLE001 - missing, truncated or foreign: recompute
            self.misses += 1
            self.use.misses += 1
            return None
        self.hits += 1
        self.use.hits += 1
        return tensors

    def put_tensors(self, clip_sha256: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        if self.folder is None or self.use.note is not None:  # no cache, or its folder cannot be written
            return
        stored, metadata = {}, {"clip_sha256": clip_sha256, "fingerprint": self.digest}
        for name, tensor in tensors.items():
            tensor = tensor.detach().cpu()
            if tensor.dtype == torch.bool:
                metadata[PACKED_BOOL + name] = json.dumps(list(tensor.shape))
                tensor = torch.from_numpy(np.packbits(tensor.numpy().reshape(-1)))
            stored[name] = tensor.contiguous()
        data = save(stored, metadata=metadata)
        try:
            write_atomic(self._path(clip_sha256), data)
        except OSError as exc:  # a cache must not fail the clip
            self.use.write_failed(exc)


def _unpacked(tensor: torch.Tensor, shape: str | None) -> torch.Tensor:
    """A tensor as put: a boolean one from its packed bits and recorded shape (``shape`` None: stored as is)."""
    if shape is None:
        return tensor
    dims = json.loads(shape)
    count = math.prod(dims)
    if tensor.dtype != torch.uint8 or tensor.shape != (-(-count // 8),):  # unpackbits would pad a short one
        raise ValueError(f"packed bits of shape {tuple(tensor.shape)} for a {dims} map")
    return torch.from_numpy(np.unpackbits(tensor.numpy(), count=count).view(np.bool_).reshape(dims))


def tensor_sha256(*tensors: torch.Tensor | str | int | None) -> str:
    """SHA-256 of tensors' shapes, dtypes and bytes (None hashes as absent; a string or integer, such as the
    digest of a tensor hashed before, as itself): the key of an entry computed from exactly these inputs."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None or isinstance(tensor, (str, int)):
            digest.update(f"{type(tensor).__name__}:{tensor};".encode())
            continue
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype};".encode())
        if tensor.numel():
            digest.update(tensor.view(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return digest.hexdigest()


def reference_sha256(batch: Any) -> str:
    """SHA-256 of a FrameBatch's reference frames, hashed once per batch whichever metric asks first (or ahead,
    in the decoding thread: ``ref_sha256``): the frames as decoded (uint8, on the host) when the batch has
    them, else its ``ref`` tensor."""
    decoded = getattr(batch, "ref_decoded", None)
    return batch.shared(("sha256", "ref"), lambda: getattr(batch, "ref_sha256", None) or tensor_sha256(
        batch.ref if decoded is None else decoded))


class ReferenceCache:
    """Work that depends only on reference frames, cached across runs: per scoring-engine batch, an entry
    keyed by the SHA-256 of exactly the inputs of the computation (the batch's reference pixels, and any
    state carried in from the previous batch such as the last frame or a running background) and by the
    computation's name and parameters. Scoring a second model against the same references then reads
    these entries instead of recomputing them; a changed pixel, parameter or batch size misses.

    A scoring run uses its cache folder (default :func:`user_cache_dir`; ``--no-cache`` turns it off); a metric
    used outside a run caches only when its ``RunContext.resources`` names a ``cache_dir``."""

    def __init__(self, root: Path, computation: str, params: dict[str, Any], use: CacheUse | None = None):
        # format 2: boolean maps packed (PACKED_BOOL); a version that wrote format 1 would misread them
        self.store = FeatureCache(root, {"computation": computation, "params": params, "format": 2}, use)

    @classmethod
    def from_resources(cls, resources: dict[str, Any], computation: str,
                       params: dict[str, Any]) -> ReferenceCache | None:
        root = resources.get("cache_dir")
        return None if root is None else cls(Path(root), computation, params, resources.get(CACHE_USE_RESOURCE))

    def __call__(self, inputs: tuple[torch.Tensor | str | int | None, ...],
                 compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The cached outputs of ``compute`` for these inputs (on the CPU), computing and storing on a miss.
        ``inputs`` may name a tensor by its :func:`tensor_sha256` digest (the batch's, hashed once)."""
        key = tensor_sha256(*inputs)
        cached = self.store.get_tensors(key)
        if cached is not None:
            return cached
        outputs = compute()
        self.store.put_tensors(key, outputs)
        return outputs
