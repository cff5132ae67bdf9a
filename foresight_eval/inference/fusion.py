"""The hybrid encoder's fusion module (research log P2): DINOv2 spatial tokens + Qwen2.5-VL semantics.

The log's Gate 1 found that the VLM's hidden states lose where things are (C1 spatial IoU 0.559, Q2
mAP@0.5 0.001: Qwen's 2x2 token merger and its language layers mix positions), while DINOv2 ViT-L's patch
tokens keep it (P2 spatial IoU 0.837). The accepted design combines the two "via a cross-attention fusion
module"; the log does not say which side queries which, so the direction is chosen here:

**The DINOv2 patch tokens are the queries; they cross-attend to the VLM's hidden states.** The fused
sequence then has one token per DINOv2 patch (per context frame), each a residual update of that patch's
own feature: the spatial layout that P2 validated survives by construction, and the VLM contributes
what it is good at (semantics, the prompt's action text) through attention. The reverse (VLM tokens
querying DINOv2) would give a sequence in the VLM's token layout, where position could only come back
through attention weights: the very bottleneck the log pivoted away from.

Each DINOv2 token also gets a fixed sinusoidal embedding of its context frame's index (DINOv2 encodes
frames one at a time, so nothing else tells frames apart); fixed rather than learned, so any ``--context``
works with the same weights. The query adapter reads the fused sequence exactly as it reads the VLM's
hidden states in the VLM-only branch.

Weights live in one ``.safetensors`` file with exactly the expected names and shapes (see
:func:`load_fusion_state`); without one the module is randomly initialised (seeded) and recorded as untrained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from foresight_eval.inference.adapter import CheckpointError, CrossAttentionBlock, load_checked_state, save_module

CONFIG_METADATA_KEY = "foresight_eval.fusion"


class FusionCheckpointError(CheckpointError):
    """The fusion module's checkpoint cannot be used."""


@dataclass(frozen=True)
class FusionConfig:
    dino_dim: int  # width of the DINOv2 patch tokens
    vlm_dim: int  # width of the VLM's hidden states
    width: int = 1024  # width of the fused sequence (what the query adapter reads)
    depth: int = 2
    heads: int = 16


def frame_embedding(frame_index: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017) of context-frame indices (N,) -> (N, width)."""
    half = width // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, device=frame_index.device) / max(half, 1))
    angles = frame_index.float()[:, None] * frequencies[None]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    return nn.functional.pad(embedding, (0, width - 2 * half))


class FusionModule(nn.Module):
    """DINOv2 tokens (B, K, N, dino_dim) + VLM hidden states (B, S, vlm_dim) and mask (B, S) -> fused
    sequence (B, K*N, width): per patch token, cross-attention to the VLM states, then an MLP; both residual."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.dino_proj = nn.Sequential(nn.LayerNorm(config.dino_dim), nn.Linear(config.dino_dim, config.width))
        self.vlm_proj = nn.Sequential(nn.LayerNorm(config.vlm_dim), nn.Linear(config.vlm_dim, config.width))
        self.blocks = nn.ModuleList(CrossAttentionBlock(config.width, config.heads) for _ in range(config.depth))

    def forward(self, dino_tokens: torch.Tensor, hidden_states: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        batch, frames, patches, _ = dino_tokens.shape
        dtype = self.dino_proj[1].weight.dtype
        queries = self.dino_proj(dino_tokens.to(dtype))
        frame_index = torch.arange(frames, device=queries.device)
        queries = queries + frame_embedding(frame_index, self.config.width).to(dtype)[None, :, None]
        queries = queries.reshape(batch, frames * patches, self.config.width)
        context = self.vlm_proj(hidden_states.to(dtype))
        padding = ~attention_mask.bool()
        for block in self.blocks:
            queries = block(queries, context, padding)
        return queries

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_fusion(fusion: FusionModule, path: Path) -> None:
    """Write the weights as .safetensors (atomically), with the module's config in the file's metadata."""
    save_module(fusion, path, CONFIG_METADATA_KEY)


def load_fusion_state(path: Path, fusion: FusionModule) -> None:
    """Load ``path`` into ``fusion``; every tensor's name and shape is checked first, each mismatch named."""
    load_checked_state(path, fusion, "fusion", CONFIG_METADATA_KEY, FusionCheckpointError)
