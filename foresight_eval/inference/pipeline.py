"""`foresight-eval generate`: context clips in, predicted clips out (Qwen2.5-VL -> query adapter -> LTX-Video).

Per clip: the first ``context`` frames are read with the same readers as `score`; Qwen2.5-VL reads them
(as images, with the prompt text) and its final-layer hidden states go through the query adapter, whose
output is LTX-Video's prompt embeddings. With the hybrid encoder (research log P2) DINOv2 also encodes
each context frame into patch tokens, and the fusion module (:mod:`foresight_eval.inference.fusion`)
lets them cross-attend to the VLM's hidden states; the adapter reads that fused sequence instead.
LTX-Video is conditioned on one image only, the last context frame, which becomes its first frame (the
research log's first-frame-only finding, Q3); the frames it generates after that one are the
predictions, horizons 1..``frames``.

The predicted clip is written under the input's relative name as ``.mp4``, so ``score PREDS REFS`` pairs
it with the reference directly. By default it holds the context frames followed by the predictions, so
``score --context K`` scores exactly the predicted frames; ``include_context=False`` writes the
predictions alone. Frames are generated at ``resolution`` (multiples of 32, LTX-Video's constraint) and
written at the context clip's own size (antialiased resize when they differ).

A clip that cannot be read or is too short, or a batch that fails, becomes an error row; the others go
on. ``PREDS/generate_manifest.json`` records the options, where every model's weights came from (random
ones included), one row per clip and the timings: ``read_s`` (decoding contexts), ``vlm_s``,
``dino_s`` and ``fusion_s`` (hybrid), ``adapter_s``, ``decoder_s`` (the whole LTX-Video call, of which
``denoise_s`` and ``vae_decode_s``), ``latents_s``, ``write_s`` (H.264 encoding, summed over the writer
threads that overlap the GPU work) and ``total_s`` (wall time). Its ``latency`` section times the encoder stage per clip and, for the
hybrid encoder, gives ``latency_overhead`` (see ``LATENCY_DEFINITION``); ``figures`` holds the run-level
figures that ``score --extra-file PREDS/generate_manifest.json`` carries into a run for the gates.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save

from foresight_eval.distributed import current_world
from foresight_eval.driver import RunPlan, Task, run_plan
from foresight_eval.io.files import input_hashes
from foresight_eval.errors import InputError, UsageError, field_ref
from foresight_eval.inference.models import DEFAULT_PROMPT, LoadedModels
from foresight_eval.io.clips import ClipSource, discover_clips, open_clip
from foresight_eval.io.files import json_safe, write_atomic, write_json_atomic
from foresight_eval.io.video import write_video
from foresight_eval.manifest import build_manifest, package_versions, utc_now

MANIFEST_FILE = "generate_manifest.json"
WRITER_THREADS = max(1, min(4, (os.cpu_count() or 2) - 1))
MANIFEST_SCHEMA = "foresight-eval/generate/v1"
LATENT_LAYOUT = {
    "pred": "(1, H, C*h*w): the LTX VAE latent of each predicted frame, horizons 1..H",
    "ref": "(1, H, C*h*w): the same for the reference's frames after the context (with refs)",
    "vlm": "(1, S, D): Qwen2.5-VL final-layer hidden states of the S prompt tokens",
    "dino": "(1, K*N, D): DINOv2 final-layer-normed patch tokens, N per context frame, frame by frame (hybrid)",
    "fused": "(1, K*N, W): the fusion module's output, one token per DINOv2 patch token (hybrid)",
}
# DINOv2's published preprocessing normalisation (ImageNet mean and standard deviation).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ENCODER_STAGES = {"vlm": ("vlm_s",), "hybrid": ("vlm_s", "dino_s", "fusion_s")}
LATENCY_DEFINITION = (
    "latency_overhead = median over clips of the hybrid encoder stage's seconds / median over clips of the "
    "VLM-only encoder stage's seconds - 1 (research log P2's latency overhead; its target was < 25%). "
    "Encoder stage: from the decoded context frames (Qwen's processor already applied on the CPU) to the sequence "
    "the query adapter reads. VLM-only: the Qwen2.5-VL forward pass (vlm_s). Hybrid: that same pass plus DINOv2 "
    "(moving the frames to the device, resize, normalisation and forward pass: dino_s) and the fusion module "
    "(fusion_s), run one after the other. Both are measured in the same run on the same clips, each stage "
    "device-synchronised (torch.cuda.synchronize) before and after; a clip's seconds are its batch's divided by "
    "the batch's clip count; one untimed warm-up pass of the encoders over the first batch is excluded."
)


@dataclass(frozen=True)
class GenerateOptions:
    context: int = 4  # frames read from the start of each input clip
    frames: int = 16  # predicted frames per clip (horizons 1..frames)
    resolution: tuple[int, int] | None = None  # (width, height) generated; None: the context's size rounded to 32
    steps: int | None = None  # denoising steps; None: the preset's default
    guidance: float = 3.0  # classifier-free guidance scale (<= 1 turns it off)
    seed: int = 0
    batch_size: int = 1
    # LTX-Video's frame-rate conditioning and the written video's rate; None: the first context clip's own
    # (rounded; DEFAULT_FPS for frame folders and arrays), so predictions score against references of that rate.
    fps: int | None = None
    include_context: bool = True
    prompt: str = DEFAULT_PROMPT


@dataclass
class ClipRow:
    video: str
    input: str
    status: str = "ok"
    error: str | None = None
    output: str | None = None
    frames: int = 0  # frames written (context included when written)
    size: tuple[int, int] | None = None  # written (width, height)
    generated_size: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class GenerateResult:
    rows: list[ClipRow]
    warnings: list[str]
    timings: dict[str, float]
    latency: dict[str, Any] = field(default_factory=dict)  # see encoder_latency
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[ClipRow]:
        return [row for row in self.rows if not row.ok]


@dataclass
class _Context:
    source: ClipSource
    frames: np.ndarray  # (K, H, W, 3) uint8
    size: tuple[int, int]  # generated (width, height)
    reference: np.ndarray | None = None  # (H, h, w, 3) uint8 future frames, for reference latents


def clip_seed(seed: int, key: str) -> int:
    """Each clip's noise depends on the seed and its name only, not on its batch or its neighbours."""
    return (seed * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2**63)


