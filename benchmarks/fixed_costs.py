"""The fixed costs of a `foresight-eval score` process: what a run pays whatever its data (issue 17).

    python benchmarks/fixed_costs.py [--device cuda] [--repeats 5] [--baseline TREE] [--json FILE]

Runs `python -m foresight_eval score` as fresh processes on the suite's clips (``suite_speed.make_clips``:
3 camera-like clips x 32 frame pairs, 640x360, H.264; the default metrics), after one untimed run that fills
the reference cache and the weight-hash memo (a fresh ``$FORESIGHT_CACHE``), and reports the median of each
phase from the run's ``manifest.timings``: start-up (process start to the run: interpreter, imports), setup
(metric set-up, weights), scoring, merge, and "outside" (wall minus the phases: writing the run folder and
the process's exit), with start-up + setup as "to first batch". With ``--baseline TREE`` (a checkout or
``git archive`` of another commit) the same runs alternate between that tree and this one (PYTHONPATH), so a
busy machine weighs on both alike. LPIPS uses the cached AlexNet checkpoint, else seeded random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_alexnet_weights  # noqa: E402
from suite_speed import make_clips  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHASES = ("start_up", "setup", "scoring", "gather", "merge")


def run_once(tree: Path, preds: Path, refs: Path, out: Path, device: str, cache: Path) -> dict[str, float]:
    """One fresh `score` process on ``tree``'s package: its wall seconds and rank 0's phases."""
    # The tree first; the rest of the caller's path stays (where the dependencies were installed with --target).
    path = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "PYTHONPATH": path, "FORESIGHT_CACHE": str(cache)}
    command = [sys.executable, "-m", "foresight_eval", "score", str(preds), str(refs), "--device", device,
               "--out", str(out), "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"score failed on {tree} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    phases = json.loads((out / "summary.json").read_text())["manifest"]["timings"]["ranks"][0]
    figures = {name: phases.get(name, 0.0) for name in PHASES}
    figures.update(wall=wall, to_first_batch=figures["start_up"] + figures["setup"],
                   outside=wall - sum(figures[name] for name in PHASES))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    parser.add_argument("--baseline", type=Path, help="another source tree to time the same way, alternating")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    trees = {"this tree": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ensure_alexnet_weights(tmp)
        preds, refs = make_clips(tmp / "clips", args.clips, args.frames, height, width)
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
        for label, tree in trees.items():  # untimed: fills each tree's reference cache and weight-hash memo
            run_once(tree, preds, refs, tmp / "warm", args.device, tmp / f"cache-{label}")
        for repeat in range(args.repeats):
            for label, tree in trees.items():
                out = tmp / f"run-{label}-{repeat}"
                runs[label].append(run_once(tree, preds, refs, out, args.device, tmp / f"cache-{label}"))
    columns = ("start_up", "setup", "to_first_batch", "scoring", "merge", "outside", "wall")
    print(f"{args.clips} clips x {args.frames} frames at {args.size}, default metrics, --device {args.device}, "
          f"median of {args.repeats} fresh processes (seconds)")
    print(f"{'tree':<10} " + " ".join(f"{name:>14}" for name in columns))
    for label, figures in runs.items():
        print(f"{label:<10} " + " ".join(f"{statistics.median(f[name] for f in figures):>14.2f}" for name in columns))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
