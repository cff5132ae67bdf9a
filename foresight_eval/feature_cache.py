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
import threading
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from foresight_eval.device_copies import to_host_async
from foresight_eval.errors import UsageError, field_ref
from foresight_eval.io.files import write_atomic
from foresight_eval.options import FRAME_CACHE_MODES

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
    """A run's cache: its folder (None: off) and what the run did with it, recorded in the run manifest.

    Within ``with use:`` (a scoring run) entries are written by a thread of the run's cache, after the
    device has computed them (:class:`EntryWriter`); the block's end waits for every write. Outside it
    each entry is written before ``put_tensors`` returns."""

    root: Path | None
    hits: int = 0
    misses: int = 0
    # why it is off or stopped writing ("--no-cache", or the error of the first failed write)
    note: str | None = None
    # whether the frame metrics' reference side is cached (ReferenceCache), or only set features (FVD's)
    frame_metrics: bool = True
    writer: EntryWriter | None = field(default=None, repr=False)

    def __enter__(self) -> CacheUse:
        if self.root is not None:
            self.writer = EntryWriter(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()

    def write_failed(self, error: Exception) -> None:
        """A write failed (read-only folder, full disk): warn once; entries are no longer written."""
        if self.note is None:
            self.note = f"not written: {error}"
            warnings.warn(f"cache folder {self.root} cannot be written ({error}): going on without caching",
                          CacheWarning, stacklevel=4)

    def as_dict(self) -> dict[str, Any]:
        return {"dir": None if self.root is None else str(self.root), "hits": self.hits, "misses": self.misses,
                "note": self.note, "frame_metrics": self.root is not None and self.frame_metrics}


def open_run_cache(resources: Mapping[str, Any], device: torch.device) -> CacheUse:
    """The cache of a scoring run from its ``resources["cache_dir"]``: a folder, None for no cache (``--no-cache``),
    or absent for :func:`user_cache_dir`. A folder that cannot be created or written is one
    :class:`CacheWarning` and no cache, not a failure.

    ``resources["frame_cache"]`` (:data:`~foresight_eval.options.FRAME_CACHE_MODES`) says whether the frame metrics'
    reference side is cached too (set features, FVD's, always are): "on", "off", or "auto" (the default): on the
    CPU only. On a GPU these metrics' reference side is a few kernels per batch, queued in less time than reading
    their entries back takes the thread that drives the GPU: with the cache a second model's run took 1.3-1.5x as
    long as without on H200s, while on the CPU it is 1.2x faster (benchmarks/RESULTS.md, the sixteenth session)."""
    mode = resources.get("frame_cache", "auto")
    if mode not in FRAME_CACHE_MODES:
        raise UsageError(f"{field_ref('frame_cache', mode)} must be one of {', '.join(FRAME_CACHE_MODES)}")
    frame_metrics = mode == "on" or (mode == "auto" and device.type == "cpu")
    if "cache_dir" in resources and resources["cache_dir"] is None:
        return CacheUse(None, note="off (--no-cache)")
    use = CacheUse(Path(resources.get("cache_dir") or user_cache_dir()), frame_metrics=frame_metrics)
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
        self.put_tensors(clip_sha256, {"features": features.detach().float()})

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
        """Store the entry. Tensors on a device are copied to the host behind the work that computes them, and
        the host does not wait for it when the run's writer writes the entry (:class:`CacheUse`): a ``.cpu()``
        here made the thread that drives the GPU wait for the GPU's whole queue at every entry. The tensors are
        the cache's from here on: the caller must not change them in place (a CPU tensor is not copied)."""
        if self.folder is None or self.use.note is not None:  # no cache, or its folder cannot be written
            return
        arrays, ready = to_host_async(*(tensor.detach() for tensor in tensors.values()))
        entry = PendingEntry(self._path(clip_sha256), dict(zip(tensors, arrays)),
                             {"clip_sha256": clip_sha256, "fingerprint": self.digest}, ready)
        if self.use.writer is not None:
            self.use.writer.submit(entry)
        else:
            entry.write(self.use)


@dataclass
class PendingEntry:
    """A cache entry on its way to disk: its host arrays hold the values once ``ready`` (a CUDA event; None:
    now) has passed."""

    path: Path
    arrays: dict[str, np.ndarray]
    metadata: dict[str, str]
    ready: torch.cuda.Event | None

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())

    def write(self, use: CacheUse) -> None:
        """Pack, serialise and write atomically. A failed write stops the run's writing (one warning): a cache
        must not fail the clip, nor, written after it, the run."""
        from safetensors.torch import save

        if use.note is not None:  # an earlier write failed meanwhile
            return
        try:
            if self.ready is not None:
                self.ready.synchronize()
            stored, metadata = {}, dict(self.metadata)
            for name, array in self.arrays.items():
                if array.dtype == np.bool_:
                    metadata[PACKED_BOOL + name] = json.dumps(list(array.shape))
                    array = np.packbits(array.reshape(-1))
                stored[name] = torch.from_numpy(np.ascontiguousarray(array))
            write_atomic(self.path, save(stored, metadata=metadata))
        except Exception as exc:  # noqa: BLE001 - read-only folder, full disk, or worse: the cache stops
            use.write_failed(exc)


