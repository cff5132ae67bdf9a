"""The query adapter between the vision-language model and the video decoder (research log C2/C3).

A fixed set of learnable query tokens cross-attends to the VLM's final-layer hidden states and is
projected to the decoder's caption width, so the decoder receives a short conditioning sequence of
constant length whatever the number of context tokens. At the full preset's sizes (3584-wide Qwen2.5-VL
states, 4096-wide LTX-Video captions, 32 queries, width 512, 2 blocks) it has about 10M parameters:
the design that won the research log's adapter comparison.

Weights live in ``.safetensors`` only; any other payload (a pickled ``torch.save`` checkpoint) is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from foresight_eval.errors import UsageError
from foresight_eval.io.files import write_atomic

CONFIG_METADATA_KEY = "foresight_eval.query_adapter"


class CheckpointError(UsageError):
    """A weights file exists but cannot be used (not safetensors, wrong shapes, missing tensors)."""


class AdapterCheckpointError(CheckpointError):
    """The query adapter's checkpoint cannot be used."""


@dataclass(frozen=True)
class AdapterConfig:
    vlm_dim: int  # width of the VLM's hidden states
    out_dim: int  # width of the decoder's caption embeddings
    num_queries: int = 32
    width: int = 512
    depth: int = 2
    heads: int = 8


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention from the queries to the context, then an MLP; both residual."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_queries = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, queries: torch.Tensor, context: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        context = self.norm_context(context)
        attended, _ = self.attention(self.norm_queries(queries), context, context, key_padding_mask=padding,
                                     need_weights=False)
        queries = queries + attended
        return queries + self.mlp(self.norm_mlp(queries))


class QueryAdapter(nn.Module):
    """VLM hidden states (B, S, vlm_dim) + mask (B, S) -> decoder conditioning (B, num_queries, out_dim)."""

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.queries = nn.Parameter(torch.randn(config.num_queries, config.width) * 0.02)
        self.input_proj = nn.Sequential(nn.LayerNorm(config.vlm_dim), nn.Linear(config.vlm_dim, config.width))
        self.blocks = nn.ModuleList(CrossAttentionBlock(config.width, config.heads) for _ in range(config.depth))
        self.output_proj = nn.Sequential(nn.LayerNorm(config.width), nn.Linear(config.width, config.out_dim))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the conditioning sequence and its attention mask (every query is always valid)."""
        context = self.input_proj(hidden_states.to(self.queries.dtype))
        queries = self.queries.unsqueeze(0).expand(hidden_states.shape[0], -1, -1)
        padding = ~attention_mask.bool()
        for block in self.blocks:
            queries = block(queries, context, padding)
        embeds = self.output_proj(queries)
        return embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_adapter(adapter: QueryAdapter, path: Path) -> None:
    """Write the weights as .safetensors (atomically), with the adapter's config in the file's metadata."""
    save_module(adapter, path, CONFIG_METADATA_KEY)


def load_adapter_state(path: Path, adapter: QueryAdapter) -> None:
    """Load ``path`` into ``adapter``, checking every tensor's name and shape first."""
    load_checked_state(path, adapter, "adapter", CONFIG_METADATA_KEY, AdapterCheckpointError)


def save_module(module: nn.Module, path: Path, config_key: str) -> None:
    """A module's weights as .safetensors (atomically), its ``config`` dataclass in the metadata under ``config_key``."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    write_atomic(Path(path), save(state, metadata={config_key: json.dumps(asdict(module.config))}))


def load_checked_state(path: Path, module: nn.Module, what: str, config_key: str,
                       error: type[CheckpointError]) -> None:
    """Load ``path`` into ``module`` (which has a ``config`` dataclass), checking every tensor's name and shape
    first; ``error`` lists each mismatch and the config stored in the file's metadata.

    Only the safetensors format is read: it holds raw tensors and cannot execute code, unlike a pickle.
    """
    path = Path(path)
    expected = module.state_dict()
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = set(handle.keys())
            stored_config = (handle.metadata() or {}).get(config_key)
            problems = [f"missing tensor {name!r}" for name in sorted(expected.keys() - names)]
            problems += [f"unexpected tensor {name!r}" for name in sorted(names - expected.keys())]
            for name in sorted(expected.keys() & names):
                shape = tuple(handle.get_slice(name).get_shape())
                if shape != tuple(expected[name].shape):
                    problems.append(f"{name}: shape {shape} in the file, {tuple(expected[name].shape)} expected")
            if problems:
                raise error(
                    f"{what} checkpoint {path} does not fit this {what} "
                    f"(built for {asdict(module.config)}; the file says {stored_config or 'nothing'}): "
                    + "; ".join(problems)  # every mismatch: a partial list hides which layers differ
                )
            state = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(
            f"{what} checkpoint {path} is not a readable .safetensors file ({exc}); "
            "pickled checkpoints (torch.save .pt/.bin) are refused: convert them with safetensors.torch.save_file"
        ) from exc
    module.load_state_dict(state)
