"""The run manifest: what produced a run's numbers (tool and package versions, device, command, inputs)."""

from __future__ import annotations

import functools
import os
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import torch

RECORDED_PACKAGES = (
    "foresight-eval", "torch", "torchvision", "numpy", "scipy", "scikit-image",
    "torchmetrics", "lpips", "av", "pillow",
    # Optional: None where not installed. OpenCV ships under several distribution names.
    "opencv-python", "opencv-python-headless", "opencv-contrib-python", "pycocotools",
    "transformers", "diffusers", "safetensors", "huggingface-hub",
)


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None: not installed), looked up once per process: the look-up
    scans every folder of ``sys.path`` (10-15 ms per run), and a package upgraded while a process runs is
    still the version that process imported."""
    return {name: _installed_version(name) for name in names}


@functools.lru_cache(maxsize=None)
def _installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()})"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_manifest(device: torch.device, command: str | None, started: str, finished: str, inputs: dict,
                   metrics: tuple[str, ...] | list[str] = ()) -> dict:
    """``metrics``: the metrics that ran; the plugin distributions providing any of them are recorded
    with their versions under ``plugins``."""
    from foresight_eval.metrics.registry import plugin_distributions

    return {
        "tool": "foresight-eval",
        "version": package_versions(("foresight-eval",))["foresight-eval"],
        "command": command if command is not None else " ".join(sys.argv),
        "cwd": os.getcwd(),  # relative input paths in the run's files are relative to this folder
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "plugins": plugin_distributions(metrics),
        "device": describe_device(device),
        "torch_threads": torch.get_num_threads(),
        "started": started,
        "finished": finished,
        "inputs": inputs,
    }
