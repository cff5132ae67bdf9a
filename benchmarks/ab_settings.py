"""A scoring run under several settings of the package's constants, in alternating rounds in one process,
against decode-only: the A/B figures of issue 17 (benchmarks/RESULTS.md), reproducible from one command.

    python benchmarks/ab_settings.py \\
        --setting alone engine.PAIRS_OPEN_AT_THE_START_ON_DEVICE=1 \\
        --setting two-open engine.PAIRS_OPEN_AT_THE_START_ON_DEVICE=2 \\
        [--device cuda] [--rounds 7] [--clips 3 --frames 83 --size 640x360,320x240,176x144] [--json FILE]

A setting is a name and its assignments: ``MODULE.NAME=VALUE`` sets a constant of ``foresight_eval.MODULE``
(VALUE a Python literal: ``2``, ``True``, ``'auto'``), ``env:NAME=VALUE`` an environment variable read at call
time (``env:FORESIGHT_EVAL_CUDA_GRAPHS=0``: no CUDA graphs), ``sys:switchinterval=SECONDS`` the interpreter's
thread switch interval (how long a thread waiting for the GIL waits before it asks the holder to drop it),
``without:METRIC`` runs the suite without that metric, ``frames:predecoded`` reads every clip's frames from memory,
decoded once before the timed rounds (the suite's own work without the decoding's: its floor on the clips; the
decode-only rounds still decode). A setting with no assignment is the code as it is. Only
what the package reads when it runs takes effect: a constant copied at import (a default argument, a value in
another module's namespace) does not change. ``--leave-one-out`` adds a setting ``-METRIC``
(``without:METRIC``) for every metric of the suite: what each metric adds to the run's time on its critical
path (not its work: work that overlaps other work adds nothing).

On ``suite_speed.py``'s camera-like clips (``--size`` takes several sizes, which the clips take in turn), no
reference cache, the engine's default workers (counted at each run: ``env:LOCAL_WORLD_SIZE=2`` halves them):
each setting runs ``--warm-up`` times untimed first (kernels, CUDA graphs of the shapes it sees), then every
round times decode-only (the engine's decoding and upload, no metric) and the suite under each setting, the
settings' order reversed every other round (whatever runs second in a round gets the warmer machine). Prints
each round, then per setting the median, its ratio to decode-only's median, and whether its metric means equal
the first setting's. On Linux also the CPU seconds the whole machine was busy during each run (``/proc/stat``:
all CPUs, all processes, the worker processes included): work that overlaps other work adds nothing to the
wall time but shows there (issue 17's seventeenth session found OpenCV's thread pools in the workers by it).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_alexnet_weights, parse_sizes  # noqa: E402
from pipeline_throughput import decode_only  # noqa: E402
from suite_speed import make_clips, timed  # noqa: E402

from foresight_eval import RunContext, ScoreOptions, score  # noqa: E402
from foresight_eval.results import RunResult  # noqa: E402
from foresight_eval.distributed import resolve_device  # noqa: E402
from foresight_eval.io.video import VideoReader  # noqa: E402
from foresight_eval.metrics.registry import prepare_metrics  # noqa: E402

_UNSET = object()
WITHOUT = "without:"  # an assignment naming a metric the setting's runs leave out
SWITCH_INTERVAL = "sys:switchinterval"  # the interpreter's thread switch interval (sys.setswitchinterval), seconds
PREDECODED = "frames:predecoded"  # the setting's runs read the clips' frames from memory (PredecodedFrames)


def machine_busy_seconds() -> float | None:
    """CPU seconds the machine's CPUs have been busy since boot: ``/proc/stat``'s user, nice, system, irq and
    softirq time of all CPUs (guest time is within user time; idle, iowait and a hypervisor's steal are not
    work done here), None where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in stat.readline().split()[1:8])
    except OSError:
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed_with_busy(fn) -> tuple[float, float | None, object]:
    """``suite_speed.timed`` of ``fn``, with the CPU seconds the machine was busy meanwhile (None: not known)."""
    before = machine_busy_seconds()
    seconds, result = timed(fn)
    after = machine_busy_seconds()
    return seconds, None if before is None or after is None else after - before, result


