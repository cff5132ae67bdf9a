"""Finding clips under a folder and opening each with the reader its format needs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from foresight_eval.errors import InputError
from foresight_eval.io.arrays import ARRAY_SUFFIXES, ArrayReader
from foresight_eval.io.files import special_file_kind
from foresight_eval.io.frames import IMAGE_SUFFIXES, FrameFolderReader
from foresight_eval.io.video import VIDEO_SUFFIXES, VideoReader

log = logging.getLogger(__name__)
CLIP_FILE_SUFFIXES = VIDEO_SUFFIXES | ARRAY_SUFFIXES
# Per-clip annotation files live beside the clips and must not be taken for clips themselves.
SIDECAR_MARKERS = (".masks", ".boxes", ".latents", ".detections")


class ClipReader(Protocol):
    path: Path

    @property
    def num_frames(self) -> int | None: ...

    def frames(self) -> Iterator[np.ndarray]:
        """Yield frames (H, W, 3), uint8 or float32 in [0, 1], one at a time."""
        ...


@dataclass(frozen=True)
class ClipSource:
    """A clip found on disk: its pairing key (relative path, no extension) and where it lives."""

    key: str
    path: Path

    @property
    def kind(self) -> str:
        if self.path.is_dir():
            return "frames"
        return "array" if self.path.suffix.lower() in ARRAY_SUFFIXES else "video"


def open_clip(path: Path, *, timestamps: bool = False) -> ClipReader:
    """The reader of a clip file or frame folder. ``timestamps``: a video's frame timestamps are read when it is
    opened, in the same pass (:class:`.video.VideoReader`); frame folders and arrays have none to read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: does not exist")
    if path.is_dir():
        return FrameFolderReader(path)
    if not path.is_file():  # only regular files are opened: reading a FIFO would wait forever
        raise InputError(f"{path}: {special_file_kind(path.stat().st_mode) or 'special file'}, not a regular file")
    suffix = path.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        return ArrayReader(path)
    if suffix in VIDEO_SUFFIXES:
        return VideoReader(path, timestamps=timestamps)
    raise InputError(f"{path}: unsupported file type {suffix!r}")


def _is_sidecar(name: str) -> bool:
    stem = name.rsplit(".", 1)[0]
    return any(stem.endswith(marker) for marker in SIDECAR_MARKERS)


def _clip_key(relative: Path) -> str:
    if relative.suffix.lower() in CLIP_FILE_SUFFIXES:
        relative = relative.with_suffix("")
    return relative.as_posix()


def discover_clips(root: Path) -> list[ClipSource]:
    """Every clip under ``root``: video and array files, and folders of images (without subfolders).

    An empty folder counts as a frame folder too, so that an empty prediction folder becomes an error
    row for its clip instead of silently vanishing. Hidden files and folders are skipped.
    A single clip path (a file, or a folder of frames) is returned as one clip keyed by its name.

    Symbolic links are followed, to files and folders alike, wherever they point (a tree of links into
    a dataset is common); a link to a folder already walked (a loop) or a link that cannot be resolved
    is skipped, and each skipped one is reported on the ``foresight_eval.io.clips`` logger (stderr).
    A broken link named like a clip is kept: it becomes that clip's error row.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(root)
    if root.is_file() or _is_frame_folder(root):
        return [ClipSource(key=_clip_key(Path(root.name)), path=root)]
    clips: list[ClipSource] = []
    walked: set[Path] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        here = Path(directory)
        walked.add(here.resolve())
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and _walkable(here / d, walked))
        if here != root and not subdirs and (_is_frame_folder(here) or not any(here.iterdir())):
            clips.append(ClipSource(key=here.relative_to(root).as_posix(), path=here))
            continue
        for name in sorted(files):
            if name.startswith(".") or _is_sidecar(name):
                continue
            if Path(name).suffix.lower() in CLIP_FILE_SUFFIXES:
                clips.append(ClipSource(key=_clip_key((here / name).relative_to(root)), path=here / name))
    return sorted(clips, key=lambda clip: clip.key)


def _walkable(folder: Path, walked: set[Path]) -> bool:
    if not folder.is_symlink():
        return True
    try:
        target = folder.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of links, before Python 3.13
        log.warning("skipped %s: symbolic link that cannot be resolved (%s)", folder, exc)
        return False
    if target in walked:
        log.warning("skipped %s: symbolic link to %s, a folder already walked (a loop)", folder, target)
        return False
    return True


def _is_frame_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    has_images = any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
    return has_images and not any(p.is_dir() for p in entries)
