"""`foresight-eval generate`: parse options, run :func:`foresight_eval.inference.generate`, print the outcome."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from foresight_eval.cli.common import DEVICE_OPTION, EXIT_FAILED, EXIT_OK, print_json, stderr, stdout
from foresight_eval.errors import UsageError, WeightsNotFound
from foresight_eval.inference.models import DEFAULT_PROMPT, DTYPES, ENCODERS, PRESETS


def parse_resolution(value: str | None) -> tuple[int, int] | None:
    if value is None or value == "auto":
        return None
    width, sep, height = value.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise UsageError(f"--resolution expects WIDTHxHEIGHT (e.g. 768x512) or auto, got {value!r}")
    return int(width), int(height)


def warn_loudly(notes: list[str], console) -> None:
    if notes:
        console.print(Panel("\n".join(escape(note) for note in notes), title="[bold]NOT A TRAINED MODEL[/]",
                            border_style="bold red", expand=False))


@click.command("generate")
@click.option("--inputs", "-i", required=True, type=click.Path(exists=True, path_type=Path),
              help="Context clips: a folder (walked recursively, as `score` does) or one clip.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the predicted clips (same relative names, .mp4) and generate_manifest.json.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="full", show_default=True,
              help="full: Qwen2.5-VL-7B + LTX-Video 2B. tiny: the same classes at toy sizes with random weights (CPU, seconds).")
@click.option("--vlm", metavar="DIR|REPO", help="Qwen2.5-VL weights: a save_pretrained folder, or a hub id found in "
              "the local Hugging Face cache (default for --preset full: Qwen/Qwen2.5-VL-7B-Instruct).")
@click.option("--decoder", metavar="DIR|REPO", help="LTX-Video weights: a diffusers folder, or a hub id in the local "
              "cache (default for --preset full: Lightricks/LTX-Video). Its T5 text encoder is never loaded.")
@click.option("--adapter", type=click.Path(path_type=Path), help="Query adapter weights (.safetensors). Without it "
              "the adapter is randomly initialised and the output says so.")
@click.option("--encoder", type=click.Choice(ENCODERS), default="vlm", show_default=True,
              help="vlm: the adapter reads Qwen2.5-VL's hidden states. hybrid (research log P2): DINOv2 patch tokens "
                   "cross-attend to them in a fusion module and the adapter reads the fused sequence; the manifest "
                   "then records the encoder's latency overhead over the VLM alone.")
@click.option("--dino", metavar="DIR|REPO", help="DINOv2 weights for --encoder hybrid: a save_pretrained folder, or a "
              "hub id in the local cache (default for --preset full: facebook/dinov2-large).")
@click.option("--fusion", type=click.Path(path_type=Path), help="Fusion module weights (.safetensors) for --encoder "
              "hybrid. Without it the module is randomly initialised and the output says so.")
@click.option("--random-weights", is_flag=True, help="Build the VLM, DINOv2 and decoder with seeded random weights instead of "
              "loading them (timing and plumbing runs; recorded in the manifest).")
@click.option("--context", type=int, default=4, show_default=True, help="Context frames read from the start of each clip.")
@click.option("--frames", type=int, default=16, show_default=True, help="Predicted frames per clip (horizons 1..N).")
@click.option("--resolution", default="auto", show_default=True, metavar="WxH|auto",
              help="Generated size, multiples of 32; auto: the context's size rounded to 32. Clips are written at "
                   "the context's size.")
@click.option("--steps", type=int, help="Denoising steps (default: the preset's, full 50, tiny 2).")
@click.option("--guidance", type=float, default=3.0, show_default=True, help="Classifier-free guidance scale (<= 1: off).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise (per clip: seed and clip name) "
              "and of any random weights. Same seed, same output.")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Clips per batch.")
@click.option("--fps", type=int, default=None,
              help="Frame rate given to LTX-Video and written (default: the first context clip's, else 25), so the "
                   "predictions score against references of that rate.")
@click.option("--include-context/--no-include-context", default=True, show_default=True,
              help="Write the context frames before the predictions (then `score --context K` scores the predictions).")
@click.option("--prompt", default=DEFAULT_PROMPT, show_default=True, help="Text given to the VLM with the frames "
              "(an action description goes here).")
@click.option("--refs", type=click.Path(exists=True, path_type=Path),
              help="Reference clips (matched by name); with --save-latents, their future frames' VAE latents are saved.")
@click.option("--save-latents", "latents_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write per-clip latents: DIR/pred, DIR/ref (with --refs), DIR/vlm (and DIR/dino, DIR/fused with "
                   "--encoder hybrid), as <clip>.safetensors; "
                   "`foresight-eval latents DIR/pred DIR/ref -m latent_cosine` compares them.")
@DEVICE_OPTION
@click.option("--dtype", type=click.Choice(["auto", *DTYPES]), default="auto", show_default=True,
              help="auto: bfloat16 on a GPU, float32 on a CPU.")
@click.option("--offload", is_flag=True, help="Keep each model on the CPU except while its stage runs (smaller GPUs).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
def generate_command(inputs, out, preset, vlm, decoder, adapter, encoder, dino, fusion, random_weights, context, frames, resolution, steps,
                     guidance, seed, batch_size, fps, include_context, prompt, refs, latents_dir, device, dtype,
                     offload, as_json) -> None:
    """Predict future frames for every context clip in INPUTS with Qwen2.5-VL -> query adapter -> LTX-Video,
    and write them under OUT with the same relative names, ready for `foresight-eval score OUT REFS`.

    Weights are never downloaded: they come from local folders or the local Hugging Face cache.

    Exit status: 0 every clip written, 1 some clip failed (see its error row), 2 usage error or missing weights.
    """
    from foresight_eval.inference import GenerateOptions, generate, load_models

    options = GenerateOptions(context=context, frames=frames, resolution=parse_resolution(resolution), steps=steps,
                              guidance=guidance, seed=seed, batch_size=batch_size, fps=fps,
                              include_context=include_context, prompt=prompt)
    console = stderr if as_json else stdout
    try:
        with stderr.status(f"loading the {preset} preset's models"):
            models = load_models(preset, vlm=vlm, decoder=decoder, adapter=adapter, random_weights=random_weights,
                                 device=device, dtype=dtype, seed=seed, offload=offload, encoder=encoder, dino=dino,
                                 fusion=fusion)
    except WeightsNotFound as exc:
        raise UsageError(str(exc)) from exc
    warn_loudly(models.warnings(), stderr)
    progress = Progress(TextColumn("{task.fields[label]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), TextColumn("{task.description}"), console=stderr, transient=True,
                        disable=not stderr.is_terminal)
    with progress:
        clips = progress.add_task("", total=None, label="clips")
        denoise = progress.add_task("", total=None, label="denoising")
        result = generate(
            inputs, out, models, options, refs=refs, latents_dir=latents_dir,
            on_start=lambda total: progress.update(clips, total=total),
            on_clip=lambda row: progress.update(clips, advance=1, description=escape(row.video)),
            on_step=lambda step, total: progress.update(denoise, completed=step, total=total),
            command=shlex.join(["foresight-eval", *sys.argv[1:]]),
        )
    if result is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    for row in result.failed:
        console.print(f"[red]error[/] {escape(row.video)}: {escape(row.error or '')}", soft_wrap=True)
    written = len(result.rows) - len(result.failed)
    console.print(f"{written} of {len(result.rows)} clips written to {escape(str(out))} "
                  f"({result.timings.get('total_s', 0.0):.1f} s); manifest: {escape(str(out / 'generate_manifest.json'))}")
    if result.latency.get("latency_overhead") is not None:
        console.print(f"encoder latency overhead over the VLM alone: {result.latency['latency_overhead']:.1%} "
                      f"(median {result.latency['median_hybrid_encoder_s']:.4f} s against "
                      f"{result.latency['median_vlm_encoder_s']:.4f} s per clip; definition in the manifest)")
    warn_loudly(result.warnings, console)
    if as_json:
        print_json(result.manifest)
    sys.exit(EXIT_FAILED if result.failed else EXIT_OK)
