"""The models behind `foresight-eval generate`: presets, and one code path that builds or loads them.

Both presets use the same classes (transformers' ``Qwen2_5_VLForConditionalGeneration`` and its processor,
this package's :class:`QueryAdapter`, diffusers' ``LTXImageToVideoPipeline``; for ``encoder="hybrid"``
also transformers' ``Dinov2Model`` and this package's :class:`FusionModule`); only the configurations
differ. Weights are read from local folders in each library's standard layout (``save_pretrained``
output) or from the local Hugging Face cache, never downloaded. A part without weights is built from
its preset configuration with seeded random weights, and that fact is recorded and announced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from foresight_eval.distributed import current_world, rank_device
from foresight_eval.distributed import resolve_device
from foresight_eval.errors import UsageError, WeightsNotFound, field_ref
from foresight_eval.inference.adapter import AdapterConfig, QueryAdapter, load_adapter_state
from foresight_eval.inference.fusion import FusionConfig, FusionModule, load_fusion_state

VLM_REPO = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_PROMPT = "Watch these frames and predict what happens next."
DECODER_REPO = "Lightricks/LTX-Video"
DINO_REPO = "facebook/dinov2-large"
ENCODERS = ("vlm", "hybrid")  # VLM-only (research log C1/C2), DINOv2 + VLM through the fusion module (P2)

# Qwen's chat format, enough of it for a user turn of images and text. The offline processor needs its
# own template; a processor loaded with real weights brings Qwen's.
OFFLINE_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
)
# Qwen2.5-VL's special tokens; their ids come from the VLM config (image_token_id etc.) or the preset.
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>")


@dataclass(frozen=True)
class Preset:
    """Architectures and defaults. ``vlm_source``/``decoder_source`` name the hub repositories looked up in
    the local cache when no folder is given; ``None`` means the preset has no trained weights at all."""

    name: str
    vlm_config: dict[str, Any]  # Qwen2_5_VLConfig, in the flat layout of the hub's config.json
    special_token_ids: dict[str, int]  # ids of QWEN_SPECIAL_TOKENS for the offline tokenizer
    transformer_config: dict[str, Any]  # diffusers LTXVideoTransformer3DModel
    vae_config: dict[str, Any]  # diffusers AutoencoderKLLTXVideo
    scheduler_config: dict[str, Any]  # diffusers FlowMatchEulerDiscreteScheduler
    adapter: dict[str, int]  # AdapterConfig fields other than the two widths
    steps: int  # default denoising steps
    vlm_source: str | None
    decoder_source: str | None
    dino_config: dict[str, Any]  # transformers Dinov2Config (hybrid encoder)
    dino_short_side: int  # context frames are resized so their short side is this many pixels for DINOv2
    fusion: dict[str, int]  # FusionConfig fields other than the two input widths
    dino_source: str | None


_QWEN_IDS = dict(zip(QWEN_SPECIAL_TOKENS, (151643, 151644, 151645, 151652, 151653, 151655, 151656)))
_TINY_IDS = dict(zip(QWEN_SPECIAL_TOKENS, range(57, 64)))

# LTX-Video's flow-matching schedule (the scheduler_config.json of Lightricks/LTX-Video).
_LTX_SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95,
                      max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)

PRESETS: dict[str, Preset] = {
    # Qwen2.5-VL-7B-Instruct and LTX-Video 0.9 (2B), as in their published config.json files.
    "full": Preset(
        name="full",
        vlm_config=dict(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
            rope_theta=1e6, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, sliding_window=32768,
            use_sliding_window=False, max_window_layers=28, bos_token_id=151643, eos_token_id=151645,
            image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
            tie_word_embeddings=False,
            vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                               fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
        ),
        special_token_ids=_QWEN_IDS,
        transformer_config=dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
                                attention_head_dim=64, cross_attention_dim=2048, num_layers=28, caption_channels=4096,
                                qk_norm="rms_norm_across_heads"),
        vae_config=dict(latent_channels=128, block_out_channels=(128, 256, 512, 512),
                        decoder_block_out_channels=(128, 256, 512, 512), layers_per_block=(4, 3, 3, 3, 4),
                        decoder_layers_per_block=(4, 3, 3, 3, 4), patch_size=4, timestep_conditioning=False),
        scheduler_config=_LTX_SCHEDULER,
        adapter=dict(num_queries=32, width=512, depth=2, heads=8),
        steps=50,
        vlm_source=VLM_REPO,
        decoder_source=DECODER_REPO,
        # DINOv2 ViT-L/14 (facebook/dinov2-large's config.json): the research log's P2 choice (ViT-G cost 68%
        # latency overhead, ViT-L 31.9%). A 224-pixel short side gives 16 patch rows, the resolution
        # DINOv2 was trained at.
        dino_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14,
                         image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu",
                         use_swiglu_ffn=False, drop_path_rate=0.0),
        dino_short_side=224,
        fusion=dict(width=1024, depth=2, heads=16),
        dino_source=DINO_REPO,
    ),
    # The same classes at toy sizes: runs end to end on a CPU in seconds. The VAE keeps LTX's block
    # structure, hence its compression (32x spatial, 8x temporal), so sizes must be multiples of 32.
    "tiny": Preset(
        name="tiny",
        vlm_config=dict(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=1e6,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, use_sliding_window=False,
            bos_token_id=_TINY_IDS["<|endoftext|>"], eos_token_id=_TINY_IDS["<|im_end|>"],
            image_token_id=_TINY_IDS["<|image_pad|>"], video_token_id=_TINY_IDS["<|video_pad|>"],
            vision_start_token_id=_TINY_IDS["<|vision_start|>"], vision_end_token_id=_TINY_IDS["<|vision_end|>"],
            tie_word_embeddings=False,
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                               fullatt_block_indexes=[0], tokens_per_second=2, hidden_act="silu"),
        ),
        special_token_ids=_TINY_IDS,
        transformer_config=dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2,
                                attention_head_dim=8, cross_attention_dim=16, num_layers=1, caption_channels=32,
                                qk_norm="rms_norm_across_heads"),
        vae_config=dict(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1), patch_size=4,
                        timestep_conditioning=False),
        scheduler_config=_LTX_SCHEDULER,
        adapter=dict(num_queries=8, width=16, depth=1, heads=2),
        steps=2,
        vlm_source=None,
        decoder_source=None,
        dino_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                         image_size=56, layerscale_value=1.0, layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu",
                         use_swiglu_ffn=False, drop_path_rate=0.0),
        dino_short_side=56,
        fusion=dict(width=16, depth=1, heads=2),
        dino_source=None,
    ),
}


class ModelWeightsNotFound(WeightsNotFound):
    """A model's weights are in none of the local places searched (generation never downloads)."""

    def __init__(self, what: str, name: str, searched: list[str], option: str):
        super().__init__(what, name, searched)
        message = (
            f"{what} weights {name!r} not found (looked in: {'; '.join(searched)}); generation never downloads. "
            f"On a machine with network access run `hf download {name}` (it fills the Hugging Face cache), "
            f"or pass {option} DIR with a save_pretrained folder, or --random-weights for timing runs"
        )
        self.args = (message,)

    def __str__(self) -> str:
        return self.args[0]


