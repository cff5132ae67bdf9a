"""Feature consistency: how stable a predicted video's DINOv2 features are over time (needs weights).

Each horizon frame goes through the model folder's own image processor (``AutoImageProcessor``; for
DINOv2: bicubic resize of the short side to 256, centre crop 224, ImageNet mean/std; frames are already
in [0, 1], so it runs with ``do_rescale=False``, batched on the scoring device) and ``Dinov2Model``; the
frame's feature is ``pooler_output``, the final-layer-normed CLS token (VBench uses the CLS token of
DINO ViT-B/16 the same way). With c(a, b) = max(0, cosine(a, b)), as VBench clips it:

* ``pairs=both`` (default, VBench's "subject consistency"): the value at horizon t >= 2 is
  (c(f_{t-1}, f_t) + c(f_1, f_t)) / 2, the clip's value the mean over t;
* ``pairs=consecutive``: c(f_{t-1}, f_t); ``pairs=first``: c(f_1, f_t).

f_1 is the first *horizon* frame: context frames never reach the metrics. ``feature_consistency_delta``
is the prediction's value minus the reference video's own, frame by frame.

``subject_consistency`` is VBench's own definition (Vchitect/VBench ``vbench/subject_consistency.py``),
for reproducing its numbers: DINO v1 ViT-B/16 (``dino_vitb16``, the final-normed CLS token), each frame
as uint8 resized with torchvision ``Resize(224, antialias=False)`` (short side to 224, bilinear, no crop:
the patch grid follows the frame's aspect ratio and DINO's position embeddings are interpolated as its
``interpolate_pos_encoding`` does), /255, ImageNet mean/std; the same ``pairs=both`` average per clip.
It differs from ``feature_consistency`` in the backbone (DINO v1 vs DINOv2), in the preprocessing (no
centre crop: VBench sees the whole frame; DINOv2's processor crops the centre square) and in the frames
(it needs ``--context 0`` to see every frame, as VBench; the ``vbench`` profile fixes it). VBench's
headline over many videos weights each video by its number of frame pairs; ours is the mean over clips
(the same for clips of equal length).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from foresight_eval.errors import MetricUnavailable
from foresight_eval.metrics.base import ConsecutivePairMetric, FrameBatch, MetricInfo, RunContext
from foresight_eval.metrics.registry import register
from foresight_eval.weights import HuggingFaceModel, TorchHubFile, register_weights, user_weight_dirs, weight_sha256

DINOV2_MODELS = {
    variant: register_weights(HuggingFaceModel(
        f"dinov2-{variant}", f"feature_consistency (model={variant})", f"facebook/dinov2-{variant}", f"dinov2-{variant}"
    ))
    for variant in ("small", "base", "large")
}
PAIRINGS = ("both", "consecutive", "first")


@lru_cache(maxsize=2)  # feature_consistency and its delta share one loaded model
def load_feature_model(folder: Path, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """A model and its image processor from a local ``save_pretrained`` folder; never touches the network."""
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as transformers_logging

    bar_was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # the CLI draws its own progress on stderr
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    finally:
        if bar_was_on:
            transformers_logging.enable_progress_bar()
    return model.to(device).eval().requires_grad_(False), processor


def frame_features(model: torch.nn.Module, processor: Any, frames: torch.Tensor) -> torch.Tensor:
    """One feature vector per [0, 1] frame: (N, 3, H, W) in, (N, D) out (the model's ``pooler_output``)."""
    inputs = processor(images=frames, do_rescale=False, return_tensors="pt", device=frames.device)
    return model(pixel_values=inputs["pixel_values"].to(frames.device)).pooler_output


def features_of(metric: "_FeatureConsistency", batch: FrameBatch, role: str) -> torch.Tensor:
    """The metric's per-frame features of one side of a batch: one model pass per batch, side and model,
    shared by a metric and its delta."""
    key = (type(metric).frame_features, metric.model_file, role)
    return batch.shared(key, lambda: metric.frame_features(getattr(batch, role)))


def feature_consistency(
    earlier: torch.Tensor, later: torch.Tensor, first: torch.Tensor, pairs: str = "both"
) -> torch.Tensor:
    """VBench-style consistency of each frame's features ``later`` (N, D) with its predecessor's ``earlier``
    (N, D) and with the first frame's ``first`` (1, D); cosines clipped at 0. (N,) out."""
    consecutive = F.cosine_similarity(earlier, later, dim=1).clamp_min(0)
    to_first = F.cosine_similarity(first.expand_as(later), later, dim=1).clamp_min(0)
    return {"both": (consecutive + to_first) / 2, "consecutive": consecutive, "first": to_first}[pairs]


class _FeatureConsistency(ConsecutivePairMetric):
    defaults = {"model": "small", "pairs": "both"}
    choices = {"model": tuple(DINOV2_MODELS), "pairs": PAIRINGS}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.model_folder = DINOV2_MODELS[self.params["model"]].locate_folder(context.weights_dir)
        self.model_file = self.model_folder / "model.safetensors"
        self.model, self.processor = load_feature_model(self.model_folder, context.device)
        self.weights_sha256 = weight_sha256(self.model_file, context.resources.get("cache_dir"))

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        return frame_features(self.model, self.processor, frames)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["params"]["feature"] = "pooler_output (final-layer-normed CLS token)"
        if getattr(self, "model_folder", None) is not None:
            described["weights"] = {"model": DINOV2_MODELS[self.params["model"]].repo_id,
                                    "file": self.model_file.name, "sha256": self.weights_sha256}
        return described

    def reset(self) -> None:
        super().reset()
        self._first: dict[str, torch.Tensor] = {}

    def _role_values(self, batch: FrameBatch, role: str) -> torch.Tensor:
        features = features_of(self, batch, role)
        first = self._first.setdefault(role, features[:1])
        earlier, later = self._pairs(role, features)
        return feature_consistency(earlier, later, first, self.params.get("pairs", "both"))


@register
class FeatureConsistency(_FeatureConsistency):
    info = MetricInfo(
        name="feature_consistency",
        description="DINOv2 feature consistency of the predicted horizon frames (VBench subject consistency: "
        "mean of the clipped cosine to the previous frame and to the first frame)",
        direction="higher",
        target="reference",
        needs=("weights",),
    )


@register
class FeatureConsistencyDelta(_FeatureConsistency):
    info = MetricInfo(
        name="feature_consistency_delta",
        description="feature_consistency of the prediction minus that of the reference, frame by frame",
        direction="higher",
        target=0.0,
        needs=("weights",),
    )
    versus_reference = True


# ---- VBench subject consistency: DINO v1 ViT-B/16 -------------------------------------------------------

DINO_VITB16_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VBENCH_SHORT_SIDE = 224


@dataclass(frozen=True)
class DinoCheckpoint(TorchHubFile):
    """DINO v1's released state dict, under its own file name: looked up in the user's weight folders,
    VBench's cache (``$VBENCH_CACHE_DIR`` or ``~/.cache/vbench``, ``dino_model/``, where VBench puts it) and
    torch hub's checkpoint cache (where ``torch.hub.load('facebookresearch/dino:main', 'dino_vitb16')``
    downloads it). Read with ``torch.load(weights_only=True)``: tensors only, never pickled objects."""

    def candidates(self, weights_dir: Path | None) -> list[tuple[str, Path]]:
        vbench_cache = Path(os.environ.get("VBENCH_CACHE_DIR") or Path.home() / ".cache" / "vbench")
        places = user_weight_dirs(weights_dir)
        places += [("VBench cache", vbench_cache / "dino_model"),
                   ("torch hub cache", Path(torch.hub.get_dir()) / "checkpoints")]
        return [(label, folder / self.filename) for label, folder in places]


DINO_VITB16 = register_weights(DinoCheckpoint("dino-vitb16", "subject_consistency", DINO_VITB16_URL))


class _DinoBlock(nn.Module):
    """A pre-norm transformer block with DINO's parameter names (``norm1``, ``attn.qkv``, ``attn.proj``,
    ``norm2``, ``mlp.fc1``, ``mlp.fc2``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = (q @ k.transpose(-2, -1)) * (dim // self.heads) ** -0.5
        attended = (weights.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.attn.proj(attended)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoViT(nn.Module):
    """DINO v1's vision transformer, as ``facebookresearch/dino`` defines it (``vision_transformer.py``):
    patch embedding, CLS token, position embeddings interpolated to the frame's patch grid, pre-norm
    blocks, final LayerNorm (eps 1e-6); the output is the CLS token (its ``head`` is the identity).

    The architecture is read from the state dict's shapes: width from ``cls_token``, patch size from
    ``patch_embed.proj``, depth from the ``blocks.N`` keys, heads = width / 64 (every DINO ViT)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        dim, patch = state["cls_token"].shape[-1], state["patch_embed.proj.weight"].shape[-1]
        depth = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("blocks."))
        self.patch_size = patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros_like(state["pos_embed"]))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.ModuleList(_DinoBlock(dim, max(1, dim // 64)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.load_state_dict(state, strict=True)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a (height // patch) x (width // patch) grid, as DINO computes them:
        bicubic, by the scale factor ((grid + 0.1) / sqrt(N)) (DINO's "+ 0.1" against rounding)."""
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        count = self.pos_embed.shape[1] - 1
        side = int(math.sqrt(count))
        if grid_h * grid_w == count and grid_h == grid_w:
            return self.pos_embed
        dim = self.pos_embed.shape[-1]
        patches = self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side), mode="bicubic")
        patches = patches.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([self.pos_embed[:, :1], patches], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(images), -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(*images.shape[-2:])
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


@lru_cache(maxsize=2)
def load_dino(path: Path, device: torch.device) -> DinoViT:
    """DINO v1 from its released state dict file (tensors only: ``weights_only=True``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = DinoViT(state)
    except Exception as exc:  # noqa: BLE001 - any unreadable or foreign file: say which and why
        raise MetricUnavailable(f"{path} is not a DINO ViT state dict: {type(exc).__name__}: {exc}") from exc
    return model.to(device).eval().requires_grad_(False)


def vbench_dino_preprocess(frames: torch.Tensor) -> torch.Tensor:
    """VBench's ``dino_transform(224)`` on [0, 1] frames decoded from uint8: back to uint8, torchvision
    ``Resize(224, antialias=False)`` (short side), /255, ImageNet mean/std. (N, 3, H, W) in and out."""
    from torchvision.transforms.functional import normalize, resize

    uint8 = (frames * 255).round_().to(torch.uint8)
    resized = resize(uint8, VBENCH_SHORT_SIDE, antialias=False).float().div_(255.0)
    return normalize(resized, IMAGENET_MEAN, IMAGENET_STD)


@register
class SubjectConsistency(_FeatureConsistency):
    info = MetricInfo(
        name="subject_consistency",
        description="VBench subject consistency: DINO v1 ViT-B/16 CLS features of each predicted frame "
        "(VBench's preprocessing: short side resized to 224, no crop), mean of the clipped cosine to the "
        "previous and to the first frame",
        direction="higher",
        needs=("weights",),
        default=False,  # VBench's definition, for reproducing its numbers; feature_consistency is ours
    )
    defaults: dict[str, Any] = {}
    choices: dict[str, tuple[Any, ...]] = {}

    def setup(self, context: RunContext) -> None:
        self.device = context.device
        self.model_file = DINO_VITB16.locate(context.weights_dir)
        self.model = load_dino(self.model_file, context.device)
        self.weights_sha256 = weight_sha256(self.model_file, context.resources.get("cache_dir"))

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(vbench_dino_preprocess(frames))

    def describe(self) -> dict[str, Any]:
        described = ConsecutivePairMetric.describe(self)
        described["params"].update(pairs="both", feature="DINO v1 CLS token after the final LayerNorm",
                                   preprocess="uint8, torchvision Resize(224, antialias=False), /255, ImageNet mean/std")
        if getattr(self, "model_file", None) is not None:
            described["weights"] = {"model": "facebookresearch/dino dino_vitb16", "file": self.model_file.name,
                                    "sha256": self.weights_sha256}
        return described
