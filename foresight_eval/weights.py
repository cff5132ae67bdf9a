"""Where metric weights are looked up, listed and (only on request) downloaded.

Scoring never touches the network. Each weight file is searched, in order, in ``--weights-dir``,
``$FORESIGHT_WEIGHTS`` and its owning library's standard cache. ``foresight-eval weights fetch NAME``
is the one command that downloads, through the owning library's own download function.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch

from foresight_eval.errors import UsageError, WeightsNotFound

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
    def fetch(self) -> Path:
        """Download into the standard cache through the owning library; return the path."""


@dataclass(frozen=True)
class TorchvisionCheckpoint(WeightSpec):
    """An ImageNet checkpoint under torchvision's own file name, cached in ``$TORCH_HOME/hub/checkpoints``."""

    name: str
    used_by: str
    weights_enum: str  # e.g. "AlexNet_Weights.IMAGENET1K_V1"

    def _weights(self):
        import torchvision

        enum_name, member = self.weights_enum.split(".")
        return getattr(getattr(torchvision.models, enum_name), member)

    @property
    def filename(self) -> str:
        return os.path.basename(self._weights().url)

    def candidates(self, weights_dir: Path | None) -> list[tuple[str, Path]]:
        places = user_weight_dirs(weights_dir)
        places.append(("torch hub cache", Path(torch.hub.get_dir()) / "checkpoints"))
        return [(label, folder / self.filename) for label, folder in places]

    def fetch(self) -> Path:
        self._weights().get_state_dict(progress=True)
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


_specs: dict[str, WeightSpec] = {}


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


def fetch_weights(name: str) -> Path:
    return get_weight_spec(name).fetch()
