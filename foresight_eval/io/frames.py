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
    """A folder of png/jpg files, one frame each, in natural sort order (frame2 before frame10).

    Every file's header is checked on opening, so that a file that is no image is reported as such,
    not as a frame count that differs from the reference's.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.files = natsorted(
            (p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.name,
        )
        if not self.files:
            raise InputError(f"{self.path}: folder has no png/jpg frames")
        for file in self.files:
            with _open_image(file):
                pass

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def frames(self) -> Iterator[np.ndarray]:
        for file in self.files:
            yield as_rgb_frame(read_image(file), str(file))


def _open_image(file: Path) -> Image.Image:
    try:
        return Image.open(file)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{file}: unreadable image ({exc})") from exc


def read_image(file: Path) -> np.ndarray:
    """One image file as (H, W) or (H, W, 3): uint8, or float32 in [0, 1] for 16-bit images.

    Palette, grey + alpha, RGBA and bilevel images become RGB (alpha dropped). 16-bit PNGs keep their
    precision: Pillow would cut RGB ones to their high byte and clip grey ones at 255, so they are
    decoded by OpenCV and scaled by 1/65535 (the 16-bit form of an 8-bit picture, v * 257, then equals
    the 8-bit frame v / 255 exactly). 32-bit integer or float images have no defined white and are refused.
    """
    try:
        with _open_image(file) as image:
            rawmode = image.tile[0].args if image.tile else ""
            rawmode = rawmode[0] if isinstance(rawmode, tuple) and rawmode else rawmode
            if image.mode.startswith("I;16") or (isinstance(rawmode, str) and ";16" in rawmode):
                return _read_16bit(file)
            if image.mode in ("I", "F"):
                raise InputError(f"{file}: {image.mode} (32-bit) images are not supported; use 8- or 16-bit frames")
            return np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{file}: unreadable image ({exc})") from exc


def _read_16bit(file: Path) -> np.ndarray:
    import cv2

    array = cv2.imdecode(np.fromfile(file, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise InputError(f"{file}: unreadable 16-bit image")
    if array.ndim == 3:  # OpenCV's channel order is BGR(A); grey + alpha comes as BGRA too
        array = array[:, :, 2::-1]
    return array.astype(np.float32) / np.float32(65535)