def generation_size(width: int, height: int, requested: tuple[int, int] | None) -> tuple[int, int]:
    if requested is not None:
        return requested
    return max(32, round(width / 32) * 32), max(32, round(height / 32) * 32)


def _as_uint8(frame: np.ndarray) -> np.ndarray:
    return frame if frame.dtype == np.uint8 else np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)


def read_frames(path: Path, start: int, count: int, what: str) -> np.ndarray:
    """Frames ``start .. start+count-1`` of a clip as (count, H, W, 3) uint8; fewer is an InputError."""
    frames = []
    for index, frame in enumerate(open_clip(path).frames()):
        if index >= start:
            frames.append(_as_uint8(frame))
        if len(frames) == count:
            return np.stack(frames)
    raise InputError(f"{path}: {what} needs frames {start}..{start + count - 1}, the clip has only "
                     f"{start + len(frames)} frames")


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] to ``size`` = (width, height), antialiased."""
    if tuple(frames.shape[-2:]) == (size[1], size[0]):
        return frames
    return F.interpolate(frames, size=(size[1], size[0]), mode="bilinear", antialias=True,
                         align_corners=False).clamp_(0, 1)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


class _Stage:
    """Accumulates a stage's wall time (device-synchronised) and, with offload, keeps its modules on
    the device only inside the ``with`` block."""

    def __init__(self, timings: dict[str, float], name: str, models: LoadedModels, modules: list[Any]):
        self.timings, self.name, self.models, self.modules = timings, name, models, modules

    def _sync(self) -> None:
        if self.models.device.type == "cuda":
            torch.cuda.synchronize(self.models.device)

    def __enter__(self) -> None:
        if self.models.offload:
            for module in self.modules:
                module.to(self.models.device)
        self._sync()
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self._sync()
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start
        if self.models.offload:
            for module in self.modules:
                module.to("cpu")


@dataclass
class _Encoded:
    """A batch's encoder outputs: what the adapter read, and what it made of it."""

    hidden: torch.Tensor  # (B, S, D) VLM final-layer hidden states
    mask: torch.Tensor  # (B, S) their attention mask
    embeds: torch.Tensor  # (B, Q, C) the adapter's prompt embeddings
    embeds_mask: torch.Tensor  # (B, Q)
    dino: torch.Tensor | None = None  # (B, K, N, Dd) DINOv2 patch tokens (hybrid)
    fused: torch.Tensor | None = None  # (B, K*N, W) the fusion module's output (hybrid)


