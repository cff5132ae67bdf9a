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
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from foresight_eval.io.files import write_atomic

CACHE_ENV = "FORESIGHT_CACHE"


def user_cache_dir() -> Path:
    """foresight-eval's cache folder: ``$FORESIGHT_CACHE``, else ``$XDG_CACHE_HOME/foresight-eval``
    (``~/.cache/foresight-eval``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foresight-eval"


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Features of clips under one extractor fingerprint, in ``<root>/features/<fingerprint digest>/``."""

    def __init__(self, root: Path, fingerprint: dict[str, Any]):
        self.digest = fingerprint_digest(fingerprint)
        self.folder = Path(root) / "features" / self.digest[:32]
        self.hits = self.misses = 0

    def _path(self, clip_sha256: str) -> Path:
        return self.folder / f"{clip_sha256}.safetensors"

    def get(self, clip_sha256: str) -> torch.Tensor | None:
        tensors = self.get_tensors(clip_sha256)
        return None if tensors is None else tensors.get("features")

    def put(self, clip_sha256: str, features: torch.Tensor) -> None:
        self.put_tensors(clip_sha256, {"features": features.detach().to("cpu", torch.float32)})

    def get_tensors(self, clip_sha256: str) -> dict[str, torch.Tensor] | None:
        """Every tensor of the entry (on the CPU, dtypes as stored), or None: missing or unreadable."""
        from safetensors import safe_open

        path = self._path(clip_sha256)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            if metadata.get("clip_sha256") != clip_sha256 or metadata.get("fingerprint") != self.digest:
                raise ValueError("keys do not match")
        except Exception:  # noqa: BLE001 - missing, truncated or foreign: recompute
            self.misses += 1
            return None
        self.hits += 1
        return tensors

    def put_tensors(self, clip_sha256: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        data = save({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()},
                    metadata={"clip_sha256": clip_sha256, "fingerprint": self.digest})
        write_atomic(self._path(clip_sha256), data)


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
    """SHA-256 of a FrameBatch's reference frames, hashed once per batch whichever metric asks first."""
    return batch.shared(("sha256", "ref"), lambda: tensor_sha256(batch.ref))


class ReferenceCache:
    """Work that depends only on reference frames, cached across runs: per scoring-engine batch, an entry
    keyed by the SHA-256 of exactly the inputs of the computation (the batch's reference pixels, and any
    state carried in from the previous batch such as the last frame or a running background) and by the
    computation's name and parameters. Scoring a second model against the same references then reads
    these entries instead of recomputing them; a changed pixel, parameter or batch size misses.

    Used by the frame metrics only when a cache folder is given (``--cache-dir`` or ``$FORESIGHT_CACHE``):
    unlike FVD's one vector per clip, per-frame entries (edge maps, motion masks) take disk space in
    proportion to the reference frames."""

    def __init__(self, root: Path, computation: str, params: dict[str, Any]):
        self.store = FeatureCache(root, {"computation": computation, "params": params, "format": 1})

    @classmethod
    def from_resources(cls, resources: dict[str, Any], computation: str,
                       params: dict[str, Any]) -> ReferenceCache | None:
        root = resources.get("cache_dir")
        return None if root is None else cls(Path(root), computation, params)

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
