"""Every figure of issue 17 (speed of the default suite) in one command, each against its goal.

    python benchmarks/issue17.py --out DIR [--gpu] [--scaling] [--quick] [--rounds 3] [--old-tree PATH]

CPU figures (this machine, its torch thread count), on camera-like clips at mixed sizes
(``suite_speed.make_clips``: multi-scale texture panning under moving shapes, sensor noise, H.264;
predictions blurred, noisy, one frame late), in ``--rounds`` interleaved rounds (the order of the two sides
alternates from round to round; the load average is recorded around every round), medians over rounds of
wall time (the goals) and of CPU time (user + system, all threads: the work done, less sensitive to other
jobs on a shared machine):

a) psnr + ssim + lpips through foresight-eval against the hand-written loop (``score_throughput.hand_loop``:
   PyAV, scikit-image SSIM and PSNR per frame, the ``lpips`` package per batch; float32 both; our SSIM with
   ``mode=wang``, the loop's definition). Goal >= 1.5x. Also timed, as its own row: the same with
   ``-p lpips.precision=bf16`` (the issue's opt-in bf16 autocast; its largest difference is recorded).
b) psnr + ssim against the same loop without LPIPS. Goal >= 3x.
c) the default suite now against the tree issue 17 was filed on (``--old-commit``, checked out with
   ``git worktree add`` unless ``--old-tree`` names a checkout), each in its own process (PYTHONPATH set to
   the tree), timed around ``score()`` after an untimed warm-up (start-up is recorded apart): the 9 metrics
   the issue lists, and today's full default set. Goal >= 2x. Each run has an empty cache folder of its own
   (``FORESIGHT_CACHE``): today's tree caches the reference side by default, and the entries of an earlier
   run of these (deterministic) clips, or of the other suite, would make it a second model's run; so each
   timed run is the first against its references. The tree the issue was filed on has no cache.

``--gpu``: also ``suite_speed.py`` (its own clips; the GPU suite against decode-only and against this
host's CPU threads, the reference cache cold and warm), with the goals of issue 17 (<= 1.5x decode-only,
>= 10x the CPU run); and the GPU suite against decode-only again on clips of the issue's own shape (3 pairs
of 83 frame pairs at 640x360, 320x240 and 176x144), each in ``--rounds`` alternating rounds too (the first
includes the CUDA graphs' captures of the clips' shapes). LPIPS: the cached AlexNet checkpoint, else seeded
random weights (timing only).

``--scaling`` (default: with ``--gpu`` when two GPUs are visible): also ``scaling.py``'s multi-GPU figure,
256 clips x 48 frames of 256x256, psnr + ssim + lpips and the default suite, 1 and 2 ranks started by
``python -m foresight_eval.launch``, in ``--rounds`` alternating rounds (medians), every rank's phases recorded
(goal >= 1.8x, results identical in every round). With
``--quick`` it is a dry run of the same on the CPU (4 tiny clips), to check that it runs.

Writes ``DIR/issue17.json`` (every timing, value and the machine) and ``DIR/issue17.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ISSUE_METRICS = ["psnr", "ssim", "lpips", "tc", "flicker", "warp_error", "motion_iou", "motion_iou_st", "edge_f1"]
OLD_COMMIT = "5be4a38"  # the tree when issue 17 was filed


def worker(args: argparse.Namespace) -> None:
    """In a process whose PYTHONPATH names one tree: time ``score()`` for each suite, print one JSON line.
    Imports only what every tree since the issue has (``foresight_eval.score``, ``ScoreOptions``)."""
    start = time.perf_counter()
    from foresight_eval import ScoreOptions, score

    imported = time.perf_counter() - start
    suites = json.loads(args.suites)
    options = ScoreOptions(batch_size=args.batch_size)
    everything = sorted({name for names in suites.values() for name in names})
    caches = tempfile.TemporaryDirectory()
    os.environ["FORESIGHT_CACHE"] = tempfile.mkdtemp(dir=caches.name)  # read at each run by today's tree
    score(args.warmup / "preds", args.warmup / "refs", everything, options=options, device="cpu")
    out = {"import_s": imported, "package": str(Path(sys.modules["foresight_eval"].__file__).parent), "suites": {}}
    for label, names in suites.items():
        os.environ["FORESIGHT_CACHE"] = tempfile.mkdtemp(dir=caches.name)  # (c): a first model's run
        seconds, cpu, run = timed(lambda: score(args.clips / "preds", args.clips / "refs", names, options=options,
                                                device="cpu"))
        errors = [pair.error for pair in run.pairs if not pair.ok]
        out["suites"][label] = {"seconds": seconds, "cpu_s": cpu, "metrics": sorted(run.metrics), "errors": errors,
                                "values": {name: summary.mean for name, summary in run.metrics.items()}}
    print("RESULT " + json.dumps(out), flush=True)


def run_tree(tree: Path, clips: Path, warmup: Path, suites: dict[str, list[str]], batch_size: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--clips", str(clips), "--warmup",
               str(warmup), "--suites", json.dumps(suites), "--batch-size", str(batch_size)]
    begin = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=str(tree), capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{tree}: exit {done.returncode}: {done.stderr[-2000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = time.perf_counter() - begin
    return result


def old_checkout(args: argparse.Namespace, tmp: Path) -> tuple[Path | None, str]:
    """The old tree: ``--old-tree`` if given, else a detached ``git worktree`` of ``--old-commit`` under tmp."""
    if args.old_tree:
        return Path(args.old_tree), f"--old-tree {args.old_tree}"
    path = tmp / "old-tree"
    done = subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(path), args.old_commit],
                          capture_output=True, text=True)
    if done.returncode:
        return None, f"git worktree add failed: {done.stderr.strip()[-300:]}"
    return path, f"git worktree of {args.old_commit}"


def git_commit() -> str:
    done = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    """(wall seconds, CPU seconds, result) of one call. CPU time counts the work done, whatever else loads the
    machine; on a shared machine wall time also counts the waiting (OpenMP threads spinning at a barrier
    while a sibling is descheduled count in both)."""
    begin, begin_cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return time.perf_counter() - begin, cpu_seconds() - begin_cpu, result


def cpu_rounds(args: argparse.Namespace, tmp: Path, old_tree: Path | None) -> dict:
    import torch

    from common import parse_sizes
    from score_throughput import hand_loop
    from suite_speed import make_clips

    from foresight_eval import RunContext, ScoreOptions, score
    from foresight_eval.metrics.registry import prepare_metrics

    sizes = parse_sizes(args.sizes)
    clips = make_clips(tmp / "clips", len(sizes) * args.clips_per_size, args.frames, 0, 0, sizes=sizes)[0].parent
    # Two clips: a run of one has no confidence interval, and the process's first bootstrap (with scipy.stats's
    # import, 0.3-0.6 s once per process) belongs in the warm-up, not in the first timed suite.
    warmup = make_clips(tmp / "warmup", 2, 4, sizes[-1][1], sizes[-1][0])[0].parent
    device = torch.device("cpu")
    options = ScoreOptions(batch_size=args.batch_size)
    default_suite = [m.name for m in prepare_metrics(None, {}, RunContext(device=device))[0]]
    suites = {"issue 9": ISSUE_METRICS, "default": default_suite}

    def ours(names, params=None):
        def call():
            run = score(clips / "preds", clips / "refs", names, params=params, options=options, device=device)
            return {name: summary.mean for name, summary in run.metrics.items()}
        return call

    def hand(with_lpips):
        return lambda: hand_loop(clips / "preds", clips / "refs", device, args.batch_size, with_lpips=with_lpips)[1]

    # Each comparison: its two sides, run one after the other within a round, in alternating order.
    # SSIM as the loop computes it (scikit-image's Gaussian window, valid region): mode=wang.
    same_ssim = {"ssim": {"mode": "wang"}}
    comparisons = {"a": {"hand loop": hand(True), "foresight-eval": ours(["psnr", "ssim", "lpips"], same_ssim),
                         "foresight-eval bf16": ours(["psnr", "ssim", "lpips"],
                                                     {**same_ssim, "lpips": {"precision": "bf16"}})},
                   "b": {"hand loop": hand(False), "foresight-eval": ours(["psnr", "ssim"], same_ssim)}}
    for sides in comparisons.values():  # untimed: imports, weights, thread pools
        for fn in sides.values():
            fn()
    trees = {"now": HERE.parent}
    if old_tree is not None:
        trees = {"old": old_tree, **trees}
    rounds = []
    for index in range(args.rounds):
        flip = index % 2 == 1
        record = {"load_before": os.getloadavg(), "seconds": {}, "cpu_s": {}, "values": {}, "trees": {}}
        for key, sides in comparisons.items():
            for label in (reversed(list(sides)) if flip else list(sides)):
                seconds, cpu, values = timed(sides[label])
                record["seconds"][f"{key}/{label}"], record["values"][f"{key}/{label}"] = seconds, values
                record["cpu_s"][f"{key}/{label}"] = cpu
                print(f"round {index + 1} {key} {label}: {seconds:.2f} s (CPU {cpu:.2f} s)", flush=True)
        for label in (reversed(list(trees)) if flip else list(trees)):
            try:
                record["trees"][label] = run_tree(trees[label], clips, warmup, suites, args.batch_size)
            except RuntimeError as exc:
                record["trees"][label] = {"error": str(exc)}
            for suite, figures in record["trees"][label].get("suites", {}).items():
                print(f"round {index + 1} {suite} suite, {label} tree: {figures['seconds']:.2f} s "
                      f"(CPU {figures['cpu_s']:.2f} s)", flush=True)
        record["load_after"] = os.getloadavg()
        rounds.append(record)
    frames = sum(1 for _ in (clips / "preds").glob("*.mp4")) * args.frames
    return {"sizes": args.sizes, "clips": len(sizes) * args.clips_per_size, "frames_per_clip": args.frames,
            "frame_pairs": frames, "torch_threads": torch.get_num_threads(), "default_suite": default_suite,
            "issue_suite": ISSUE_METRICS, "rounds": rounds}


def summarise(cpu: dict) -> list[dict]:
    """One row per figure: the medians of both sides, the ratio of the medians, the per-round ratios, the goal."""
    rows = []
    rounds = cpu["rounds"]

    def row(figure, goal, slow, fast, slow_cpu, fast_cpu):
        slow_s = [s for s in slow if s is not None]
        fast_s = [f for f in fast if f is not None]
        if not slow_s or not fast_s:
            rows.append({"figure": figure, "goal": goal, "error": "not measured"})
            return
        ratio = statistics.median(slow_s) / statistics.median(fast_s)
        per_round = [s / f for s, f in zip(slow, fast) if s is not None and f is not None]
        cpu_ratio = statistics.median(slow_cpu) / statistics.median(fast_cpu) if slow_cpu and fast_cpu else None
        rows.append({"figure": figure, "baseline_s": statistics.median(slow_s), "ours_s": statistics.median(fast_s),
                     "ratio": ratio, "per_round": per_round, "goal": goal, "met": ratio >= goal,
                     "cpu_ratio": cpu_ratio})

    for key, side, figure, goal in (("a", "foresight-eval", "psnr + ssim + lpips vs hand loop", 1.5),
                                    ("a", "foresight-eval bf16", "psnr + ssim + lpips (lpips.precision=bf16) vs hand loop", 1.5),
                                    ("b", "foresight-eval", "psnr + ssim vs hand loop", 3.0)):
        row(figure, goal, [r["seconds"][f"{key}/hand loop"] for r in rounds],
            [r["seconds"][f"{key}/{side}"] for r in rounds],
            [r["cpu_s"][f"{key}/hand loop"] for r in rounds], [r["cpu_s"][f"{key}/{side}"] for r in rounds])

    def suite_seconds(tree, suite, measure="seconds"):
        return [r["trees"].get(tree, {}).get("suites", {}).get(suite, {}).get(measure) for r in rounds]

    for suite, figure in (("issue 9", "the issue's 9 metrics, now vs issue filed"),
                          ("default", "today's default suite, now vs issue filed")):
        cpu = [[s for s in suite_seconds(tree, suite, "cpu_s") if s is not None] for tree in ("old", "now")]
        row(figure, 2.0, suite_seconds("old", suite), suite_seconds("now", suite), *cpu)
    return rows


def value_gaps(cpu: dict) -> dict[str, float]:
    """Largest |difference| of a metric's mean between the two sides of each comparison, over rounds."""
    gaps: dict[str, float] = {}
    for r in cpu["rounds"]:
        for key, side in (("a", "foresight-eval"), ("a", "foresight-eval bf16"), ("b", "foresight-eval")):
            hand, ours = r["values"][f"{key}/hand loop"], r["values"][f"{key}/{side}"]
            for name in hand:
                label = f"{key}: {name} hand vs {'ours' if side == 'foresight-eval' else 'ours bf16'}"
                gaps[label] = max(gaps.get(label, 0.0), abs(hand[name] - ours[name]))
        now, old = (r["trees"].get(tree, {}).get("suites", {}).get("default", {}).get("values", {})
                    for tree in ("now", "old"))
        for name in now:
            if name in old:
                gaps[f"c: {name} now vs old"] = max(gaps.get(f"c: {name} now vs old", 0.0), abs(now[name] - old[name]))
    return gaps