def dino_pixels(frames: np.ndarray, short_side: int, patch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames -> (N, 3, h, w) DINOv2 input: the short side resized to ``short_side`` and both
    sides rounded to multiples of the patch size (antialiased bilinear, aspect kept within a patch), then
    ImageNet-normalised. No centre crop, unlike DINOv2's classification preprocessing: the whole frame's
    spatial layout must reach the tokens."""
    # uint8 crosses to the device (a quarter of the bytes of float32); the arithmetic runs there.
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    height, width = pixels.shape[-2:]
    scale = short_side / min(height, width)
    size = (max(patch, round(width * scale / patch) * patch), max(patch, round(height * scale / patch) * patch))
    pixels = _resize(pixels, size)
    mean = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[:, None, None]
    return ((pixels - mean) / std).to(dtype)


def encode_contexts(models: LoadedModels, contexts: list[_Context], prompt: str, timings: dict[str, float]) -> _Encoded:
    """The encoder stage (VLM, and for the hybrid encoder DINOv2 and the fusion module), then the adapter's
    prompt embeddings, for a batch of contexts."""
    messages = [{"role": "user", "content": [{"type": "image"}] * len(contexts[0].frames)
                 + [{"type": "text", "text": prompt}]}]
    text = models.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    images = [frame for context in contexts for frame in context.frames]
    inputs = models.processor(text=[text] * len(contexts), images=images, return_tensors="pt", padding=True)
    inputs = {name: value.to(models.device) if isinstance(value, torch.Tensor) else value
              for name, value in inputs.items()}
    with _Stage(timings, "vlm_s", models, [models.vlm]):
        # The language model's output before the LM head: final-layer hidden states (after the final norm).
        hidden = models.vlm.model(**inputs).last_hidden_state
    mask = inputs["attention_mask"]
    encoded = _Encoded(hidden, mask, hidden, mask)
    context = hidden
    if models.encoder == "hybrid":
        with _Stage(timings, "dino_s", models, [models.dino]):
            pixels = dino_pixels(np.stack(images), models.preset.dino_short_side, models.dino.config.patch_size,
                                 models.device, models.dtype)
            # Final-layer-normed tokens; the first is CLS, the rest are the patches in raster order.
            tokens = models.dino(pixel_values=pixels).last_hidden_state[:, 1:]
            encoded.dino = tokens.reshape(len(contexts), len(contexts[0].frames), *tokens.shape[1:])
        with _Stage(timings, "fusion_s", models, [models.fusion]):
            encoded.fused = context = models.fusion(encoded.dino, hidden, mask)
        mask = torch.ones(context.shape[:2], dtype=torch.long, device=context.device)
    with _Stage(timings, "adapter_s", models, [models.adapter]):
        encoded.embeds, encoded.embeds_mask = models.adapter(context, mask)
    return encoded


def _frame_latents(models: LoadedModels, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """LTX VAE latents of single frames (N, 3, H, W) in [0, 1]: each encoded alone (the causal encoder
    gives one latent frame per image), latent mean, normalised as the transformer sees latents; (N, C*h*w)."""
    pipe = models.pipeline
    pixels = pipe.video_processor.preprocess(frames, height=size[1], width=size[0])
    pixels = pixels.to(device=models.device, dtype=models.dtype).unsqueeze(2)
    latents = pipe.vae.encode(pixels).latent_dist.mode()
    latents = pipe._normalize_latents(latents, pipe.vae.latents_mean, pipe.vae.latents_std)
    return latents.flatten(1).float().cpu()


def _save_latents(root: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    for folder, tensor in tensors.items():
        payload = save({"latents": tensor.contiguous()}, metadata={"layout": LATENT_LAYOUT[folder]})
        write_atomic(root / folder / f"{key}.safetensors", payload)


@dataclass
class _ClipOutput:
    row: ClipRow
    frames: np.ndarray  # (T, H, W, 3) uint8, as written
    latents: dict[str, torch.Tensor] | None
    encoder_s: dict[str, float]  # this clip's share of its batch's encoder stages (ENCODER_STAGES)


def generate_batch(models: LoadedModels, contexts: list[_Context], out: Path, options: GenerateOptions,
                   steps: int, latents_dir: Path | None, timings: dict[str, float],
                   on_step: Callable[[int, int], None] | None) -> list[_ClipOutput]:
    """Generate one batch of clips of the same generated size: frames to write, latents to save."""
    pipe = models.pipeline
    width, height = contexts[0].size
    ratio = pipe.vae_temporal_compression_ratio
    # LTX-Video makes 1 + ratio*k frames; generate enough and keep the first `frames` after the condition.
    num_frames = 1 + math.ceil(options.frames / ratio) * ratio
    encoder_s: dict[str, float] = {}
    encoded = encode_contexts(models, contexts, options.prompt, encoder_s)
    for name, seconds in encoder_s.items():
        timings[name] = timings.get(name, 0.0) + seconds
    clip_encoder_s = {name: encoder_s[name] / len(contexts) for name in ENCODER_STAGES[models.encoder]}
    embeds, embeds_mask = encoded.embeds, encoded.embeds_mask
    last_frames = _resize(_to_tensor(np.stack([c.frames[-1] for c in contexts])), (width, height))
    generators = [torch.Generator("cpu").manual_seed(clip_seed(options.seed, c.source.key)) for c in contexts]
    denoised_at = 0.0

    def step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nonlocal denoised_at
        if index == _pipe.num_timesteps - 1:  # the rest of the call is the VAE decode
            if models.device.type == "cuda":
                torch.cuda.synchronize(models.device)
            denoised_at = time.perf_counter()
        if on_step:
            on_step(index + 1, steps)
        return tensors

    with _Stage(timings, "decoder_s", models, [pipe.transformer, pipe.vae]):
        started = time.perf_counter()
        video = pipe(
            image=last_frames, prompt_embeds=embeds.to(models.dtype), prompt_attention_mask=embeds_mask,
            # No negative text exists for a learned adapter: the unconditional branch gets all-zero embeddings.
            negative_prompt_embeds=torch.zeros_like(embeds, dtype=models.dtype),
            negative_prompt_attention_mask=embeds_mask,
            height=height, width=width, num_frames=num_frames, frame_rate=options.fps,
            num_inference_steps=steps, guidance_scale=options.guidance, generator=generators, output_type="pt",
            callback_on_step_end=step_end,
        ).frames  # (B, T, 3, H, W) in [0, 1]
        if models.device.type == "cuda":
            torch.cuda.synchronize(models.device)
        timings["denoise_s"] = timings.get("denoise_s", 0.0) + denoised_at - started
        timings["vae_decode_s"] = timings.get("vae_decode_s", 0.0) + time.perf_counter() - denoised_at
    predicted = video[:, 1 : 1 + options.frames].float().cpu()
    if latents_dir is not None:
        with _Stage(timings, "latents_s", models, [pipe.vae]):
            pred_latents = [_frame_latents(models, clip_frames, (width, height)) for clip_frames in predicted]
            ref_latents = [None if c.reference is None else _frame_latents(models, _to_tensor(c.reference), (width, height))
                           for c in contexts]

    outputs = []
    for index, context in enumerate(contexts):
        h, w = context.frames.shape[1:3]
        frames = _resize(predicted[index], (w, h)).mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if options.include_context:
            frames = np.concatenate([context.frames, frames])
        tensors = None
        if latents_dir is not None:
            tensors = {"pred": pred_latents[index][None],
                       "vlm": encoded.hidden[index][encoded.mask[index].bool()][None].float().cpu()}
            if encoded.dino is not None:
                tensors["dino"] = encoded.dino[index].flatten(0, 1)[None].float().cpu()
                tensors["fused"] = encoded.fused[index][None].float().cpu()
            if ref_latents[index] is not None:
                tensors["ref"] = ref_latents[index][None]
        row = ClipRow(context.source.key, str(context.source.path), output=str(out / f"{context.source.key}.mp4"),
                      frames=len(frames), size=(w, h), generated_size=(width, height))
        outputs.append(_ClipOutput(row, frames, tensors, clip_encoder_s))
    return outputs


def _write_clip(output: _ClipOutput, latents_dir: Path | None, fps: int) -> float:
    """Encode one clip (and its latents); returns the seconds it took. Runs in a writer thread."""
    start = time.perf_counter()
    # Long clips at 768x512: the single-threaded "medium" encode took 4x the model time on an H200.
    write_video(Path(output.row.output), output.frames, fps=fps, preset="veryfast", threads=0)
    if output.latents is not None:
        _save_latents(latents_dir, output.row.video, output.latents)
    return time.perf_counter() - start


def _batches(contexts: list[_Context], batch_size: int) -> list[list[_Context]]:
    """Consecutive clips, at most ``batch_size`` per batch, split where the generated size changes."""
    batches: list[list[_Context]] = []
    for context in contexts:
        if batches and len(batches[-1]) < batch_size and batches[-1][0].size == context.size:
            batches[-1].append(context)
        else:
            batches.append([context])
    return batches


def _reference_index(refs: Path | None) -> dict[str, Path]:
    if refs is None:
        return {}
    if not Path(refs).exists():
        raise UsageError(f"references path {refs} does not exist")
    return {source.key: source.path for source in discover_clips(refs)}


DEFAULT_FPS = 25  # when neither --fps nor the context clips give a frame rate


def _resolve_fps(options: GenerateOptions, sources: list[ClipSource]) -> GenerateOptions:
    """``options`` with ``fps`` set: as given, else the first context clip's frame rate (rounded)."""
    if options.fps is not None:
        return options
    rate = getattr(open_clip(sources[0].path), "fps", None)
    return replace(options, fps=max(1, round(rate)) if rate else DEFAULT_FPS)


def _check_options(options: GenerateOptions) -> None:
    for name in ("context", "frames", "batch_size", "fps"):
        if getattr(options, name) is not None and getattr(options, name) < 1:
            raise UsageError(f"{field_ref(name)} must be at least 1, got {getattr(options, name)}")
    if options.steps is not None and options.steps < 1:
        raise UsageError(f"{field_ref('steps')} must be at least 1, got {options.steps}")
    if options.resolution is not None and any(v < 32 or v % 32 for v in options.resolution):
        width, height = options.resolution
        raise UsageError(f"{field_ref('resolution', f'{width}x{height}')}: LTX-Video needs width and "
                         "height that are multiples of 32")


class _ClipGenerator:
    """This rank's clips, a batch at a time: read the contexts, generate, hand the clips to writer threads.
    :meth:`generate` is the run driver's scoring callable; it returns the rows of the clips written so
    far (writes finish late), and :meth:`finish` the rest."""

    def __init__(self, models: LoadedModels, options: GenerateOptions, steps: int, out: Path,
                 references: dict[str, Path], latents_root: Path | None, on_step: Callable[[int, int], None] | None):
        self.models, self.options, self.steps, self.out = models, options, steps, out
        self.references, self.latents_root, self.on_step = references, latents_root, on_step
        self.timings: dict[str, float] = {}
        self.encoder_samples: dict[str, dict[str, float]] = {}  # clip -> its encoder stages' seconds
        self.warmed_up = False
        # H.264 encoding is single-threaded per clip (reproducible output) and, at 768x512, takes about as
        # long as generating the clip on an H100: writer threads encode while the GPU makes the next batch.
        self.writers = ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="foresight-write")
        self.writing: deque[tuple[_ClipOutput, Future]] = deque()
        if models.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(models.device)
        self.started = time.perf_counter()

    def _read(self, source: ClipSource) -> _Context:
        options = self.options
        frames = read_frames(source.path, 0, options.context, f"--context {options.context}")
        size = generation_size(frames.shape[2], frames.shape[1], options.resolution)
        reference = None
        if self.latents_root is not None and source.key in self.references:
            reference = read_frames(self.references[source.key], options.context, options.frames,
                                    f"reference latents for --frames {options.frames}")
        return _Context(source, frames, size, reference)

    def generate(self, tasks: list[Task[ClipSource]]) -> list[ClipRow]:
        """Read a batch of context clips, generate them, hand them to the writers; the rows finished so far."""
        done, contexts = [], []
        for task in tasks:
            read_start = time.perf_counter()
            try:
                contexts.append(self._read(task.item))
            except Exception as exc:  # noqa: BLE001 - an unreadable clip is that clip's error row
                done.append(_failed(task.item, exc))
            self.timings["read_s"] = self.timings.get("read_s", 0.0) + time.perf_counter() - read_start
        for batch in _batches(contexts, self.options.batch_size):
            try:
                if not self.warmed_up:  # untimed: kernel selection and allocations (see LATENCY_DEFINITION)
                    encode_contexts(self.models, batch, self.options.prompt, {})
                    self.warmed_up = True
                outputs = generate_batch(self.models, batch, self.out, self.options, self.steps, self.latents_root,
                                         self.timings, self.on_step)
            except Exception as exc:  # noqa: BLE001 - one failed batch must not lose the run
                done.extend(_failed(context.source, exc) for context in batch)
                continue
            for output in outputs:
                self.encoder_samples[output.row.video] = output.encoder_s
                self.writing.append((output, self.writers.submit(_write_clip, output, self.latents_root,
                                                                 self.options.fps)))
            done.extend(self._written(keep=2 * WRITER_THREADS))  # bounds the frames held in memory
        return done

    def _written(self, keep: int) -> list[ClipRow]:
        """The rows of the clips written, once at most ``keep`` writes are left in flight."""
        done = []
        while len(self.writing) > keep:
            output, future = self.writing.popleft()
            try:
                self.timings["write_s"] = self.timings.get("write_s", 0.0) + future.result()
            except Exception as exc:  # noqa: BLE001 - a clip that cannot be written is that clip's error row
                output.row.status = "error"
                output.row.error = f"writing {output.row.output}: {type(exc).__name__}: {exc}"
            done.append(output.row)
        return done

    def finish(self) -> list[ClipRow]:
        return self._written(keep=0)

    def figures(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """This rank's timings and per-clip encoder seconds, once its clips are written."""
        self.timings["total_s"] = time.perf_counter() - self.started
        if self.models.device.type == "cuda":
            self.timings["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(self.models.device) / 1e9
        return self.timings, self.encoder_samples

    def close(self) -> None:
        self.writers.shutdown(wait=True)


def _failed(source: ClipSource, exc: Exception) -> ClipRow:
    reason = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return ClipRow(source.key, str(source.path), status="error", error=reason)


def generate(
    inputs: str | Path,
    out: str | Path,
    models: LoadedModels,
    options: GenerateOptions = GenerateOptions(),
    *,
    refs: str | Path | None = None,
    latents_dir: str | Path | None = None,
    on_start: Callable[[int], None] | None = None,
    on_clip: Callable[[ClipRow], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    command: str | None = None,
) -> GenerateResult | None:
    """Predict the future of every context clip under ``inputs`` and write the clips under ``out``.

    Under `torchrun` each rank (one GPU each) predicts its share of the clips and rank 0 writes the
    manifest and returns the result; the other ranks return None.

    ``models`` comes from :func:`foresight_eval.inference.models.load_models`. With ``latents_dir``,
    per clip ``pred/``, ``vlm/`` and (given ``refs``, matched by clip name) ``ref/`` latent files are
    written there as ``<clip>.safetensors`` (see ``LATENT_LAYOUT``); ``foresight-eval latents
    LATENTS/pred LATENTS/ref -m latent_cosine`` compares them. ``on_start`` gets the number of clips,
    ``on_clip`` each finished row, ``on_step`` (step, total) of every denoising step.
    """
    started = utc_now()
    _check_options(options)
    inputs, out = Path(inputs), Path(out)
    if not inputs.exists():
        raise UsageError(f"inputs path {inputs} does not exist")
    all_sources = discover_clips(inputs)
    if not all_sources:
        raise UsageError(f"no clips found under {inputs} (videos, .npy/.npz arrays, or folders of png/jpg frames)")
    options = _resolve_fps(options, all_sources)
    # Under torchrun each rank predicts its share of the clips.
    plan = RunPlan(all_sources, key=lambda source: source.key, world=current_world())
    steps = options.steps or models.preset.steps
    latents_root = Path(latents_dir) if latents_dir is not None else None
    clips = _ClipGenerator(models, options, steps, out, _reference_index(Path(refs) if refs is not None else None),
                           latents_root, on_step)
    try:
        gathered = run_plan(plan, clips.generate, result_key=lambda row: row.video, batch_size=options.batch_size,
                            finish=clips.finish, on_start=on_start, on_result=on_clip, rank_extra=clips.figures)
    finally:
        clips.close()
    if gathered is None:
        return None
    timings = gathered.rank_extras[0][0] if not plan.world.distributed else {
        f"rank{rank}": rank_timings for rank, (rank_timings, _) in enumerate(gathered.rank_extras)}
    encoder_samples = {video: sample for _, rank_samples in gathered.rank_extras
                       for video, sample in rank_samples.items()}
    result = GenerateResult(gathered.results, models.warnings(), timings,
                            latency=encoder_latency(models.encoder, encoder_samples))
    result.manifest = _manifest(models, options, steps, inputs, refs, latents_root, result, started, command)
    write_json_atomic(out / MANIFEST_FILE, result.manifest)
    return result


def encoder_latency(encoder: str, samples: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per-clip encoder-stage seconds, their medians and, for the hybrid encoder, ``latency_overhead``
    (``LATENCY_DEFINITION``); ``None`` where no clip was encoded."""
    vlm = [sample["vlm_s"] for sample in samples.values()]
    section: dict[str, Any] = {
        "encoder": encoder, "stages": list(ENCODER_STAGES[encoder]), "clips": len(samples), "per_clip": samples,
        "median_vlm_encoder_s": float(np.median(vlm)) if vlm else None,
        "median_hybrid_encoder_s": None, "latency_overhead": None,
    }
    if encoder == "hybrid":
        section["definition"] = LATENCY_DEFINITION
        if samples:
            hybrid = float(np.median([sum(sample.values()) for sample in samples.values()]))
            section["median_hybrid_encoder_s"] = hybrid
            section["latency_overhead"] = hybrid / section["median_vlm_encoder_s"] - 1.0
    return section


def run_figures(models: LoadedModels, latency: dict[str, Any]) -> dict[str, Any]:
    """The run-level figures `score --extra-file PREDS/generate_manifest.json` records in the scored run."""
    figures: dict[str, Any] = {"encoder": models.encoder, "generate_trained": not models.random_parts,
                               "encoder_vlm_s": latency["median_vlm_encoder_s"]}
    if models.encoder == "hybrid":
        figures.update(encoder_hybrid_s=latency["median_hybrid_encoder_s"],
                       latency_overhead=latency["latency_overhead"], latency_overhead_definition=LATENCY_DEFINITION)
    return figures


def _manifest(models: LoadedModels, options: GenerateOptions, steps: int, inputs: Path, refs: str | Path | None,
              latents_root: Path | None, result: GenerateResult, started: str, command: str | None) -> dict[str, Any]:
    ok = [row for row in result.rows if row.ok]
    return json_safe({
        "schema": MANIFEST_SCHEMA,
        "preset": models.preset.name,
        "encoder": models.encoder,
        "trained": not models.random_parts,
        "random_weights": models.random_parts,
        "warnings": result.warnings,
        "models": models.provenance,
        "dtype": str(models.dtype).removeprefix("torch."),
        "options": {**asdict(options), "steps": steps},
        "written_frames": {"context": options.context if options.include_context else 0, "predicted": options.frames},
        "refs": str(refs) if refs is not None else None,
        "latents": None if latents_root is None else {"root": str(latents_root), "layout": LATENT_LAYOUT},
        "clips": [json_safe(asdict(row)) for row in result.rows],
        "videos": {"total": len(result.rows), "ok": len(ok), "error": len(result.rows) - len(ok)},
        "timings": result.timings,
        "parameters": models.parameter_counts(),
        "latency": result.latency,
        "figures": run_figures(models, result.latency),
        "model_packages": package_versions(("transformers", "diffusers", "tokenizers", "safetensors")),
        "manifest": build_manifest(models.device, command, started, utc_now(), {
            "contexts": {"root": str(inputs), "sha256": input_hashes(inputs, [Path(r.input) for r in result.rows])},
        }),
    })
