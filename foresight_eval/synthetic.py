"""Deterministic synthetic clips of moving shapes, with their ground-truth boxes and masks, and the
graded degradations that make prediction sets of known quality (used by fixtures/ and the tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CATEGORIES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class SceneObject:
    object_id: int
    category: str
    color: tuple[float, float, float]
    size: float  # radius / half side, pixels
    start: tuple[float, float]  # (x, y) centre at frame 0
    velocity: tuple[float, float]  # pixels per frame


@dataclass
class Scene:
    height: int
    width: int
    background: np.ndarray  # (H, W, 3) float32 in [0, 1]
    objects: list[SceneObject]

    def centre(self, obj: SceneObject, t: float, offset: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
        """Centre at time ``t``; objects bounce off the frame edges, so they stay inside it."""
        coords = []
        for start, velocity, extent, delta in zip(obj.start, obj.velocity, (self.width, self.height), offset):
            low, high = obj.size + 1, extent - obj.size - 2
            span = high - low
            travelled = (start - low + velocity * t + delta) % (2 * span)
            coords.append(low + (travelled if travelled <= span else 2 * span - travelled))
        return coords[0], coords[1]

    def object_mask(self, obj: SceneObject, t: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        cx, cy = self.centre(obj, t, offset)
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        if obj.category == "circle":
            return (xx - cx) ** 2 + (yy - cy) ** 2 <= obj.size**2
        if obj.category == "square":
            return (np.abs(xx - cx) <= obj.size) & (np.abs(yy - cy) <= obj.size)
        # triangle pointing up, inscribed in the square of half side `size`
        return (yy >= cy - obj.size) & (yy <= cy + obj.size) & (np.abs(xx - cx) <= (yy - (cy - obj.size)) / 2)

    def render(self, t: float, offset: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Frame (H, W, 3) float32 and masks (K, H, W) bool at time ``t``; later objects are drawn on top."""
        frame = self.background.copy()
        masks = np.zeros((len(self.objects), self.height, self.width), dtype=bool)
        for k, obj in enumerate(self.objects):
            mask = self.object_mask(obj, t, offset)
            frame[mask] = obj.color
            masks[k] = mask
        for k in range(len(self.objects)):  # visible part only: occluded pixels belong to the top object
            masks[k] &= ~masks[k + 1 :].any(axis=0)
        return frame, masks


def make_scene(seed: int, height: int = 96, width: int = 128, n_objects: int = 3) -> Scene:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0.15, 0.45, size=3).astype(np.float32)
    tilt = rng.uniform(-0.2, 0.2, size=(2, 3)).astype(np.float32)
    frequency = rng.uniform(0.05, 0.15, size=2)
    texture = 0.06 * np.sin(xx * frequency[0]) * np.cos(yy * frequency[1])
    background = base + tilt[0] * xx[..., None] / width + tilt[1] * yy[..., None] / height + texture[..., None]
    objects = []
    for k in range(n_objects):
        size = float(rng.uniform(7, 12))
        objects.append(SceneObject(
            object_id=k + 1,
            category=CATEGORIES[k % len(CATEGORIES)],
            color=tuple(float(c) for c in rng.uniform(0.55, 0.95, size=3)),
            size=size,
            start=(float(rng.uniform(size + 2, width - size - 3)), float(rng.uniform(size + 2, height - size - 3))),
            velocity=(float(rng.uniform(-3, 3)), float(rng.uniform(-2.5, 2.5))),
        ))
    return Scene(height, width, np.clip(background, 0, 1).astype(np.float32), objects)


def render_clip(scene: Scene, n_frames: int, offset: tuple[float, float] = (0.0, 0.0), start: int = 0):
    """Frames (T, H, W, 3) float32 and masks (T, K, H, W) bool for times start..start+T-1."""
    rendered = [scene.render(t, offset) for t in range(start, start + n_frames)]
    return np.stack([f for f, _ in rendered]), np.stack([m for _, m in rendered])


def boxes_from_masks(masks: np.ndarray) -> list[list[list[float] | None]]:
    """COCO-style [x, y, w, h] per frame and object (None where the object is hidden): (T, K, H, W) in."""
    boxes = []
    for frame_masks in masks:
        row = []
        for mask in frame_masks:
            ys, xs = np.nonzero(mask)
            row.append(None if xs.size == 0 else
                       [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)])
        boxes.append(row)
    return boxes


# Graded degradations of the horizon frames (context frames stay exact copies).
def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(frames, sigma=(0, sigma, sigma, 0)).astype(np.float32)


def add_noise(frames: np.ndarray, std: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, std, size=frames.shape)
    return np.clip(frames + noise, 0, 1).astype(np.float32)


def drop_frame(frames: np.ndarray, index: int) -> np.ndarray:
    """Remove frame ``index``; the last frame repeats so the length stays the same."""
    return np.concatenate([frames[:index], frames[index + 1 :], frames[-1:]])


def freeze_from(frames: np.ndarray, index: int) -> np.ndarray:
    """Every frame from ``index`` on shows frame ``index``."""
    frozen = frames.copy()
    frozen[index:] = frames[index]
    return frozen


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def camera_like_clip(seed: int, n_frames: int, height: int = 360, width: int = 640) -> np.ndarray:
    """Frames (T, H, W, 3) float32 in [0, 1] closer to camera footage than :func:`make_scene`'s flat shapes:
    a textured background of several spatial scales (dense edges, as real scenes have) that pans slowly,
    moving shapes on it, and sensor noise. For speed benchmarks and parity tests on real-like content."""
    rng = np.random.default_rng(seed)
    margin = 2 * n_frames + 8
    big = (height + 2 * margin, width + 2 * margin)
    texture = np.zeros(big + (3,), np.float32)
    for scale, weight in ((24.0, 0.35), (6.0, 0.15), (1.5, 0.03)):
        layer = ndimage.gaussian_filter(rng.normal(size=big + (3,)).astype(np.float32), (scale, scale, 0))
        texture += weight * layer / (layer.std() + 1e-8)
    texture = 0.45 + 0.5 * texture
    scene = make_scene(seed, height=height, width=width, n_objects=4)
    pan = rng.uniform(-1.5, 1.5, size=2)
    frames = []
    for t in range(n_frames):
        y0, x0 = (margin + np.rint(pan * t)).astype(int)
        scene.background = texture[y0:y0 + height, x0:x0 + width]
        frame, _ = scene.render(t)
        frames.append(frame + rng.normal(0.0, 0.01, size=frame.shape))
    return np.clip(np.stack(frames), 0, 1).astype(np.float32)