def _against_no_cache(figure: str, device_result: dict, run: str) -> dict:
    """A report row: the suite without cache over ``run`` (one of suite_speed's runs with a cache)."""
    runs = device_result["suite_runs"]
    return {"figure": figure, "ratio": runs["no cache"]["seconds"] / runs[run]["seconds"],
            "ours_s": runs[run]["seconds"], "goal": "report", "met": None}


def _decode_ratio_row(figure: str, gpu: dict) -> dict:
    """The row of the GPU suite's time against decode-only time, from one device's suite_speed figures."""
    suite_s = gpu["suite_runs"]["no cache"]["seconds"]
    ratio = suite_s / gpu["decode_only_s"]
    per_round = [s / d for s, d in zip(gpu["suite_runs"]["no cache"].get("rounds", []), gpu["decode_only_rounds"])]
    return {"figure": figure, "baseline_s": gpu["decode_only_s"], "ours_s": suite_s, "ratio": ratio,
            "per_round": per_round, "goal": "<= 1.5x", "met": ratio <= 1.5}


def gpu_figures(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """``suite_speed.py``'s measurement (reused, not copied) and its figures against the issue's goals."""
    import suite_speed

    argv = ["--out", str(args.out / "suite_speed"), "--no-per-metric", "--no-lpips-ceiling", "--rounds", str(args.rounds)]
    if args.quick:
        argv += ["--clips", "1", "--frames", "4", "--size", "96x64"]
    results = suite_speed.measure(suite_speed.build_parser().parse_args(argv))
    devices = {d["device"].split(":")[0]: d for d in results["devices"]}
    rows = []
    gpu, cpu = devices.get("cuda"), devices.get("cpu")
    if gpu is not None:
        rows.append(_decode_ratio_row("GPU default suite / decode-only time", gpu))
        # The clips of the issue's own figure: 3 pairs, 249 frame pairs, 640x360 down to 176x144.
        shape = ["--size", "96x64,64x48", "--frames", "4"] if args.quick else ["--size", "640x360,320x240,176x144",
                                                                              "--frames", "83"]
        issue_shape = suite_speed.measure(suite_speed.build_parser().parse_args(
            ["--out", str(args.out / "suite_speed_issue_shape"), "--devices", "cuda", "--no-per-metric",
             "--no-lpips-ceiling", "--clips", "3", *shape, "--rounds", str(args.rounds)]))
        results["issue_shape"] = issue_shape
        if issue_shape["devices"]:
            rows.append(_decode_ratio_row("GPU default suite / decode-only time, the issue's clip shape "
                                          f"({issue_shape['size']}, {issue_shape['frames']} frame pairs each)",
                                          issue_shape["devices"][0]))
        rows.append(_against_no_cache("GPU frame cache, warm vs no cache (second model)", gpu, "warm frame cache"))
        rows.append(_against_no_cache("GPU cache as by default (frame cache auto: off on a GPU), second model, vs "
                                      "no cache", gpu, "default cache"))
    if gpu is not None and cpu is not None:
        ratio = cpu["suite_runs"]["no cache"]["seconds"] / gpu["suite_runs"]["no cache"]["seconds"]
        rows.append({"figure": f"GPU vs this host's CPU ({cpu['threads']} threads), default suite",
                     "baseline_s": cpu["suite_runs"]["no cache"]["seconds"],
                     "ours_s": gpu["suite_runs"]["no cache"]["seconds"], "ratio": ratio, "goal": ">= 10x",
                     "met": ratio >= 10})
    if cpu is not None:
        rows.append(_against_no_cache("CPU frame cache, warm vs no cache (second model)", cpu, "warm frame cache"))
    return results, rows


def scaling_figure(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """``scaling.py``'s measurement (reused, not copied) at the issue's size, for psnr + ssim + lpips (the suite
    of the issue's figure) and the default suite, and their rows against the goal."""
    import scaling

    reports, rows = {}, []
    for metrics in ("psnr,ssim,lpips", "default"):
        argv = ["--ranks", "1,2", "--launchers", "launch", "--metrics", metrics, "--rounds", str(args.rounds)]
        argv += (["--clips", "4", "--frames", "4", "--size", "64x64", "--device", "cpu"] if args.quick else
                 ["--clips", "256", "--frames", "48", "--size", "256x256"])
        report = reports[metrics] = scaling.measure(scaling.build_parser().parse_args(argv))
        one, two = report["runs"]["1 launch"], report["runs"]["2 launch"]
        best = report["model"]["best_speed_up"]["2"] if "model" in report else float("nan")
        rows.append({"figure": f"2 ranks vs 1, {metrics} ({report['clips']} clips, {report['device']}, launch; "
                               f"results identical: {two['results_identical']}; at best {best:.2f}x with the "
                               f"one-rank run's fixed part)",
                     "baseline_s": one["wall_s"], "ours_s": two["wall_s"], "ratio": two["speed_up"], "goal": ">= 1.8x",
                     "met": two["speed_up"] >= 1.8 and two["results_identical"]})
    return reports, rows


def markdown(report: dict) -> str:
    lines = [f"Issue 17 figures: {report['machine']}, commit {report['commit']}, {report['date']}", ""]
    if "cpu" in report:
        cpu = report["cpu"]
        loads = [r["load_before"][0] for r in cpu["rounds"]] + [r["load_after"][0] for r in cpu["rounds"]]
        lines += [f"CPU: {cpu['clips']} clips ({cpu['sizes']}) x {cpu['frames_per_clip']} frame pairs, torch threads "
                  f"{cpu['torch_threads']}, {len(cpu['rounds'])} interleaved rounds, medians; 1-min load average "
                  f"{min(loads):.1f}-{max(loads):.1f} during the rounds; old tree: {report.get('old_tree', '-')}", ""]
    lines += ["| figure | baseline | foresight-eval | ratio (per round) | CPU-time ratio | goal | met |",
              "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['figure']} | | | {row['error']} | | {row['goal']} | no |")
            continue
        base = f"{row['baseline_s']:.2f} s" if "baseline_s" in row else ""
        per_round = " (" + ", ".join(f"{r:.2f}" for r in row["per_round"]) + ")" if row.get("per_round") else ""
        goal = f">= {row['goal']}x" if isinstance(row["goal"], float) else row["goal"]
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        cpu_ratio = f"{row['cpu_ratio']:.2f}x" if row.get("cpu_ratio") else ""
        lines.append(f"| {row['figure']} | {base} | {row['ours_s']:.2f} s | {row['ratio']:.2f}x{per_round} "
                     f"| {cpu_ratio} | {goal} | {met} |")
    if report.get("value_gaps"):
        lines += ["", "Largest difference of a metric's mean between the sides compared: " + ", ".join(
            f"{name} {gap:.2g}" for name, gap in sorted(report["value_gaps"].items()))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--gpu", action="store_true", help="also suite_speed.py's GPU and CPU-thread figures")
    parser.add_argument("--no-cpu", dest="cpu", action="store_false", help="skip the CPU rounds (a, b, c)")
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=None,
                        help="also the 2-GPU scaling figure (default: with --gpu when two GPUs are visible)")
    parser.add_argument("--quick", action="store_true", help="tiny clips, one round: checks that everything runs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each figure, CPU and GPU")
    parser.add_argument("--sizes", default="640x360,320x240,176x144", help="WIDTHxHEIGHT of the clips, in turn")
    parser.add_argument("--clips-per-size", type=int, default=1)
    parser.add_argument("--frames", type=int, default=24, help="frame pairs per clip")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--old-tree", help="a checkout of --old-commit (default: a temporary git worktree)")
    # the per-tree process of figure c
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clips", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--suites", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.out is None:
        parser.error("--out is required")
    if args.quick:
        args.sizes, args.frames = "96x64,64x48", 4
        args.rounds = min(args.rounds, 1)
    sys.path.insert(0, str(HERE))
    from common import ensure_alexnet_weights

    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
              "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": []}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ensure_alexnet_weights(tmp)  # sets $TORCH_HOME for the tree processes too when it writes random weights
        if args.cpu:
            old_tree, how = old_checkout(args, tmp)
            report["old_tree"] = how
            try:
                report["cpu"] = cpu_rounds(args, tmp, old_tree)
            finally:
                if old_tree is not None and not args.old_tree:
                    subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old_tree)],
                                   capture_output=True)
            report["rows"] += summarise(report["cpu"])
            report["value_gaps"] = value_gaps(report["cpu"])
        if args.gpu:
            report["suite_speed"], rows = gpu_figures(args)
            report["rows"] += rows
        if args.scaling or (args.scaling is None and args.gpu and torch.cuda.device_count() >= 2):
            report["scaling"], rows = scaling_figure(args)
            report["rows"] += rows
    (args.out / "issue17.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.out / "issue17.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