def _median_or_none(values: list[float | None]) -> float | None:
    return None if None in values else statistics.median(values)


class Settings:
    """Named sets of assignments, applied one set at a time over the code's own values (kept to restore)."""

    def __init__(self, named: list[list[str]]):
        self.named: dict[str, list[tuple[object, str, object]]] = {}
        self.assignments: dict[str, list[str]] = {}  # as given
        self.dropped: dict[str, set[str]] = {}  # the metrics each setting runs without ("without:METRIC")
        self.predecoded: dict[str, bool] = {}  # whether the setting's runs read the frames from memory
        self._originals: dict[tuple[int, str], tuple[object, object]] = {}
        for name, *assignments in named:
            if name in self.named:
                raise SystemExit(f"setting {name!r} given twice")
            self.dropped[name] = {assignment.removeprefix(WITHOUT) for assignment in assignments
                                  if assignment.startswith(WITHOUT)}
            self.predecoded[name] = PREDECODED in assignments
            self.named[name] = [self._parse(assignment) for assignment in assignments
                                if not assignment.startswith(WITHOUT) and assignment != PREDECODED]
            self.assignments[name] = assignments

    def _parse(self, assignment: str) -> tuple[object, str, object]:
        target, sep, text = assignment.partition("=")
        if not sep:
            raise SystemExit(f"{assignment!r}: expected MODULE.NAME=VALUE or env:NAME=VALUE")
        if target.startswith("env:"):
            name = target[len("env:"):]
            self._originals.setdefault((id(os.environ), name), (os.environ, os.environ.get(name, _UNSET)))
            return os.environ, name, text
        if target == SWITCH_INTERVAL:
            self._originals.setdefault((id(sys), target), (sys, sys.getswitchinterval()))
            return sys, target, float(text)
        module_name, _, name = target.rpartition(".")
        module = importlib.import_module(f"foresight_eval.{module_name}")
        if not hasattr(module, name):
            raise SystemExit(f"{target}: foresight_eval.{module_name} has no {name!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise SystemExit(f"{assignment!r}: the value is not a Python literal ({exc})") from exc
        self._originals.setdefault((id(module), name), (module, getattr(module, name)))
        return module, name, value

    def apply(self, setting: str) -> None:
        """Every assigned name back to the code's own value, then ``setting``'s assignments."""
        for (_, name), (owner, original) in self._originals.items():
            _assign(owner, name, original)
        for owner, name, value in self.named[setting]:
            _assign(owner, name, value)


class PredecodedFrames:
    """A context, entered as often as wanted: within it a video clip's frames come from memory, decoded by the
    code's own reader on the clip's first read (within it), kept, and given out again (the same arrays) at every
    later read of the same file."""

    def __init__(self) -> None:
        decode, kept = VideoReader.frames, {}

        def frames(reader: VideoReader) -> Iterator[np.ndarray]:
            if reader.path not in kept:
                kept[reader.path] = list(decode(reader))
            return iter(kept[reader.path])

        self._patch = mock.patch.object(VideoReader, "frames", frames)

    def __enter__(self) -> None:
        self._patch.start()

    def __exit__(self, *exc_info: object) -> None:
        self._patch.stop()


def _assign(owner: object, name: str, value: object) -> None:
    if owner is sys:
        sys.setswitchinterval(value)
    elif owner is os.environ:
        if value is _UNSET:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)
    else:
        setattr(owner, name, value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", nargs="+", action="append", default=[], metavar="NAME [ASSIGNMENT ...]",
                        help="a setting's name and its assignments (two settings at least, --leave-one-out's included)")
    parser.add_argument("--leave-one-out", action="store_true",
                        help="also a setting '-METRIC' (without:METRIC) for each metric of the suite")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warm-up", type=int, default=3, help="untimed runs per setting before the rounds")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32, help="frame pairs per clip")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT, or several (comma-separated) taken in turn")
    parser.add_argument("--metrics", default="default", help="comma-separated, or 'default': the default suite")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """The rounds of ``args``; prints them and the medians, returns them (as ``--json`` writes them)."""
    device = resolve_device(args.device)
    options = ScoreOptions(batch_size=args.batch_size)  # workers: the engine's default, at each run
    sizes = parse_sizes(args.size)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # Before the default suite is listed: without AlexNet's weights it has no lpips (the A/Bs of issue 17's
        # sixteenth to twentieth sessions ran without it; benchmarks/RESULTS.md, the twentieth session).
        ensure_alexnet_weights(tmp)
        metrics = ([metric.name for metric in prepare_metrics(None, {}, RunContext(device=device))[0]]
                   if args.metrics == "default" else args.metrics.split(","))
        named = args.setting + ([[f"-{metric}", WITHOUT + metric] for metric in metrics] if args.leave_one_out else [])
        if len(named) < 2:
            raise SystemExit("give two settings at least (a setting with no assignment is the code as it is)")
        settings = Settings(named)
        for setting, dropped in settings.dropped.items():
            if dropped - set(metrics):
                raise SystemExit(f"setting {setting!r}: {', '.join(sorted(dropped - set(metrics)))} not in the suite "
                                 f"({', '.join(metrics)})")
        clips = make_clips(tmp / "clips", args.clips, args.frames, 0, 0, sizes=sizes)
        predecoded = PredecodedFrames()  # one memory of the clips' frames for every setting that reads from it
        def run(setting: str) -> RunResult:
            chosen = [metric for metric in metrics if metric not in settings.dropped[setting]]
            with predecoded if settings.predecoded[setting] else nullcontext():
                return score(*clips, chosen, options=options, device=device, resources={"cache_dir": None})

        for setting in settings.named:
            settings.apply(setting)
            for _ in range(args.warm_up):
                run(setting)
        decode_rounds: list[float] = []
        decode_busy: list[float | None] = []
        suite_rounds: dict[str, list[float]] = {setting: [] for setting in settings.named}
        suite_busy: dict[str, list[float | None]] = {setting: [] for setting in settings.named}
        means: dict[str, dict[str, float]] = {}
        for round_index in range(args.rounds):
            settings.apply(next(iter(settings.named)))  # decode-only under the first setting
            seconds, busy, _ = timed_with_busy(lambda: decode_only(*clips, options, device))
            decode_rounds.append(seconds)
            decode_busy.append(busy)
            order = list(settings.named) if round_index % 2 == 0 else list(reversed(settings.named))
            for setting in order:
                settings.apply(setting)
                seconds, busy, result = timed_with_busy(lambda: run(setting))
                suite_rounds[setting].append(seconds)
                suite_busy[setting].append(busy)
                means[setting] = {metric: summary.mean for metric, summary in result.metrics.items()}
            print(f"round {round_index}: decode-only {decode_rounds[-1]:.3f} s; "
                  + ", ".join(f"{setting} {suite_rounds[setting][-1]:.3f} s" for setting in order), flush=True)
    decode = statistics.median(decode_rounds)
    first = next(iter(settings.named))
    report = {"device": str(device), "clips": args.clips, "frames": args.frames, "size": args.size,
              "metrics": metrics, "decode_only_s": decode, "decode_only_rounds": decode_rounds,
              "decode_only_cpu_busy_s": _median_or_none(decode_busy), "decode_only_cpu_busy_rounds": decode_busy,
              "settings": {}}

    def busy_note(busy: float | None) -> str:
        return "" if busy is None else f"; CPUs busy {busy:.2f} s"

    print(f"decode-only median {decode:.3f} s{busy_note(report['decode_only_cpu_busy_s'])}")
    for setting, rounds in suite_rounds.items():
        median, busy = statistics.median(rounds), _median_or_none(suite_busy[setting])
        same = all(means[setting][metric] == means[first][metric] for metric in means[setting].keys() & means[first])
        report["settings"][setting] = {"assignments": settings.assignments[setting], "median_s": median, "rounds": rounds,
                                       "cpu_busy_s": busy, "cpu_busy_rounds": suite_busy[setting],
                                       "means": means[setting], "means_equal_first": same}
        print(f"  {setting}: median {median:.3f} s = {median / decode:.2f}x decode-only{busy_note(busy)}; metric means "
              f"equal {first}'s (those both ran): {same}; rounds " + " ".join(f"{seconds:.3f}" for seconds in rounds))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    measure(build_parser().parse_args())


if __name__ == "__main__":
    main()
