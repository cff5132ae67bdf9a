"""Frame normalisation shared by every reader, and the reader for folders of image files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from natsort import natsorted
from PIL import Image, UnidentifiedImageError

from foresight_eval.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def as_rgb_frame(frame: np.ndarray, source: str) -> np.ndarray:
    """Check one frame and return it as (H, W, 3): uint8, or float32 in [0, 1].

    Grey frames (H, W) or (H, W, 1) are repeated to three channels; an alpha channel is dropped.
    Float frames must be finite and inside [0, 1]: anything else is refused rather than clipped,
    because a silently clipped frame gives a plausible but wrong score.
    """
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise InputError(f"{source}: frame shape {tuple(frame.shape)} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(f"{source}: frame has zero size {tuple(frame.shape)}")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if frame.dtype == np.uint8:
        return frame
    if np.issubdtype(frame.dtype, np.floating):
        frame = frame.astype(np.float32, copy=False)
        if not np.isfinite(frame).all():
            raise InputError(f"{source}: frame contains NaN or infinite values")
        low, high = float(frame.min()), float(frame.max())
        if low < 0.0 or high > 1.0:
            raise InputError(f"{source}: float frame values span [{low:.4g}, {high:.4g}], expected [0, 1]")
        return frame
    raise InputError(f"{source}: dtype {frame.dtype} not supported (use uint8, or float in [0, 1])")


class FrameFolderReader:
    """A folder of png/jpg files, one frame each, in natural sort order (frame2 before frame10)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.files = natsorted(
            (p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.name,
        )
        if not self.files:
            raise InputError(f"{self.path}: folder has no png/jpg frames")

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def frames(self) -> Iterator[np.ndarray]:
        for file in self.files:
            try:
                with Image.open(file) as image:
                    array = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
            except (UnidentifiedImageError, OSError) as exc:
                raise InputError(f"{file}: unreadable image ({exc})") from exc
            yield as_rgb_frame(array, str(file))