def resolve_weights(name: str, what: str, option: str) -> Path:
    """A local folder, or a hub repository id found in the local Hugging Face cache (offline lookup only)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    searched = [f"folder {path}"]
    if name.count("/") == 1 and not path.exists():
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        searched.append(f"Hugging Face cache {constants.HF_HUB_CACHE}")
        try:
            return Path(snapshot_download(name, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
            pass
    raise ModelWeightsNotFound(what, name, searched, option)


@dataclass
class LoadedModels:
    """Everything `generate` runs, with where each part's weights came from."""

    preset: Preset
    vlm: Any  # Qwen2_5_VLForConditionalGeneration
    processor: Any  # Qwen2_5_VLProcessor
    adapter: QueryAdapter
    pipeline: Any  # diffusers LTXImageToVideoPipeline (no text encoder: the adapter supplies the prompt embeddings)
    device: torch.device
    dtype: torch.dtype
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Each stage's models sit on the CPU and visit the device only while their stage runs.
    offload: bool = False
    encoder: str = "vlm"  # one of ENCODERS
    dino: Any = None  # transformers Dinov2Model (hybrid encoder only)
    fusion: FusionModule | None = None  # hybrid encoder only

    @property
    def random_parts(self) -> list[str]:
        return [part for part, info in self.provenance.items() if info.get("random")]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (the research log's C2 compares adapters by size)."""
        modules = {"vlm": self.vlm, "dino": self.dino, "fusion": self.fusion, "adapter": self.adapter,
                   "decoder_transformer": self.pipeline.transformer, "decoder_vae": self.pipeline.vae}
        return {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()
                if module is not None}

    def warnings(self) -> list[str]:
        notes = [f"the {label} has RANDOM weights (no {option} checkpoint): these predictions are not a trained "
                 "model's" for part, (label, option) in _LEARNED_PARTS.items() if self.provenance.get(part, {}).get("random")]
        others = [part for part in self.random_parts if part not in _LEARNED_PARTS]
        if others:
            notes.append(f"{' and '.join(others)} built with RANDOM weights ({self.preset.name} preset "
                         f"configuration): output is for timing and plumbing only")
        return notes


# The parts this package trains (no published weights exist): random until a checkpoint is given.
_LEARNED_PARTS = {"fusion": ("fusion module", "--fusion"), "adapter": ("query adapter", "--adapter")}


@contextlib.contextmanager
def _building(device: torch.device, seed: int) -> Iterator[None]:
    """Build modules directly on ``device`` with seeded initialisation: a 7B model initialised on a GPU
    takes seconds instead of minutes on a CPU."""
    torch.manual_seed(seed)
    with device:
        yield


def offline_processor(preset: Preset) -> Any:
    """A Qwen2.5-VL processor built without any download: Qwen's image processor at its defaults, and a
    word-level tokenizer (``tokenizers``) whose special tokens carry the ids the VLM config expects.

    Used only with random VLM weights, where the text tokens carry no learned meaning anyway."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    words = ["[UNK]", "user", "system", "assistant"] + sorted(set(DEFAULT_PROMPT.lower().replace(".", " . ").split()))
    vocab = {word: index for index, word in enumerate(words)}
    vocab.update(preset.special_token_ids)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(list(preset.special_token_ids))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="<|endoftext|>",
                                      eos_token="<|im_end|>")
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=wrapped,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=OFFLINE_CHAT_TEMPLATE)


def load_vlm(preset: Preset, source: str | None, random_weights: bool, device: torch.device, dtype: torch.dtype,
             seed: int) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    source = source or (None if random_weights else preset.vlm_source)
    if source is None:
        with _building(device, seed):
            vlm = Qwen2_5_VLForConditionalGeneration._from_config(Qwen2_5_VLConfig(**preset.vlm_config), dtype=dtype)
        info = {"source": f"built in code ({preset.name} preset configuration)", "random": True,
                "processor": "built offline (Qwen image processor, word-level tokenizer)"}
        return vlm.eval(), offline_processor(preset), info
    folder = resolve_weights(source, "Qwen2.5-VL", "--vlm")
    vlm = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return vlm.to(device).eval(), processor, {"source": str(folder), "random": False, "processor": str(folder)}


def load_decoder(preset: Preset, source: str | None, random_weights: bool, device: torch.device, dtype: torch.dtype,
                 seed: int) -> tuple[Any, dict[str, Any]]:
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline,
                           LTXVideoTransformer3DModel)

    source = source or (None if random_weights else preset.decoder_source)
    if source is None:
        with _building(device, seed + 1):
            pipeline = LTXImageToVideoPipeline(
                scheduler=FlowMatchEulerDiscreteScheduler(**preset.scheduler_config),
                vae=AutoencoderKLLTXVideo(**preset.vae_config),
                transformer=LTXVideoTransformer3DModel(**preset.transformer_config),
                text_encoder=None, tokenizer=None,
            )
        info = {"source": f"built in code ({preset.name} preset configuration)", "random": True}
    else:
        folder = resolve_weights(source, "LTX-Video", "--decoder")
        # The adapter replaces LTX's T5 text encoder, so the encoder and tokenizer are never loaded. Loaded in
        # the stored dtype and cast below (the keyword for a load-time dtype differs across diffusers versions).
        pipeline = LTXImageToVideoPipeline.from_pretrained(folder, text_encoder=None, tokenizer=None,
                                                           local_files_only=True)
        info = {"source": str(folder), "random": False}
    pipeline.set_progress_bar_config(disable=True)  # `generate` reports steps through its own callback
    return pipeline.to(device=device, dtype=dtype), info


def load_dino(preset: Preset, source: str | None, random_weights: bool, device: torch.device, dtype: torch.dtype,
              seed: int) -> tuple[Any, dict[str, Any]]:
    from transformers import Dinov2Config, Dinov2Model

    source = source or (None if random_weights else preset.dino_source)
    if source is None:
        with _building(device, seed + 3):
            dino = Dinov2Model._from_config(Dinov2Config(**preset.dino_config), dtype=dtype)
        info = {"source": f"built in code ({preset.name} preset configuration)", "random": True}
    else:
        folder = resolve_weights(source, "DINOv2", "--dino")
        try:  # model.safetensors only: a pickled pytorch_model.bin could run code when loaded
            dino = Dinov2Model.from_pretrained(folder, local_files_only=True, use_safetensors=True, dtype=dtype)
        except OSError as exc:
            raise UsageError(f"DINOv2 weights in {folder} cannot be loaded ({exc}); only model.safetensors is read, "
                             "pickled pytorch_model.bin files are refused") from exc
        info = {"source": str(folder), "random": False}
    info["short_side"] = preset.dino_short_side
    return dino.to(device).eval(), info


def build_fusion(preset: Preset, dino: Any, vlm: Any, checkpoint: Path | None, device: torch.device,
                 dtype: torch.dtype, seed: int) -> tuple[FusionModule, dict[str, Any]]:
    config = FusionConfig(dino_dim=dino.config.hidden_size, vlm_dim=vlm.config.text_config.hidden_size, **preset.fusion)
    torch.manual_seed(seed + 4)
    fusion = FusionModule(config)
    info = _learned_info(fusion, config, checkpoint, load_fusion_state, "fusion module", "--fusion")
    return fusion.to(device=device, dtype=dtype).eval(), info


def _learned_info(module: Any, config: Any, checkpoint: Path | None, load: Any, what: str,
                  option: str) -> dict[str, Any]:
    """Load ``checkpoint`` into a freshly initialised module (if given) and describe where its weights came from."""
    info: dict[str, Any] = {"config": asdict(config), "parameters": module.num_parameters()}
    if checkpoint is None:
        info.update(source="random initialisation (seeded)", random=True)
        return info
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ModelWeightsNotFound(what, str(checkpoint), [f"file {checkpoint}"], option)
    load(checkpoint, module)
    info.update(source=str(checkpoint), random=False)
    return info


def build_adapter(preset: Preset, context_dim: int, pipeline: Any, checkpoint: Path | None, device: torch.device,
                  dtype: torch.dtype, seed: int) -> tuple[QueryAdapter, dict[str, Any]]:
    """The query adapter over a ``context_dim``-wide sequence (the VLM's hidden states, or the fused sequence)."""
    config = AdapterConfig(vlm_dim=context_dim, out_dim=pipeline.transformer.config.caption_channels, **preset.adapter)
    torch.manual_seed(seed + 2)
    adapter = QueryAdapter(config)
    info = _learned_info(adapter, config, checkpoint, load_adapter_state, "query adapter", "--adapter")
    return adapter.to(device=device, dtype=dtype).eval(), info


def load_models(
    preset: str = "tiny",
    *,
    vlm: str | None = None,
    decoder: str | None = None,
    adapter: str | Path | None = None,
    random_weights: bool = False,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
    offload: bool = False,
    encoder: str = "vlm",
    dino: str | None = None,
    fusion: str | Path | None = None,
) -> LoadedModels:
    """Build or load the VLM, the adapter and the decoder for ``preset`` (and, for ``encoder="hybrid"``,
    DINOv2 and the fusion module).

    ``vlm``/``decoder`` are local folders or hub ids found in the local cache (default: the preset's own
    repositories; the tiny preset has none and is always random). ``random_weights`` builds the preset's
    architectures with seeded random weights instead of loading them. ``adapter`` is a .safetensors file;
    without one the adapter is randomly initialised. ``dtype`` defaults to bfloat16 on a GPU, float32 on a CPU.
    ``offload`` parks the models on the CPU between their stages, for GPUs that cannot hold them all at once.
    ``encoder="hybrid"`` adds DINOv2 (``dino``: a folder or hub id in the local cache, like ``vlm``) and the
    fusion module (``fusion``: a .safetensors file; without one, randomly initialised), whose fused
    sequence the adapter reads instead of the VLM's hidden states.
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if encoder not in ENCODERS:
        raise UsageError(f"unknown encoder {encoder!r} (known: {', '.join(ENCODERS)})")
    if encoder != "hybrid" and (dino is not None or fusion is not None):
        raise UsageError(f"{field_ref('dino')} and {field_ref('fusion')} belong to the hybrid encoder: add "
                         f"{field_ref('encoder', 'hybrid')}")
    spec = PRESETS[preset]
    torch_device = rank_device(resolve_device(device), current_world())  # a GPU per rank under torchrun
    torch_dtype = resolve_dtype(dtype, torch_device)
    vlm_model, processor, vlm_info = load_vlm(spec, vlm, random_weights, torch_device, torch_dtype, seed)
    pipeline, decoder_info = load_decoder(spec, decoder, random_weights, torch_device, torch_dtype, seed)
    provenance = {"vlm": vlm_info, "decoder": decoder_info}
    dino_model = fusion_model = None
    context_dim = vlm_model.config.text_config.hidden_size
    if encoder == "hybrid":
        dino_model, provenance["dino"] = load_dino(spec, dino, random_weights, torch_device, torch_dtype, seed)
        fusion_model, provenance["fusion"] = build_fusion(spec, dino_model, vlm_model, fusion, torch_device,
                                                          torch_dtype, seed)
        context_dim = fusion_model.config.width
    adapter_model, provenance["adapter"] = build_adapter(spec, context_dim, pipeline, adapter, torch_device,
                                                         torch_dtype, seed)
    models = LoadedModels(spec, vlm_model, processor, adapter_model, pipeline, torch_device, torch_dtype, provenance,
                          offload, encoder, dino_model, fusion_model)
    if offload:
        for module in (vlm_model, dino_model, fusion_model, adapter_model, pipeline.transformer, pipeline.vae):
            if module is not None:
                module.to("cpu")
    return models


DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r} (known: auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]
