"""Where metric weights are looked up, listed and (only on request) downloaded.

Scoring never touches the network. Each weight file is searched, in order, in ``--weights-dir``,
``$FORESIGHT_WEIGHTS`` and its owning library's standard cache. ``foresight-eval weights fetch NAME``
is the one command that downloads, through the owning library's own download function.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch

from foresight_eval.errors import MetricUnavailable, UsageError, WeightsNotFound
from foresight_eval.io.files import sha256_file, write_atomic

WEIGHTS_ENV = "FORESIGHT_WEIGHTS"


def user_weight_dirs(weights_dir: Path | None) -> list[tuple[str, Path]]:
    """The user's own weight folders, in search order, each with the label shown in messages."""
    places = []
    if weights_dir is not None:
        places.append(("--weights-dir", Path(weights_dir)))
    if os.environ.get(WEIGHTS_ENV):
        places.append((f"${WEIGHTS_ENV}", Path(os.environ[WEIGHTS_ENV])))
    return places


class WeightSpec(ABC):
    """One weight artefact a metric needs."""

    name: str
    used_by: str

    @abstractmethod
    def candidates(self, weights_dir: Path | None) -> list[tuple[str, Path]]:
        """Every path it may be found at, in search order, labelled for messages."""

    def locate(self, weights_dir: Path | None = None) -> Path:
        candidates = self.candidates(weights_dir)
        for _, path in candidates:
            if path.exists():
                return path
        raise WeightsNotFound(self.name, self.filename, [f"{label} {path.parent}" for label, path in candidates])

    @property
    @abstractmethod
    def filename(self) -> str: ...

    @abstractmethod
    def fetch(self, weights_dir: Path | None = None) -> Path:
        """Download into the standard cache through the owning library; return the path. Files that have
        no owning library's cache (converted ones) go to ``weights_dir`` when given."""


@dataclass(frozen=True)
class TorchvisionCheckpoint(WeightSpec):
    """An ImageNet checkpoint under torchvision's own file name, cached in ``$TORCH_HOME/hub/checkpoints``."""

    name: str
    used_by: str
    weights_enum: str  # e.g. "AlexNet_Weights.IMAGENET1K_V1"
    # The file name of the enum's URL, e.g. "alexnet-owt-7be5be79.pth", written out so that finding the file
    # imports no torchvision (1-4 s: it pulls in torch._dynamo); tests/test_fixed_costs.py checks it against
    # the enum. None: read from the enum.
    file: str | None = None

    def _weights(self):
        import torchvision

        enum_name, member = self.weights_enum.split(".")
        return getattr(getattr(torchvision.models, enum_name), member)

    @property
    def filename(self) -> str:
        return self.file or os.path.basename(self._weights().url)

    def candidates(self, weights_dir: Path | None) -> list[tuple[str, Path]]:
        places = user_weight_dirs(weights_dir)
        places.append(("torch hub cache", Path(torch.hub.get_dir()) / "checkpoints"))
        return [(label, folder / self.filename) for label, folder in places]

    def fetch(self, weights_dir: Path | None = None) -> Path:
        self._weights().get_state_dict(progress=True)
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


@dataclass(frozen=True)
class HuggingFaceModel(WeightSpec):
    """A Hugging Face model folder in the standard ``save_pretrained`` layout (``files``), found as
    ``<weights dir>/<folder>/`` or in the Hugging Face hub cache
    (``$HF_HUB_CACHE/models--<org>--<name>/snapshots/<revision>/``, revision ``main``).
    Only ``model.safetensors`` is accepted: pickled ``pytorch_model.bin`` files are never loaded."""

    name: str
    used_by: str
    repo_id: str  # e.g. "facebook/dinov2-small"
    folder: str  # its folder name under --weights-dir, e.g. "dinov2-small"
    files: tuple[str, ...] = ("config.json", "model.safetensors", "preprocessor_config.json")

    @property
    def filename(self) -> str:
        return "model.safetensors"

    def candidates(self, weights_dir: Path | None) -> list[tuple[str, Path]]:
        from huggingface_hub import constants

        places = [(label, folder / self.folder / self.filename) for label, folder in user_weight_dirs(weights_dir)]
        # The hub's folder for the model (its `repo_folder_name`); the hub's own lookup of the revision only where
        # that folder exists: importing it (huggingface_hub.file_download, httpx) is 0.2 s of a run's set-up.
        repo_cache = Path(constants.HF_HUB_CACHE) / f"models--{self.repo_id.replace('/', '--')}"
        cached = None
        if repo_cache.is_dir():
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.repo_id, self.filename)
        if not isinstance(cached, str):  # not cached: show where the hub would put it
            cached = repo_cache / "snapshots" / "<revision>" / self.filename
        places.append(("Hugging Face cache", Path(cached)))
        return places

    def locate_folder(self, weights_dir: Path | None = None) -> Path:
        """The model folder to give ``from_pretrained``, with every file of ``files`` in it."""
        folder = self.locate(weights_dir).parent
        missing = [name for name in self.files if not (folder / name).is_file()]
        if missing:
            raise MetricUnavailable(f"{folder} holds {self.filename} but not {', '.join(missing)}; "
                                    f"`foresight-eval weights fetch {self.name}` downloads the whole model folder")
        return folder

    def fetch(self, weights_dir: Path | None = None) -> Path:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.repo_id, allow_patterns=list(self.files))) / self.filename


