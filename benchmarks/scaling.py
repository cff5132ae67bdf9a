"""Scaling of `score` over GPUs: wall time of the same run under `torchrun` with 1, 2, ... ranks (one
GPU each), the throughput ratio, whether every world size wrote the same results, and where the time went
(each rank's start-up, setup, scoring, gather and merge from the run's manifest.timings), and Amdahl's model of
the one-rank run: what does not shrink with ranks, and the best speed-up that leaves at 2 and 8 ranks.

    python benchmarks/scaling.py --ranks 1,2 --clips 64 --frames 48 --size 256x256 [--launchers torchrun,launch] [--rounds 3]

Goal (two H200s): at least 1.8x the single-rank throughput with 2 ranks. ``--launchers`` starts the ranks
with `torchrun --standalone` (default), `python -m foresight_eval.launch` (no elastic agent: no torch import
before the ranks, none to tear down after), or both, each world size with each launcher in turn.
``--rounds``: every run that many times, the runs' order reversed every other round (whatever runs second gets
the warmer machine); the figures are medians: a run's start-up alone (importing torch) varied by 1.6 s between
two runs on one 2 x H200 host (benchmarks/RESULTS.md, issue 17's nineteenth session), and one run of each
world size cannot tell that from the ranks' effect.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import ensure_alexnet_weights, make_pairs


def _make_shard(args: tuple[Path, int, int, int, int, int]) -> None:
    root, first, count, frames, height, width = args
    make_pairs(root / f"shard{first}", count, frames, height, width, first_index=first)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    parser.add_argument("--metrics", default="psnr,ssim,lpips", help="comma-separated, or 'default': the default suite")
    parser.add_argument("--device", default="cuda", help="cuda: one GPU per rank; cpu for a dry run")
    parser.add_argument("--launchers", default="torchrun", help="torchrun, launch, or both: torchrun,launch")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of every (world size, launcher), the order reversed every other round; medians")
    parser.add_argument("--json", type=Path, help="also write the figures and every rank's phases here")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Run every (world size, launcher) of ``args`` on the same clips ``args.rounds`` times, print the figures,
    return the report: per (world size, launcher) its median wall time, its speed-up over the smallest world size
    of its launcher (medians), whether the results of every round equal that one's first, every rank's median
    phases, and each round's wall time and phases."""
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ensure_alexnet_weights(tmp)
        workers = os.cpu_count() or 1
        per_worker = -(-args.clips // workers)
        jobs = [(tmp / "data", first, min(per_worker, args.clips - first), args.frames, height, width)
                for first in range(0, args.clips, per_worker)]
        with ProcessPoolExecutor(workers) as pool:  # encoding the clips is single-threaded per clip
            list(pool.map(_make_shard, jobs))
        preds, refs = tmp / "preds", tmp / "refs"
        for side in (preds, refs):
            side.mkdir()
            for shard in (tmp / "data").iterdir():
                for clip in (shard / side.name).iterdir():
                    clip.rename(side / clip.name)
        launchers = {"torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"],
                     "launch": [sys.executable, "-m", "foresight_eval.launch", "--nproc-per-node"]}
        configs = [(int(r), name) for r in args.ranks.split(",") for name in args.launchers.split(",")]
        walls: dict[tuple[int, str], list[float]] = {config: [] for config in configs}
        phases: dict[tuple[int, str], list[list[dict[str, float]]]] = {config: [] for config in configs}
        outputs: dict[tuple[int, str], list[tuple[dict, str]]] = {config: [] for config in configs}
        for round_index in range(args.rounds):
            for ranks, launcher in configs if round_index % 2 == 0 else configs[::-1]:
                out = tmp / f"run{ranks}-{launcher}"
                command = [*launchers[launcher], str(ranks), *(["-m", "foresight_eval"] if launcher == "torchrun" else []),
                           "score", str(preds), str(refs), *(["-m", args.metrics] if args.metrics != "default" else []),
                           "--device", args.device, "--out", str(out), "--json",
                           "--no-cache"]  # no run reads what an earlier one cached of the same references
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "4"})
                if done.returncode != 0:
                    raise SystemExit(f"{ranks} rank(s) failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
                walls[ranks, launcher].append(time.perf_counter() - start)
                summary = json.loads((out / "summary.json").read_text())
                outputs[ranks, launcher].append(({name: m["mean"] for name, m in summary["metrics"].items()},
                                                 (out / "per_frame.csv").read_text()))
                phases[ranks, launcher].append(summary["manifest"].get("timings", {}).get("ranks", []))
                shutil.rmtree(out)
                print(f"round {round_index}: {ranks} rank(s), {launcher}: {walls[ranks, launcher][-1]:.2f} s", flush=True)
    frames = args.clips * args.frames
    print(f"{args.clips} clips x {args.frames} frames at {width}x{height}, metrics {args.metrics}, "
          f"{args.rounds} round(s): medians")
    runs = {}
    for ranks, launcher in sorted(configs):
        base = min(config for config in configs if config[1] == launcher)
        same = all(output == outputs[base][0] for output in outputs[ranks, launcher])
        seconds = statistics.median(walls[ranks, launcher])
        speed_up = statistics.median(walls[base]) / seconds
        median_phases = phase_medians(phases[ranks, launcher])
        print(f"  {ranks} rank(s), {launcher}: {seconds:7.1f} s wall, {frames / seconds:8.1f} frames/s, "
              f"{speed_up:.2f}x of {base[0]} rank(s), results identical: {same}; rounds "
              + " ".join(f"{wall:.2f}" for wall in walls[ranks, launcher]))
        print("    " + phase_split(seconds, median_phases))
        runs[f"{ranks}" if launcher == "torchrun" else f"{ranks} {launcher}"] = {
            "ranks": ranks, "launcher": launcher, "wall_s": seconds, "speed_up": speed_up, "of_ranks": base[0],
            "results_identical": same, "phases": median_phases, "wall_rounds": walls[ranks, launcher],
            "phases_rounds": phases[ranks, launcher]}
    report = {"clips": args.clips, "frames": args.frames, "size": args.size, "metrics": args.metrics,
              "device": args.device, "rounds": args.rounds, "runs": runs}
    single = next((run for run in runs.values() if run["ranks"] == 1 and run["phases"]), None)
    if single is not None:
        report["model"] = fixed_and_shared(single["wall_s"], single["phases"][0])
        print("  " + describe_model(report["model"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    measure(build_parser().parse_args())


def phase_medians(runs: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per rank, each phase's median over the runs (each run: its ranks' phases, from the manifest).

    >>> phase_medians([[{"scoring": 3.0}, {"scoring": 2.0}], [{"scoring": 1.0}, {"scoring": 4.0}],
    ...                [{"scoring": 2.0}, {"scoring": 6.0}]])
    [{'scoring': 2.0}, {'scoring': 4.0}]
    """
    if not runs or not all(runs):
        return []
    return [{name: statistics.median(run[rank][name] for run in runs) for name in runs[0][rank]}
            for rank in range(len(runs[0]))]


def fixed_and_shared(wall: float, phases: dict[str, float]) -> dict:
    """Amdahl's model of a one-rank run: the scoring S is shared out among n ranks, the rest F (start-up, set-up,
    merge, writing and exit) is not, so n ranks take at best F + S / n. Returns F, S and the best speed-ups that
    follow, at 2 and 8 ranks and with no limit on ranks, and the S that 1.8x on 2 ranks needs (8 F).

    >>> model = fixed_and_shared(17.0, {"start_up": 4.0, "setup": 2.0, "scoring": 10.0, "merge": 0.5})
    >>> model["fixed_s"], model["best_speed_up"]["2"], model["scoring_for_1.8x_on_2_s"]
    (7.0, 1.416..., 56.0)
    """
    scoring = phases["scoring"]
    fixed = wall - scoring
    return {"fixed_s": fixed, "scoring_s": scoring,
            "best_speed_up": {"2": wall / (fixed + scoring / 2), "8": wall / (fixed + scoring / 8),
                              "unlimited": wall / fixed},
            "scoring_for_1.8x_on_2_s": 8 * fixed}


def describe_model(model: dict) -> str:
    best = model["best_speed_up"]
    return (f"model of the 1-rank run: fixed {model['fixed_s']:.1f} s, scoring {model['scoring_s']:.1f} s shared out; "
            f"at best {best['2']:.2f}x on 2 ranks, {best['8']:.2f}x on 8, {best['unlimited']:.2f}x on any number; "
            f"1.8x on 2 ranks needs scoring >= {model['scoring_for_1.8x_on_2_s']:.0f} s")


def phase_split(wall: float, ranks: list[dict[str, float]]) -> str:
    """Rank 0's phases (manifest.timings), the slowest rank's scoring, and what lies outside the run
    (torchrun's launch before the ranks start, writing the run folder, exiting)."""
    if not ranks:
        return "no phase timings in the manifest"
    main_rank = ranks[0]
    inside = sum(main_rank.values())
    parts = ", ".join(f"{name} {value:.2f}" for name, value in main_rank.items())
    slowest = max(rank.get("scoring", 0.0) for rank in ranks)
    return (f"rank 0 s: {parts}; slowest rank's scoring {slowest:.2f}; outside the run "
            f"(launch, writing, exit) {wall - inside:.2f}")


if __name__ == "__main__":
    main()
