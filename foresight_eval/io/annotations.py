"""Reference annotations, predicted detections and predicted masks: readers with strict validation.

Frames are identified by the clip's **video key** (its path relative to the references root, without
extension: the key clip pairing uses, e.g. ``a/clip01``) and its **frame index** (0-based, counting
every frame of the clip file, context frames included). Prediction and reference frames with the same
index are the same moment, so one reference image id serves both.

Reference annotations (``--ref-annotations``), either

* a COCO JSON file whose images are frames of the reference clips; each image carries two extra
  fields, ``video`` and ``frame``::

      {"images": [{"id": 1, "video": "clip00", "frame": 0, "width": 128, "height": 96}],
       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x, y, w, h],
                        "segmentation": {"size": [96, 128], "counts": "..."}}],
       "categories": [{"id": 1, "name": "circle"}]}

  ``segmentation`` (RLE, compressed or not, or polygons) is optional; ``area`` defaults to the mask
  area (else ``w * h``) and ``iscrowd`` to 0. An image without annotations is a frame with no object.
  ``iscrowd: 1`` marks a crowd region: COCO mAP treats it as COCOeval does (an ignore region: a
  detection on it is neither a true nor a false positive); ``box_iou`` and ``mask_iou`` leave it out.
* or a folder of per-clip sidecars, ``<video>.boxes.json`` and optionally ``<video>.masks.npz``
  (the format ``fixtures/generate.py`` writes)::

      {"video": "clip00", "width": 128, "height": 96,
       "categories": [{"id": 1, "name": "circle"}],
       "frames": [{"frame": 0, "objects": [{"id": 1, "category": "circle", "bbox": [x, y, w, h]}]}]}

  ``category`` is a category name or id; ``masks.npz`` holds ``masks`` (T, K, H, W) bool and
  ``object_ids`` (K,), the object ``id`` of each mask.

Predicted detections (``--pred-detections``): a COCO results JSON list, each entry
``{"image_id", "category_id", "bbox", "score"}`` plus optional ``segmentation``; instead of
``image_id`` an entry may name its frame with ``"video"`` and ``"frame"``.

Predicted masks (``--pred-masks``): a folder of ``<video>.masks.npz`` (same format as the reference
sidecars; e.g. the predictions folder itself), or a COCO results JSON whose entries all carry
``segmentation``.

Boxes are taken as COCOeval takes them: partly outside the frame, or of zero width or height (IoU 0
with every box), they are scored as given; a box wholly outside its frame or of negative size is
refused. Every check names the file and the entry: such a box, an unknown image, video or frame, an
unknown category, a mask of the wrong size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from foresight_eval.errors import InputError, UsageError, field_ref
from foresight_eval.io.files import input_file_hashes

BOXES_SUFFIX, MASKS_SUFFIX = ".boxes.json", ".masks.npz"


class AnnotationError(UsageError):
    """An annotation, detection or mask file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class FrameObject:
    """One annotated or detected object in one frame."""

    category_id: int
    bbox: tuple[float, float, float, float]  # COCO [x, y, w, h], pixels
    segmentation: Any = None  # COCO RLE dict or polygon list; None when the object has no mask
    score: float = 1.0
    area: float | None = None  # as given in a COCO file; None: the mask's area, else the box's
    iscrowd: bool = False  # a COCO crowd region: an ignore region for mAP, not an object to match


@dataclass
class ReferenceAnnotations:
    """Reference objects per frame, and the same content as a COCO dataset dict for pycocotools."""

    source: Path
    categories: dict[int, str]
    image_ids: dict[tuple[str, int], int]  # (video, frame) -> image id
    image_sizes: dict[int, tuple[int, int]]  # image id -> (height, width)
    objects: dict[int, list[FrameObject]]
    coco_dataset: dict[str, Any] = field(repr=False)

    @property
    def videos(self) -> set[str]:
        return {video for video, _ in self.image_ids}

    @property
    def has_masks(self) -> bool:
        return any(obj.segmentation is not None for objs in self.objects.values() for obj in objs)

    def image_id(self, video: str, frame: int, size: tuple[int, int] | None = None) -> int:
        """The image id of a scored frame; an InputError (one error row) when it is not annotated or
        its annotated size differs from the frame's ``size`` (height, width)."""
        image_id = self.image_ids.get((video, frame))
        if image_id is None:
            if video not in self.videos:
                raise InputError(f"{self.source}: no annotations for video {video!r}")
            raise InputError(f"{self.source}: video {video!r} has no annotated frame {frame} "
                             "(every scored frame of an annotated video needs an image entry)")
        if size is not None and self.image_sizes[image_id] != tuple(size):
            (ah, aw), (fh, fw) = self.image_sizes[image_id], size
            raise InputError(f"{self.source}: {video!r} frame {frame} is annotated as {aw}x{ah}, the frame is {fw}x{fh}")
        return image_id