_specs: dict[str, WeightSpec] = {}


@dataclass(frozen=True)
class TorchHubFile(WeightSpec):
    """A checkpoint that its library downloads with ``torch.hub.load_state_dict_from_url`` into
    ``$TORCH_HOME/hub/checkpoints`` under the URL's file name."""

    name: str
    used_by: str
    url: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.url)

    def candidates(self, weights_dir: Path | None) -> list[tuple[str, Path]]:
        places = user_weight_dirs(weights_dir) + [("torch hub cache", Path(torch.hub.get_dir()) / "checkpoints")]
        return [(label, folder / self.filename) for label, folder in places]

    def fetch(self, weights_dir: Path | None = None) -> Path:
        torch.hub.load_state_dict_from_url(self.url, progress=True, weights_only=True)
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


def register_weights(spec: WeightSpec) -> WeightSpec:
    _specs[spec.name] = spec
    return spec


def weight_specs() -> dict[str, WeightSpec]:
    from foresight_eval.metrics.registry import metric_classes

    metric_classes()  # importing the metrics registers their weights
    return dict(sorted(_specs.items()))


def get_weight_spec(name: str) -> WeightSpec:
    specs = weight_specs()
    if name not in specs:
        raise UsageError(f"unknown weights {name!r} (known: {', '.join(specs)})")
    return specs[name]


@dataclass
class WeightStatus:
    name: str
    used_by: str
    filename: str
    found_at: Path | None
    searched: list[str]


def weights_status(weights_dir: Path | None = None) -> list[WeightStatus]:
    """For `foresight-eval weights list`: each weight file, where it was looked for and where it is."""
    rows = []
    for spec in weight_specs().values():
        candidates = spec.candidates(weights_dir)
        found = next((path for _, path in candidates if path.exists()), None)
        rows.append(
            WeightStatus(spec.name, spec.used_by, spec.filename, found, [f"{label} {p.parent}" for label, p in candidates])
        )
    return rows


def fetch_weights(name: str, weights_dir: Path | None = None) -> Path:
    """Download through the owning library; without network, one line saying so and where to put the file."""
    spec = get_weight_spec(name)
    try:
        return spec.fetch(weights_dir)
    except OSError as exc:  # urllib's URLError, requests' ConnectionError and the hub's offline errors are OSErrors
        places = "; ".join(f"{label} {path.parent}" for label, path in spec.candidates(weights_dir))
        reason = str(getattr(exc, "reason", None) or exc).splitlines()[0]
        raise UsageError(f"weights fetch {name}: could not download {spec.filename} ({type(exc).__name__}: "
                         f"{reason}); this machine looks offline. Copy the file from a machine that has it "
                         f"into one of: {places}, or a folder given with --weights-dir") from None


# SHA-256 of weight files for the run manifest, remembered by the file's identity and version: hashing
# LPIPS's 233 MiB AlexNet file took 0.21-0.25 s of every run on an H200 host (benchmarks/RESULTS.md).
SHA256_MEMO_FILE = "weight-sha256.json"  # in the cache folder of the run (feature_cache.user_cache_dir)
SHA256_MEMO_ENTRIES = 256  # the most recent ones kept in the file
_sha256_memo: dict[str, str] = {}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _file_version(path: Path) -> str:
    """What identifies one version of a file: its resolved path, size, modification and status-change times
    (ns), inode and device. A rewrite changes the times; the change time cannot be set back by tools such as
    ``touch -d`` that restore a modification time; a file replaced by another has another inode."""
    resolved = Path(path).resolve()
    info = resolved.stat()
    return f"{resolved}|{info.st_size}|{info.st_mtime_ns}|{info.st_ctime_ns}|{info.st_ino}|{info.st_dev}"


def _read_sha256_memo(memo_file: Path) -> dict[str, str]:
    """The remembered digests; a missing, unreadable or foreign file is an empty memo (then rewritten)."""
    try:
        stored = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {key: value for key, value in stored.items()
            if isinstance(key, str) and isinstance(value, str) and _SHA256_HEX.fullmatch(value)}



def weight_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """SHA-256 of a weight file, as :func:`foresight_eval.io.files.sha256_file`, read once per file version
    (:func:`_file_version`): remembered in this process and, with ``cache_dir`` (a run's cache folder,
    ``RunContext.resources["cache_dir"]``; None: ``--no-cache`` or no run), in ``cache_dir/weight-sha256.json``
    (written atomically; a write that fails leaves the run unaffected)."""
    version = _file_version(path)
    if version in _sha256_memo:
        return _sha256_memo[version]
    memo_file = None if cache_dir is None else Path(cache_dir) / SHA256_MEMO_FILE
    stored = {} if memo_file is None else _read_sha256_memo(memo_file)
    digest = stored.get(version)
    if digest is None:
        digest = sha256_file(Path(path))
        if memo_file is not None:
            kept = dict(list({**stored, version: digest}.items())[-SHA256_MEMO_ENTRIES:])
            try:
                write_atomic(memo_file, json.dumps(kept, indent=1) + "\n")
            except OSError:  # a read-only or full cache folder: the digest is still right, only not remembered
                pass
    _sha256_memo[version] = digest
    return digest
