"""Speed of the whole default metric suite, CPU against GPU, on camera-like clips (issue 17).

    python benchmarks/suite_speed.py --out DIR [--devices cpu,cuda] [--clips 3 --frames 32 --size 640x360]

Synthesises the clips deterministically (``synthetic.camera_like_clip``: multi-scale texture panning under
moving shapes, sensor noise; H.264), then per device, after an untimed warm-up on clips of the same length and
sizes (two, or one per size): ``--size`` takes several sizes, which the clips take in turn (``--size
640x360,320x240,176x144 --frames 83``: the issue's real clips, 3 pairs of 249 frame pairs in all);

* in ``--rounds`` alternating rounds (medians and per-round ratios reported), decode-only (the engine's
  pipeline: background decoding, batching, upload to the device, no metric) and the default suite in one
  run without a cache;
* timed once each: the suite with a fresh ``cache_dir`` and the frame metrics' reference side cached
  (``frame_cache="on"``; cold: computes and writes it) and again (warm: reads it), the speed-up of scoring a
  second model; then with the cache as a run has it by default (``frame_cache="auto"``: the frame metrics'
  reference side cached on the CPU only);
* where the run has worker processes for metrics' CPU work (``--workers``, default: the engine's, all CPUs
  but one on a GPU, none on the CPU), the suite without cache again with the pool off (``workers=0``), and
  ``edge_f1`` alone with the pool on and off;
* each default metric alone (``--per-metric``), whose sum against the suite's time shows the sharing;
* on the CPU, LPIPS float32 / bf16 against its convolutions alone (``benchmarks/lpips_cpu.py``).

Writes ``DIR/suite_speed.json`` (every figure, the machine) and ``DIR/suite_speed.md`` (the tables).
LPIPS uses the cached AlexNet checkpoint, else seeded random weights (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_alexnet_weights, parse_sizes, synthetic  # noqa: E402
from lpips_cpu import measure as lpips_cpu_measure, report as lpips_cpu_report  # noqa: E402
from pipeline_throughput import decode_only  # noqa: E402

from foresight_eval import RunContext, ScoreOptions, score  # noqa: E402
from foresight_eval.distributed import resolve_device  # noqa: E402
from foresight_eval.metrics.registry import prepare_metrics  # noqa: E402
from foresight_eval.io.video import write_video  # noqa: E402
from foresight_eval.workers import default_workers  # noqa: E402


def make_clips(root: Path, clips: int, frames: int, height: int, width: int,
               sizes: list[tuple[int, int]] | None = None) -> tuple[Path, Path]:
    """Camera-like references and predictions of them (blurred, noisy, one frame late) as H.264 files;
    clip ``i`` is ``sizes[i % len(sizes)]`` (WIDTH, HEIGHT) when given, else ``width`` x ``height``."""
    for index in range(clips):
        if sizes:
            width, height = sizes[index % len(sizes)]
        truth = synthetic.camera_like_clip(index, frames + 1, height=height, width=width)
        write_video(root / "refs" / f"clip{index:02d}.mp4", synthetic.to_uint8(truth[1:]))
        pred = synthetic.add_noise(synthetic.blur(truth[:-1], 1.0), 0.02, seed=index)
        write_video(root / "preds" / f"clip{index:02d}.mp4", synthetic.to_uint8(pred))
    return root / "preds", root / "refs"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def bench_device(device_name: str, clips: tuple[Path, Path], warmup: tuple[Path, Path], args, tmp: Path) -> dict:
    device = resolve_device(device_name)
    workers = default_workers(device.type) if args.workers is None else args.workers
    options = ScoreOptions(batch_size=args.batch_size, workers=workers)
    suite = [m.name for m in prepare_metrics(None, {}, RunContext(device=device))[0]]
    frames = args.clips * args.frames
    print(f"[{device}] default suite: {', '.join(suite)}", flush=True)
    # imports, weights, kernels, thread pools, the worker pool's fork server (not the user's cache folder)
    score(*warmup, suite, options=options, device=device, resources={"cache_dir": None})
    out = {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "suite": suite, "frame_pairs": frames, "workers": workers}
    runs = {}

    def suite_run(label, resources, run_options) -> float:
        seconds, run = timed(lambda: score(*clips, suite, options=run_options, device=device, resources=resources))
        failed = [pair.error for pair in run.pairs if not pair.ok]
        if failed:
            raise RuntimeError(f"{device}, {label}: {failed[0]}")
        runs[label] = {"seconds": seconds, "values": {m: s.mean for m, s in run.metrics.items()}}
        print(f"[{device}] suite, {label}: {seconds:.2f} s", flush=True)
        return seconds

    # The two figures of the goals, decode-only and the suite without cache, in --rounds alternating rounds:
    # medians, and each round's ratio (one run of each moved by 20% between runs on the H200).
    decode_rounds, suite_rounds = [], []
    for _ in range(args.rounds):
        decode_rounds.append(timed(lambda: decode_only(*clips, options, device))[0])
        print(f"[{device}] decode-only {decode_rounds[-1]:.2f} s", flush=True)
        suite_rounds.append(suite_run("no cache", {"cache_dir": None}, options))
    out["decode_only_s"], out["decode_only_rounds"] = statistics.median(decode_rounds), decode_rounds
    runs["no cache"].update(seconds=statistics.median(suite_rounds), rounds=suite_rounds)
    cache = tmp / f"cache-{device.type}"
    no_pool = replace(options, workers=0)
    frame_cache = {"cache_dir": cache, "frame_cache": "on"}
    variants = [("cold frame cache", frame_cache, options), ("warm frame cache", frame_cache, options),
                ("default cache", {"cache_dir": cache}, options)]
    if workers:
        variants.append(("no cache, pool off", {"cache_dir": None}, no_pool))
    for label, resources, run_options in variants:
        suite_run(label, resources, run_options)
    out["suite_runs"] = runs
    if "no cache, pool off" in runs:  # the pool moves work, it must not change a value
        on, off = (runs[label]["values"] for label in ("no cache", "no cache, pool off"))
        out["pool_values_identical"] = all(on[m] == off[m] or (on[m] != on[m] and off[m] != off[m]) for m in on)
    if device.type == "cpu" and args.lpips_ceiling:
        out["lpips_cpu"] = lpips_cpu_measure(args.width, args.height, pairs=4, repeats=2)
        print(lpips_cpu_report(out["lpips_cpu"]), flush=True)
    if workers and "edge_f1" in suite:
        out["edge_f1_pool_s"] = {}
        for label, run_options in (("pool on", options), ("pool off", no_pool)):
            seconds, _ = timed(lambda: score(*clips, ["edge_f1"], options=run_options, device=device,
                                             resources={"cache_dir": None}))
            out["edge_f1_pool_s"][label] = seconds
            print(f"[{device}] edge_f1 alone, {label}: {seconds:.2f} s", flush=True)
    if args.per_metric:
        out["per_metric_s"] = {}
        for name in suite:
            if time.monotonic() > args.deadline:  # the whole command must fit the time it was given
                out["per_metric_skipped"] = f"--budget-s {args.budget_s} reached"
                break
            seconds, _ = timed(lambda: score(*clips, [name], options=options, device=device,
                                             resources={"cache_dir": None}))
            out["per_metric_s"][name] = seconds
            print(f"[{device}] {name}: {seconds:.2f} s", flush=True)
    return out


def markdown(results: dict) -> str:
    devices = results["devices"]
    head = "| measure | " + " | ".join(f"{d['device']} ({d['name']}, {d['threads']} threads)" for d in devices) + " |"
    lines = [f"{results['clips']} clips x {results['frames']} frame pairs, {results['size']}, batch {results['batch_size']}, "
             f"{results['machine']}", "", head, "|---" * (len(devices) + 1) + "|"]

    def row(label, values):
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("metric worker processes", [str(d.get("workers", 0)) for d in devices])
    row("decode-only (s, median)", [f"{d['decode_only_s']:.2f}" for d in devices])
    for label in ("no cache", "cold frame cache", "warm frame cache", "default cache", "no cache, pool off"):
        row(f"default suite, {label} (s{', median' if label == 'no cache' else ''})",
            [f"{d['suite_runs'][label]['seconds']:.2f}" if label in d["suite_runs"] else "-" for d in devices])
    for label in ("pool on", "pool off"):
        row(f"edge_f1 alone, {label} (s)",
            [f"{d['edge_f1_pool_s'][label]:.2f}" if "edge_f1_pool_s" in d else "-" for d in devices])
    row("suite / decode-only (medians)",
        [f"{d['suite_runs']['no cache']['seconds'] / d['decode_only_s']:.2f}x" for d in devices])
    row("suite / decode-only, per round", [", ".join(f"{s / t:.2f}x" for s, t in zip(
        d["suite_runs"]["no cache"].get("rounds", []), d.get("decode_only_rounds", []))) for d in devices])
    row("second model (warm frame cache) speed-up",
        [f"{d['suite_runs']['no cache']['seconds'] / d['suite_runs']['warm frame cache']['seconds']:.2f}x" for d in devices])
    row("frame pairs / s (suite)", [f"{d['frame_pairs'] / d['suite_runs']['no cache']['seconds']:.1f}" for d in devices])
    if all("per_metric_s" in d for d in devices):
        for name in devices[0]["suite"]:
            row(f"{name} alone (s, incl. decode)", [f"{d['per_metric_s'].get(name, float('nan')):.2f}" for d in devices])
    for d in devices:
        if "pool_values_identical" in d:
            lines.append(f"\n{d['device']}: metric means identical with the pool on and off: "
                         f"{d['pool_values_identical']}")
    for d in devices:
        if "lpips_cpu" in d:
            lines.append("\n```\n" + lpips_cpu_report(d["lpips_cpu"]) + "\n```")
    if len(devices) > 1:
        cpu = next((d for d in devices if d["device"] == "cpu"), None)
        for d in devices:
            if cpu is not None and d is not cpu:
                lines.append(f"\nGPU ({d['device']}) over CPU, default suite: "
                             f"{cpu['suite_runs']['no cache']['seconds'] / d['suite_runs']['no cache']['seconds']:.2f}x")
                gpu_values, cpu_values = d["suite_runs"]["no cache"]["values"], cpu["suite_runs"]["no cache"]["values"]
                gaps = {m: abs(gpu_values[m] - cpu_values[m]) for m in gpu_values if m in cpu_values}
                worst = max(gaps, key=lambda m: gaps[m] if gaps[m] == gaps[m] else -1.0, default=None)
                if worst is not None:
                    lines.append(f"Largest |GPU - CPU| difference of a metric's mean over clips: {worst} {gaps[worst]:.3g}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devices", default="cuda,cpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT, or several (comma-separated) taken in turn")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of decode-only and the suite without cache (medians reported)")
    parser.add_argument("--workers", type=int, default=None,
                        help="metric worker processes (default: the engine's by device; 0: none, no pool-off runs)")
    parser.add_argument("--per-metric", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lpips-ceiling", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--budget-s", type=float, default=420,
                        help="no per-metric run starts after this many seconds (the suite runs always do)")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Every figure for the parsed command line; writes ``suite_speed.json`` and ``.md`` into ``args.out``."""
    args.deadline = time.monotonic() + args.budget_s
    sizes = parse_sizes(args.size)
    args.width, args.height = sizes[0]  # LPIPS's convolution ceiling: the first size's
    args.out.mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ensure_alexnet_weights(tmp)
        clips = make_clips(tmp / "clips", args.clips, args.frames, 0, 0, sizes=sizes)
        # As long as a timed clip and of each size: every batch shape the timed runs use is seen once (kernel
        # choices, memory pools). Two clips at least: a run of one has no confidence interval, so the first
        # bootstrap of the process (with scipy.stats's import, 0.3-0.6 s, once per process) would fall in the
        # first timed run.
        warmup = make_clips(tmp / "warmup", max(2, len(sizes)), args.frames, 0, 0, sizes=sizes)
        devices = []
        for name in args.devices.split(","):
            try:
                devices.append(bench_device(name, clips, warmup, args, tmp))
            except Exception as exc:  # noqa: BLE001 - one device failing must not lose the other's figures
                print(f"[{name}] failed: {type(exc).__name__}: {exc}", flush=True)
                failures[name] = f"{type(exc).__name__}: {exc}"
        shutil.rmtree(tmp / "clips")
    results = {"clips": args.clips, "frames": args.frames, "size": args.size, "batch_size": args.batch_size,
               "machine": f"{platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}", "devices": devices,
               "failures": failures}
    (args.out / "suite_speed.json").write_text(json.dumps(results, indent=2))
    table = markdown(results) if devices else ""
    table += "".join(f"\n{name} failed: {reason}\n" for name, reason in failures.items())
    (args.out / "suite_speed.md").write_text(table)
    print(table)
    return results


def main() -> None:
    measure(build_parser().parse_args())


if __name__ == "__main__":
    main()