@dataclass
class Detections:
    """Validated COCO results; ``entries`` are ready for ``COCO.loadRes`` (every entry has image_id)."""

    source: Path
    annotations: ReferenceAnnotations
    entries: list[dict[str, Any]]
    by_image: dict[int, list[FrameObject]]

    @property
    def has_masks(self) -> bool:
        return bool(self.entries) and all("segmentation" in entry for entry in self.entries)

    def frame_masks(self, video: str, frame: int, height: int, width: int, min_score: float = 0.0) -> np.ndarray:
        """(K, H, W) bool masks of the detections in one frame with score >= ``min_score``."""
        image_id = self.annotations.image_id(video, frame, (height, width))
        objects = [obj for obj in self.by_image.get(image_id, []) if obj.score >= min_score]
        return decode_masks(objects, height, width)


@dataclass
class MaskSidecars:
    """Predicted masks from ``<root>/<video>.masks.npz``, loaded one clip at a time."""

    root: Path
    _cached: tuple[str, np.ndarray] | None = field(default=None, repr=False)

    def frame_masks(self, video: str, frame: int, height: int, width: int, min_score: float = 0.0) -> np.ndarray:
        path = self.root / f"{video}{MASKS_SUFFIX}"
        if self._cached is None or self._cached[0] != video:
            if not path.is_file():
                raise InputError(f"{path}: no predicted masks for video {video!r}")
            self._cached = (video, load_mask_sidecar(path)[0])
        masks = self._cached[1]
        if frame >= masks.shape[0]:
            raise InputError(f"{path}: holds {masks.shape[0]} frames, frame {frame} is scored")
        if masks.shape[2:] != (height, width):
            raise InputError(f"{path}: masks are {masks.shape[3]}x{masks.shape[2]}, the frame is {width}x{height}")
        return masks[frame]


PredictedMasks = Detections | MaskSidecars


def decode_masks(objects: list[FrameObject], height: int, width: int) -> np.ndarray:
    """(K, H, W) bool masks of objects' segmentations (RLE or polygons)."""
    if not objects:
        return np.zeros((0, height, width), dtype=bool)
    if any(obj.segmentation is None for obj in objects):
        raise InputError("an object without a segmentation has no mask")
    rles = [decode_rle(obj.segmentation, height, width) for obj in objects]
    return np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool)


# --- validation helpers ---------------------------------------------------------------------------

def _fail(path: Path, where: str, problem: str) -> AnnotationError:
    return AnnotationError(f"{path}: {where}: {problem}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AnnotationError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path}: not readable JSON ({exc})") from exc


def _require(entry: Any, keys: tuple[str, ...], path: Path, where: str) -> None:
    if not isinstance(entry, dict):
        raise _fail(path, where, f"expected a JSON object, got {type(entry).__name__}")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise _fail(path, where, f"missing field {missing[0]!r}")


def _list(value: Any, path: Path, where: str) -> list:
    if not isinstance(value, list):
        raise _fail(path, where, f"expected a JSON list, got {type(value).__name__}")
    return value


