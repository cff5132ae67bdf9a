"""Clips stored as .npy / .npz arrays shaped (T, H, W, C); never unpickled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from foresight_eval.errors import InputError
from foresight_eval.io.frames import as_rgb_frame

ARRAY_SUFFIXES = frozenset({".npy", ".npz"})


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    """Load one array from .npy (memory-mapped, so frames are read as they are used) or .npz.

    An .npz must hold exactly one array, or one named ``frames`` / ``video``.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            for preferred in ("frames", "video"):
                if preferred in names:
                    return archive[preferred]
            if len(names) != 1:
                raise InputError(f"{path}: npz holds {names or 'no arrays'}; expected one array or one named 'frames'")
            return archive[names[0]]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise InputError(f"{path}: array holds Python objects (pickled data), refused") from exc
        raise InputError(f"{path}: not a readable array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable array ({exc})") from exc


class ArrayReader:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.array = load_array(self.path)
        if self.array.ndim not in (3, 4):
            raise InputError(f"{self.path}: array shape {self.array.shape} is not (T, H, W) or (T, H, W, C)")
        if self.array.shape[0] == 0:
            raise InputError(f"{self.path}: array has zero frames")

    @property
    def num_frames(self) -> int:
        return int(self.array.shape[0])

    def frames(self) -> Iterator[np.ndarray]:
        for index in range(self.array.shape[0]):
            yield as_rgb_frame(np.asarray(self.array[index]), f"{self.path} frame {index}")
