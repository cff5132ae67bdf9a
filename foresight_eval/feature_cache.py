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
        from safetensors import safe_open

        path = self._path(clip_sha256)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                features = handle.get_tensor("features")
            if metadata.get("clip_sha256") != clip_sha256 or metadata.get("fingerprint") != self.digest:
                raise ValueError("keys do not match")
        except Exception:  # noqa: BLE001 - missing, truncated or foreign: recompute
            self.misses += 1
            return None
        self.hits += 1
        return features

    def put(self, clip_sha256: str, features: torch.Tensor) -> None:
        from safetensors.torch import save

        data = save({"features": features.detach().to("cpu", torch.float32).contiguous()},
                    metadata={"clip_sha256": clip_sha256, "fingerprint": self.digest})
        write_atomic(self._path(clip_sha256), data)