def _int(value: Any, path: Path, where: str, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise _fail(path, where, f"{name} must be an integer{bound}, got {value!r}")
    return value


def _check_bbox(bbox: Any, height: int, width: int, path: Path, where: str) -> tuple[float, float, float, float]:
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
        raise _fail(path, where, f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise _fail(path, where, f"bbox {list(bbox)} has a negative width or height")
    # COCOeval scores boxes partly outside the image as given; one wholly outside is a coordinate mistake.
    if x > width or y > height or x + w < 0 or y + h < 0:
        raise _fail(path, where, f"bbox {list(bbox)} lies wholly outside the {width}x{height} frame")
    return x, y, w, h


def _check_segmentation(segmentation: Any, height: int, width: int, path: Path, where: str) -> Any:
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise _fail(path, where, "RLE segmentation needs 'size' and 'counts'")
        if not isinstance(segmentation["size"], list) or segmentation["size"] != [height, width]:
            raise _fail(path, where, f"segmentation size {segmentation['size']} is not the frame's [{height}, {width}]")
        return segmentation
    if isinstance(segmentation, list) and segmentation and all(
            isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0 for poly in segmentation):
        return segmentation
    raise _fail(path, where, "segmentation must be an RLE {size, counts} or a list of polygons [x1, y1, x2, y2, ...]")


def _check_category(category_id: Any, categories: dict[int, str], path: Path, where: str) -> int:
    if isinstance(category_id, bool) or not isinstance(category_id, int) or category_id not in categories:
        raise _fail(path, where, f"unknown category_id {category_id!r} (categories: {sorted(categories)})")
    return category_id


def _categories(raw: Any, path: Path, where: str = "categories") -> dict[int, str]:
    if not isinstance(raw, list) or not raw:
        raise _fail(path, where, "expected a non-empty list of {id, name}")
    categories: dict[int, str] = {}
    for index, entry in enumerate(raw):
        at = f"{where}[{index}]"
        _require(entry, ("id", "name"), path, at)
        category_id = _int(entry["id"], path, at, "id")
        if category_id in categories:
            raise _fail(path, at, f"duplicate category id {category_id}")
        categories[category_id] = str(entry["name"])
    return categories


def _assemble(source: Path, categories: dict[int, str], images: list[dict[str, Any]],
              objects: dict[int, list[FrameObject]]) -> ReferenceAnnotations:
    """Build the validated annotations and their COCO dataset dict (``area`` and ``iscrowd`` filled in)."""
    annotations = []
    for image in images:
        for obj in objects[image["id"]]:
            x, y, w, h = obj.bbox
            area = obj.area
            if area is None:
                area = float(mask_utils.area(decode_rle(obj.segmentation, image["height"], image["width"]))) \
                    if obj.segmentation is not None else w * h
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": obj.category_id,
                                "bbox": list(obj.bbox), "area": area, "iscrowd": int(obj.iscrowd),
                                **({"segmentation": obj.segmentation} if obj.segmentation is not None else {})})
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": cid, "name": name} for cid, name in sorted(categories.items())]}
    return ReferenceAnnotations(
        source=source, categories=categories,
        image_ids={(image["video"], image["frame"]): image["id"] for image in images},
        image_sizes={image["id"]: (image["height"], image["width"]) for image in images},
        objects=objects, coco_dataset=dataset,
    )