class EntryWriter:
    """Writes a run's cache entries in one thread of its own, in the order put, so that the thread scoring on a
    GPU neither waits for the device (each entry is written after its CUDA event) nor for the disk (an
    fsync per entry). Memory bound: entries waiting to be written hold their host copies, at most
    ``MAX_PENDING_BYTES`` of them; a put beyond that waits for the oldest write (a disk slower than scoring)."""

    MAX_PENDING_BYTES = 512 * 2**20

    def __init__(self, use: CacheUse):
        self._use = use
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foresight-cache-writer")
        self._pending: deque[tuple[Future[None], int]] = deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()  # puts come from the scoring thread; close from the run's

    def submit(self, entry: PendingEntry) -> None:
        with self._lock:
            while self._pending and self._pending_bytes + entry.nbytes > self.MAX_PENDING_BYTES:
                self._wait_oldest()
            self._pending.append((self._thread.submit(entry.write, self._use), entry.nbytes))
            self._pending_bytes += entry.nbytes

    def _wait_oldest(self) -> None:
        written, size = self._pending.popleft()
        self._pending_bytes -= size
        written.result()

    def close(self) -> None:
        """Wait for every write, then end the thread."""
        with self._lock:
            try:
                while self._pending:
                    self._wait_oldest()
            finally:
                self._thread.shutdown(wait=True)


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


def frame_cache_on(resources: Mapping[str, Any] | None) -> bool:
    """Whether frame metrics cache their reference side under these resources: a cache folder, and a run
    (its :class:`CacheUse`, when there is one) that caches them (:func:`open_run_cache`)."""
    if not resources or resources.get("cache_dir") is None:
        return False
    use = resources.get(CACHE_USE_RESOURCE)
    return use is None or use.frame_metrics


class ReferenceCache:
    """Work that depends only on reference frames, cached across runs: per scoring-engine batch, an entry
    keyed by the SHA-256 of exactly the inputs of the computation (the batch's reference pixels, and any
    state carried in from the previous batch such as the last frame or a running background, named by the
    digest of what made it) and by the computation's name and parameters. Scoring a second model against the
    same references then reads these entries instead of recomputing them; a changed pixel, parameter or batch
    size misses.

    A scoring run uses its cache folder (default :func:`user_cache_dir`; ``--no-cache`` turns it off) where its
    ``frame_cache`` mode says so (:func:`open_run_cache`: by default on the CPU only); a metric used outside a
    run caches only when its ``RunContext.resources`` names a ``cache_dir``."""

    def __init__(self, root: Path, computation: str, params: dict[str, Any], use: CacheUse | None = None):
        # format 2: boolean maps packed (PACKED_BOOL); a version that wrote format 1 would misread them
        self.store = FeatureCache(root, {"computation": computation, "params": params, "format": 2}, use)

    @classmethod
    def from_resources(cls, resources: Mapping[str, Any], computation: str,
                       params: dict[str, Any]) -> ReferenceCache | None:
        """The cache of ``computation`` under a run's resources, None where frame metrics are not cached."""
        if not frame_cache_on(resources):
            return None
        return cls(Path(resources["cache_dir"]), computation, params, resources.get(CACHE_USE_RESOURCE))

    def __call__(self, inputs: tuple[torch.Tensor | str | int | None, ...],
                 compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The cached outputs of ``compute`` for these inputs, computing and storing on a miss. ``inputs`` may
        name a tensor by its :func:`tensor_sha256` digest (the batch's, hashed once)."""
        return self.lookup(tensor_sha256(*inputs), compute)

    def lookup(self, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The entry under ``key`` (on the CPU), else ``compute``'s outputs (where they were computed), stored
        under it. The outputs are the cache's: read them, do not change them in place."""
        cached = self.store.get_tensors(key)
        if cached is not None:
            return cached
        outputs = compute()
        self.store.put_tensors(key, outputs)
        return outputs
