"""Latency of `foresight-eval generate`: seconds per clip and per generated frame, the share of each stage
(VLM, DINOv2, fusion, adapter, denoising, VAE decode), peak GPU memory, the real-time factor, and for the
hybrid encoder (research log P2) the encoder latency overhead over the VLM alone.

    python benchmarks/generate_latency.py                                   # tiny preset on the CPU
    python benchmarks/generate_latency.py --preset full --random-weights --device cuda --clips 2
    python benchmarks/generate_latency.py --preset full --random-weights --device cuda --encoders vlm,hybrid \
        --clips 8 --json runs/generate_hybrid.json                          # both encoders, one after the other

Context clips are synthetic (fixtures/synthetic.py) at the generated resolution, so nothing is resized.
Each configuration runs once untimed (2 steps: kernel selection, allocations), then timed on ``--clips``
clips, at batch size 1 and at ``--batch-size``. ``--long-frames 120`` adds LTX-Video's published setting
(121 frames = 5 s at 24 fps, 768x512; its paper reports 2 s on an H100), with and without guidance.
Figures: wall time per clip and per predicted frame (reading, models, H.264 writing overlapped by writer
threads), the models' own time and each model stage's share, and the real-time factor (video seconds
made per second).
Models load once per encoder (``--encoders``, comma-separated; the previous encoder's models are freed
first); ``--json PATH`` writes every figure. Encoder latencies are `generate`'s own per-clip figures
(``generate_manifest.json``'s ``latency`` section: warm-up excluded, device-synchronised, medians over
clips), so the hybrid encoder's overhead is measured on the same clips in the same run as its VLM pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for fixtures.synthetic
from fixtures import synthetic as syn  # noqa: E402
from foresight_eval.inference import GenerateOptions, generate, load_models  # noqa: E402
from foresight_eval.inference.models import PRESETS  # noqa: E402

STAGES = ("vlm_s", "dino_s", "fusion_s", "adapter_s", "denoise_s", "vae_decode_s")  # the model stages (GPU work on a GPU)


def write_contexts(folder: Path, clips: int, frames: int, width: int, height: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(clips):
        scene = syn.make_scene(seed=index, height=height, width=width)
        truth, _ = syn.render_clip(scene, frames)
        np.save(folder / f"clip{index:02d}.npy", syn.to_uint8(truth))
    return folder


def timed_run(models, contexts: Path, out: Path, options: GenerateOptions) -> dict:
    result = generate(contexts, out, models, options)
    if result.failed:
        raise SystemExit(f"generation failed: {result.failed[0].video}: {result.failed[0].error}")
    clips = len(result.rows)
    total = result.timings["total_s"]
    model_s = sum(result.timings.get(stage, 0.0) for stage in STAGES)
    return {
        "clips": clips, "batch_size": options.batch_size, "frames": options.frames, "steps": result.manifest["options"]["steps"],
        "resolution": f"{options.resolution[0]}x{options.resolution[1]}", "guidance": options.guidance,
        # Wall time of the whole command's work: reading, models, writing (overlapped by writer threads).
        "seconds_total": total, "seconds_per_clip": total / clips, "seconds_per_frame": total / (clips * options.frames),
        # The models alone (VLM + adapter + denoising + VAE decode), per clip.
        "model_seconds_per_clip": model_s / clips,
        # Seconds of video made per second of wall time, at --fps (>1: faster than real time).
        "realtime_factor": clips * options.frames / options.fps / total,
        "model_realtime_factor": clips * options.frames / options.fps / model_s,
        "stages_s": {stage: result.timings.get(stage, 0.0) for stage in (*STAGES, "read_s", "write_s")},
        "stage_share": {stage: result.timings.get(stage, 0.0) / model_s for stage in STAGES if stage in result.timings},
        "peak_gpu_memory_gb": result.timings.get("peak_gpu_memory_gb"),
        # Medians over clips of the encoder stage (see foresight_eval.inference.pipeline.LATENCY_DEFINITION).
        "encoder_latency": {key: result.latency[key] for key in
                            ("median_vlm_encoder_s", "median_hybrid_encoder_s", "latency_overhead")},
    }


def print_row(label: str, row: dict) -> None:
    shares = ", ".join(f"{stage.removesuffix('_s')} {share:.0%}" for stage, share in row["stage_share"].items())
    peak = f", peak GPU {row['peak_gpu_memory_gb']:.1f} GB" if row["peak_gpu_memory_gb"] is not None else ""
    latency = row["encoder_latency"]
    overhead = "" if latency["latency_overhead"] is None else (
        f" | encoder {latency['median_hybrid_encoder_s'] * 1e3:.1f} ms vs VLM {latency['median_vlm_encoder_s'] * 1e3:.1f} ms:"
        f" overhead {latency['latency_overhead']:.1%}")
    print(f"{label:<34} {row['seconds_per_clip']:7.2f} s/clip {row['seconds_per_frame']:7.3f} s/frame "
          f"x{row['realtime_factor']:.2f} real time | models {row['model_seconds_per_clip']:.2f} s/clip "
          f"x{row['model_realtime_factor']:.2f} [{shares}] | H.264 {row['stages_s']['write_s']:.1f} s{peak}{overhead}", flush=True)


def run_encoder(args: argparse.Namespace, encoder: str, options: GenerateOptions, width: int, height: int) -> dict:
    """Load one encoder's models and time every configuration with them."""
    report: dict = {"encoder": encoder, "runs": {}}
    started = time.perf_counter()
    models = load_models(args.preset, vlm=args.vlm, decoder=args.decoder, adapter=args.adapter,
                         random_weights=args.random_weights, device=args.device, dtype=args.dtype, offload=args.offload,
                         encoder=encoder, dino=args.dino if encoder == "hybrid" else None,
                         fusion=args.fusion if encoder == "hybrid" else None)
    report["load_s"] = time.perf_counter() - started
    report["dtype"] = str(models.dtype).removeprefix("torch.")
    report["models"] = models.provenance
    report["parameters"] = models.parameter_counts()
    report["warnings"] = models.warnings()
    for note in models.warnings():
        print(f"WARNING: {note}", file=sys.stderr)
    if models.device.type == "cuda":
        report["gpu_memory_after_load_gb"] = torch.cuda.memory_allocated(models.device) / 1e9
    print(f"{args.preset} preset, {encoder} encoder on {args.device} ({report['dtype']}): models ready in "
          f"{report['load_s']:.1f} s" + (f", {report['gpu_memory_after_load_gb']:.1f} GB on the GPU"
                                         if "gpu_memory_after_load_gb" in report else "")
          + ", parameters " + ", ".join(f"{name} {count / 1e6:.1f}M" for name, count in report["parameters"].items()),
          flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        contexts = write_contexts(scratch / "contexts", args.clips, args.context, width, height)
        warmup = write_contexts(scratch / "warmup", 1, args.context, width, height)
        batched = args.batch_size or args.clips
        runs = {"batch 1": (contexts, options)}
        if batched > 1:
            runs[f"batch {batched}"] = (contexts, replace(options, batch_size=batched))
        if args.long_frames:
            long = replace(options, frames=args.long_frames, steps=args.long_steps)
            runs[f"{args.long_frames} frames, {args.long_steps} steps"] = (warmup, long)
            runs[f"{args.long_frames} frames, {args.long_steps} steps, no CFG"] = (warmup, replace(long, guidance=1.0))
        for label, (clips_dir, run_options) in runs.items():
            # Untimed first: kernel selection and allocations for this configuration's shapes.
            generate(clips_dir, scratch / "warmup_out", models, replace(run_options, steps=2))
            report["runs"][label] = timed_run(models, clips_dir, scratch / "out", run_options)
            print_row(f"{encoder}: {label}", report["runs"][label])
    if len(report["runs"]) > 1:
        first, batched_run = list(report["runs"].values())[:2]
        report["batch_speedup"] = first["seconds_per_clip"] / batched_run["seconds_per_clip"]
        print(f"batching {batched_run['batch_size']} clips: x{report['batch_speedup']:.2f} clips per second vs batch 1")
    del models
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--random-weights", action="store_true", help="build the models with random weights")
    parser.add_argument("--vlm"), parser.add_argument("--decoder"), parser.add_argument("--adapter")
    parser.add_argument("--dino"), parser.add_argument("--fusion")
    parser.add_argument("--encoders", default="vlm", help="comma-separated: vlm, hybrid (each timed in turn)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", default=None, help="WxH (default: 768x512 full, 128x96 tiny)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=None, help="batched run (default: --clips)")
    parser.add_argument("--long-frames", type=int, default=0,
                        help="also time one clip of this many frames (120: LTX's 5 s), with and without guidance")
    parser.add_argument("--long-steps", type=int, default=20)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--offload", action="store_true")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)

    resolution = args.resolution or ("768x512" if args.preset == "full" else "128x96")
    width, height = (int(v) for v in resolution.lower().split("x"))
    report: dict = {"device": args.device, "preset": args.preset, "random_weights": args.random_weights}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(torch.device(args.device))

    options = GenerateOptions(context=args.context, frames=args.frames, resolution=(width, height), steps=args.steps,
                              guidance=args.guidance, batch_size=1, fps=args.fps)
    encoders = [name.strip() for name in args.encoders.split(",") if name.strip()]
    report["encoders"] = {}
    for encoder in encoders:
        report["encoders"][encoder] = run_encoder(args, encoder, options, width, height)
        gc.collect()  # free this encoder's models before the next one loads
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