def decode_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One compressed RLE for an RLE or polygon segmentation."""
    if isinstance(segmentation, dict) and not isinstance(segmentation.get("counts"), list):
        return segmentation
    rle = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.merge(rle) if isinstance(rle, list) else rle


# --- readers --------------------------------------------------------------------------------------

def load_coco_annotations(path: Path) -> ReferenceAnnotations:
    """Reference annotations from a COCO JSON file whose images carry ``video`` and ``frame``."""
    path = Path(path)
    data = _read_json(path)
    _require(data, ("images", "annotations", "categories"), path, "top level")
    categories = _categories(data["categories"], path)
    images, seen_frames = [], {}
    objects: dict[int, list[FrameObject]] = {}
    for index, image in enumerate(_list(data["images"], path, "images")):
        at = f"images[{index}]"
        _require(image, ("id", "video", "frame", "width", "height"), path, at)
        image_id = _int(image["id"], path, at, "id")
        if image_id in objects:
            raise _fail(path, at, f"duplicate image id {image_id}")
        if not isinstance(image["video"], str) or not image["video"]:
            raise _fail(path, at, f"video must be the clip's relative path without extension, got {image['video']!r}")
        frame = _int(image["frame"], path, at, "frame", minimum=0)
        key = (image["video"].replace("\\", "/"), frame)
        if key in seen_frames:
            raise _fail(path, at, f"video {key[0]!r} frame {frame} is also images[{seen_frames[key]}]")
        seen_frames[key] = index
        width = _int(image["width"], path, at, "width", minimum=1)
        height = _int(image["height"], path, at, "height", minimum=1)
        images.append({**image, "id": image_id, "video": key[0], "frame": frame, "width": width, "height": height})
        objects[image_id] = []
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    for index, ann in enumerate(_list(data["annotations"], path, "annotations")):
        at = f"annotations[{index}]"
        _require(ann, ("image_id", "category_id", "bbox"), path, at)
        if _int(ann["image_id"], path, at, "image_id") not in sizes:
            raise _fail(path, at, f"unknown image_id {ann['image_id']!r}")
        height, width = sizes[ann["image_id"]]
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            raise _fail(path, at, f"iscrowd must be 0 or 1, got {iscrowd!r}")
        segmentation = ann.get("segmentation")
        if segmentation is not None:
            segmentation = _check_segmentation(segmentation, height, width, path, at)
        area = ann.get("area")
        if area is not None and (isinstance(area, bool) or not isinstance(area, (int, float)) or not area >= 0):
            raise _fail(path, at, f"area must be a number >= 0, got {area!r}")
        objects[ann["image_id"]].append(FrameObject(
            category_id=_check_category(ann["category_id"], categories, path, at),
            bbox=_check_bbox(ann["bbox"], height, width, path, at),
            segmentation=segmentation,
            area=None if area is None else float(area),
            iscrowd=bool(iscrowd),
        ))
    return _assemble(path, categories, images, objects)


def load_mask_sidecar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``masks`` (T, K, H, W) bool and ``object_ids`` (K,) from a ``.masks.npz`` (never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "masks" not in archive.files:
                raise AnnotationError(f"{path}: no array named 'masks' (found {archive.files})")
            masks = archive["masks"]
            ids = archive["object_ids"] if "object_ids" in archive.files else np.arange(1, masks.shape[1] + 1)
    except (OSError, ValueError, EOFError) as exc:
        raise AnnotationError(f"{path}: not a readable .npz of masks ({exc})") from exc
    if masks.ndim != 4 or ids.shape != (masks.shape[1],):
        raise AnnotationError(f"{path}: masks must be (T, K, H, W) with object_ids (K,); "
                              f"got {masks.shape} and {ids.shape}")
    return masks.astype(bool, copy=False), ids


def _sidecar_images(path: Path, key: str, categories: dict[int, str]) -> tuple[list[dict], list[list[FrameObject]]]:
    data = _read_json(path)
    _require(data, ("width", "height", "frames"), path, "top level")
    if data.get("video", key) != key:
        raise _fail(path, "video", f"{data['video']!r} is not the clip key {key!r} given by the file's path")
    width = _int(data["width"], path, "width", "width", minimum=1)
    height = _int(data["height"], path, "height", "height", minimum=1)
    by_name = {name: cid for cid, name in categories.items()}
    masks_path = path.with_name(path.name[: -len(BOXES_SUFFIX)] + MASKS_SUFFIX)
    masks, mask_index = None, {}
    if masks_path.is_file():
        masks, ids = load_mask_sidecar(masks_path)
        if masks.shape[2:] != (height, width):
            raise AnnotationError(f"{masks_path}: masks are {masks.shape[3]}x{masks.shape[2]}, "
                                  f"{path.name} says {width}x{height}")
        mask_index = {int(i): k for k, i in enumerate(ids)}
    images, objects, seen = [], [], set()
    for index, frame_entry in enumerate(_list(data["frames"], path, "frames")):
        at = f"frames[{index}]"
        _require(frame_entry, ("frame", "objects"), path, at)
        frame = _int(frame_entry["frame"], path, at, "frame", minimum=0)
        if frame in seen:
            raise _fail(path, at, f"frame {frame} is listed twice")
        seen.add(frame)
        frame_objects = []
        for obj_index, obj in enumerate(_list(frame_entry["objects"], path, f"{at}.objects")):
            where = f"{at}.objects[{obj_index}]"
            _require(obj, ("category", "bbox"), path, where)
            category = obj["category"]
            category = by_name.get(category, category) if isinstance(category, str) else category
            segmentation = None
            if masks is not None:
                if not isinstance(obj.get("id"), int) or obj["id"] not in mask_index:
                    raise _fail(path, where, f"object id {obj.get('id')!r} has no mask in {masks_path.name}")
                if frame >= masks.shape[0]:
                    raise _fail(path, where, f"frame {frame} is beyond the {masks.shape[0]} frames of {masks_path.name}")
                segmentation = mask_utils.encode(np.asfortranarray(masks[frame, mask_index[obj["id"]]].astype(np.uint8)))
            frame_objects.append(FrameObject(
                category_id=_check_category(category, categories, path, where),
                bbox=_check_bbox(obj["bbox"], height, width, path, where),
                segmentation=segmentation,
            ))
        images.append({"video": key, "frame": frame, "width": width, "height": height})
        objects.append(frame_objects)
    return images, objects


def load_sidecar_annotations(root: Path) -> ReferenceAnnotations:
    """Reference annotations from every ``<video>.boxes.json`` (and ``.masks.npz``) under ``root``."""
    root = Path(root)
    files = sorted(root.rglob(f"*{BOXES_SUFFIX}"))
    if not files:
        raise AnnotationError(f"{root}: no {BOXES_SUFFIX} sidecar files found")
    categories: dict[int, str] = {}
    images, objects = [], {}
    for path in files:
        key = path.relative_to(root).as_posix()[: -len(BOXES_SUFFIX)]
        for cid, name in _categories(_read_json(path).get("categories"), path).items():
            if categories.setdefault(cid, name) != name:
                raise _fail(path, "categories", f"category {cid} is {name!r} here, {categories[cid]!r} in another sidecar")
        for image, frame_objects in zip(*_sidecar_images(path, key, categories)):
            image["id"] = len(images) + 1
            images.append(image)
            objects[image["id"]] = frame_objects
    return _assemble(root, categories, images, objects)


def load_reference_annotations(path: Path) -> ReferenceAnnotations:
    """A COCO JSON file, or a folder of per-clip sidecars."""
    path = Path(path)
    if path.is_dir():
        return load_sidecar_annotations(path)
    return load_coco_annotations(path)


def load_detections(path: Path, annotations: ReferenceAnnotations) -> Detections:
    """Predicted detections (COCO results JSON) checked against the reference annotations' frames."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise _fail(path, "top level", "expected a JSON list of detections (COCO results format)")
    known_ids = set(annotations.image_sizes)
    entries, by_image = [], {image_id: [] for image_id in known_ids}
    for index, det in enumerate(data):
        at = f"[{index}]"
        _require(det, ("category_id", "bbox", "score"), path, at)
        if "image_id" in det:
            image_id = _int(det["image_id"], path, at, "image_id")
            if image_id not in known_ids:
                raise _fail(path, at, f"unknown image_id {image_id!r} (not an image of {annotations.source})")
        elif "video" in det and "frame" in det:
            if not isinstance(det["video"], str):
                raise _fail(path, at, f"video must be the clip's relative path without extension, got {det['video']!r}")
            image_id = annotations.image_ids.get((det["video"], _int(det["frame"], path, at, "frame", minimum=0)))
            if image_id is None:
                problem = "unknown video" if det["video"] not in annotations.videos else "unannotated frame of video"
                raise _fail(path, at, f"{problem} {det['video']!r} frame {det['frame']!r} (in {annotations.source})")
        else:
            raise _fail(path, at, "needs image_id, or video and frame")
        height, width = annotations.image_sizes[image_id]
        score = det["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise _fail(path, at, f"score must be a finite number, got {score!r}")
        obj = FrameObject(
            category_id=_check_category(det["category_id"], annotations.categories, path, at),
            bbox=_check_bbox(det["bbox"], height, width, path, at),
            segmentation=(_check_segmentation(det["segmentation"], height, width, path, at)
                          if "segmentation" in det else None),
            score=float(score),
        )
        by_image[image_id].append(obj)
        entries.append({"image_id": image_id, "category_id": obj.category_id, "bbox": list(obj.bbox),
                        "score": obj.score, **({"segmentation": obj.segmentation} if obj.segmentation else {})})
    return Detections(source=path, annotations=annotations, entries=entries, by_image=by_image)


def load_pred_masks(path: Path, annotations: ReferenceAnnotations | None) -> PredictedMasks:
    """A folder of ``<video>.masks.npz``, or a COCO results JSON whose entries all have a segmentation."""
    path = Path(path)
    if path.is_dir():
        return MaskSidecars(path)
    if annotations is None:
        raise UsageError(f"{field_ref('pred_masks', path)}: a COCO results file names reference images, so it needs "
                         f"{field_ref('ref_annotations')}")
    detections = load_detections(path, annotations)
    if not detections.has_masks:
        raise AnnotationError(f"{path}: --pred-masks needs a 'segmentation' in every entry")
    return detections


def load_spatial_resources(ref_annotations: Path | None = None, pred_detections: Path | None = None,
                           pred_masks: Path | None = None) -> dict[str, Any]:
    """The ``RunContext.resources`` the spatial metrics read: "annotations", "detections", "pred_masks";
    and "input_files", the hashes of those inputs that the run's manifest records beside the clips'."""
    given = {"annotations": ref_annotations, "detections": pred_detections, "masks": pred_masks}
    resources: dict[str, Any] = {"input_files": {key: input_file_hashes(path) for key, path in given.items()
                                                 if path is not None}}
    annotations = _checked(load_reference_annotations, ref_annotations) if ref_annotations is not None else None
    if annotations is not None:
        resources["annotations"] = annotations
    if pred_detections is not None:
        if annotations is None:
            raise UsageError(f"{field_ref('pred_detections')} needs {field_ref('ref_annotations')} (detections name reference frames)")
        resources["detections"] = _checked(load_detections, pred_detections, annotations)
    if pred_masks is not None:
        resources["pred_masks"] = _checked(load_pred_masks, pred_masks, annotations)
    return resources


def _checked(load: Any, path: Path, *args: Any) -> Any:
    """``load(path, *args)``; a value of a type no check foresaw (pycocotools' own TypeErrors included)
    is still a usage error naming the file, never a traceback."""
    try:
        return load(path, *args)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise AnnotationError(f"{path}: malformed content ({type(exc).__name__}: {exc})") from exc
