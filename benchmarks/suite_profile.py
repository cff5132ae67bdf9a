"""Where one default-suite run's time goes: each metric's share, and the top of a profile of the whole run.

    python benchmarks/suite_profile.py [--device cuda] [--clips 3 --frames 32 --size 640x360[,320x240...]] [--top 40]
                                       [--metrics psnr,ssim] [--trace] [--reference-cache]

On ``suite_speed.py``'s camera-like clips, after an untimed warm-up: decode-only and the suite's wall time;
then one run under cProfile (this package's functions by cumulative time, every function by own time); then
one run with each metric's ``update`` and ``compute`` timed between device synchronisations (an upper bound
on its share: the synchronisation stops work from overlapping). On a GPU, last, one run under
``torch.cuda.set_sync_debug_mode("warn")``: every operation that makes the host wait for the GPU (a
copy from pageable memory, ``.item()``, ``.cpu()``, ``nonzero``), counted by the package line that called
it. Each one drains the GPU's queue, so the host's launches and the GPU's work stop overlapping.

``--steps N``: first N runs with the scoring thread's time split by step, untraced: host timers around each
metric's hooks, the waits for decoded batches and the engine's steps (opening and finishing a pair, the copies,
the summaries: :data:`ENGINE_STEPS`), without synchronising the device, so nothing stops overlapping; a step's
time includes the thread's waits for the GIL. Medians over the runs, and the rest of the run (the wall time
outside every step). Issue 17's nineteenth session read the GPU suite's critical path from it.

``--trace``: also one run under ``torch.profiler`` with each metric's hooks labelled: per metric the host's
time in its hooks (not synchronised), its kernels' count and GPU time; for the run, the GPU's busy time
(the union of its kernels' intervals) against the wall time, and how long the scoring thread waited for
decoded batches. Busy time near the wall time: the GPU is the bound; host time near it with many kernels:
the launches are; long waits for batches: decoding is. Then the run's timeline: the scoring thread's steps
in order (a batch's metric hooks as one step), each decoding thread's stacked batches and the worker pool's
hand-overs, with the GPU's busy share during each: where the pipeline stalls, and on what.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import contextlib
import importlib
import io
import pstats
import statistics
import sys
import tempfile
import time
import traceback
import threading
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_alexnet_weights, parse_sizes  # noqa: E402
from pipeline_throughput import decode_only  # noqa: E402
from suite_speed import make_clips, timed  # noqa: E402

from foresight_eval import RunContext, ScoreOptions, score  # noqa: E402
from foresight_eval.decoding import PairFrames, Prefetched  # noqa: E402
from foresight_eval.distributed import resolve_device  # noqa: E402
from foresight_eval.metrics.registry import metric_classes, prepare_metrics  # noqa: E402


def synchronised(device: torch.device):
    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return wait


def wrap_metric_hooks(names: list[str], wrap) -> None:
    """Replace ``update`` and ``compute`` of every class the suite's metrics use (each class once) by
    ``wrap(original)``."""
    wrapped = set()
    for name in names:
        for klass in metric_classes()[name].__mro__:
            for hook in ("update", "compute"):
                if hook in vars(klass) and (klass, hook) not in wrapped:
                    wrapped.add((klass, hook))
                    setattr(klass, hook, wrap(vars(klass)[hook]))


def time_metric_hooks(names: list[str], device: torch.device, spent: collections.Counter) -> None:
    """Time each metric's hooks between device synchronisations, adding seconds to ``spent``."""
    wait = synchronised(device)

    def timed(original):
        def timed_hook(self, *args, **kwargs):
            wait()
            start = time.perf_counter()
            result = original(self, *args, **kwargs)
            wait()
            spent[self.name] += time.perf_counter() - start
            return result
        return timed_hook

    wrap_metric_hooks(names, timed)


def label_metric_hooks(names: list[str]) -> None:
    """Label each metric's hooks for the profiler: ``metric:<name>``."""
    def labelled(original):
        def labelled_hook(self, *args, **kwargs):
            with torch.profiler.record_function(f"metric:{self.name}"):
                return original(self, *args, **kwargs)
        return labelled_hook

    wrap_metric_hooks(names, labelled)


def time_batch_waits(waited: list[float]) -> None:
    """Add to ``waited[0]`` the seconds the main (scoring) thread spends in ``Prefetched.__next__``."""
    original = Prefetched.__next__
    main = threading.main_thread()

    def timed_next(self):
        if threading.current_thread() is not main:
            return original(self)
        start = time.perf_counter()
        try:
            with torch.profiler.record_function("engine:wait for decoded batch"):
                return original(self)
        finally:
            waited[0] += time.perf_counter() - start

    Prefetched.__next__ = timed_next


# The scoring thread's steps outside the metrics' hooks, labelled for the trace:
# (module, class or None, function, label).
ENGINE_STEPS = (
    ("foresight_eval.engine", None, "prepare_metrics", "run:prepare metrics"),
    ("foresight_eval.engine", None, "open_run_cache", "run:open cache"),
    ("foresight_eval.engine", None, "pair_clips", "run:pair clips"),
    ("foresight_eval.engine", None, "pair_input_hashes", "run:hash inputs"),
    ("foresight_eval.engine", None, "_to_device", "engine:to device"),
    ("foresight_eval.engine", None, "_values_to_host", "engine:clip's values to the host"),
    ("foresight_eval.engine", None, "_record_per_frame", "engine:per-frame rows"),
    ("foresight_eval.engine", None, "summarize_study", "run:summaries and CIs"),
    ("foresight_eval.engine", None, "study_record", "run:study record"),
    ("foresight_eval.engine", None, "manifest_inputs", "run:manifest inputs"),
    ("foresight_eval.engine", None, "build_manifest", "run:build manifest"),
    ("foresight_eval.engine", "PairInFlight", "__init__", "engine:open pair"),
    ("foresight_eval.engine", "PairInFlight", "finish", "engine:finish pair"),
    ("foresight_eval.workers", "WorkerPool", "__enter__", "run:pool start"),
    ("foresight_eval.workers", "WorkerPool", "__exit__", "run:pool shut-down"),
    ("foresight_eval.workers", "WorkerPool", "warm_up", "run:pool warm-up"),
)


def label_decoded_batches(stacked: list[tuple[int, float, float]]) -> None:
    """Append (thread, start, end) in ``time.perf_counter`` seconds to ``stacked`` for each batch a decoding
    thread stacks (``PairFrames._stack``); the profiler records no labels in those threads."""
    original = PairFrames._stack

    def timed(self, pending):
        begin = time.perf_counter()
        try:
            return original(self, pending)
        finally:
            stacked.append((threading.get_ident(), begin, time.perf_counter()))
    PairFrames._stack = timed


def time_pool_tasks(tasks: list[list]) -> None:
    """Append [tasks, submitted, last done] in ``time.perf_counter`` seconds to ``tasks`` for each
    ``WorkerPool.map`` that hands work to worker processes (its futures' completion as the parent sees it)."""
    from foresight_eval.workers import WorkerPool

    original = WorkerPool.map

    def timed(self, fn, *iterables, **kwargs):
        submitted = time.perf_counter()
        deferred = original(self, fn, *iterables, **kwargs)
        futures = getattr(deferred, "_futures", [])
        if self.workers and futures:
            record = [len(futures), submitted, submitted]
            tasks.append(record)
            def done(_, record=record):
                record[2] = max(record[2], time.perf_counter())
            for future in futures:
                future.add_done_callback(done)
        return deferred
    WorkerPool.map = timed


def print_timeline(events, kernels, stacked: list[tuple[int, float, float]], marker_s: float,
                   pool_tasks: list[list]) -> None:
    """The traced run in order: the scoring thread's labelled steps (consecutive metric hooks merged into
    one "metrics" step), the decoding threads' stacked batches (``stacked``) and the pool's hand-overs
    (``pool_tasks``; both in ``time.perf_counter`` seconds, and the event "run:marker" was recorded at
    ``time.perf_counter() == marker_s``), in milliseconds from the first label, with the share
    of each step's span during which the GPU ran a kernel or copy."""
    import numpy as np

    labels = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU
              and e.name.split(":", 1)[0] in ("metric", "engine", "run")]
    marker = next((e for e in labels if e.name == "run:marker"), None)
    if marker is None:
        return
    start = min(e.time_range.start for e in labels)
    to_trace_us = marker.time_range.start - marker_s * 1e6  # perf_counter seconds -> the trace's microseconds
    bin_us = 50.0
    end = max(e.time_range.end for e in labels + kernels)
    busy = np.zeros(int((end - start) / bin_us) + 2, bool)
    for kernel in kernels:
        first, last = ((kernel.time_range.start - start) / bin_us, (kernel.time_range.end - start) / bin_us)
        busy[max(0, int(first)):int(last) + 1] = True
    main_thread = min(labels, key=lambda e: e.time_range.start if e.name.startswith("run:") else float("inf")).thread
    # Outermost labels only: a nested one is inside its parent's span.
    steps: list[list] = []
    for event in sorted(labels, key=lambda e: (e.time_range.start, -e.time_range.end)):
        thread = "scoring" if event.thread == main_thread else f"thread {event.thread % 10000}"
        name = "metrics" if event.name.startswith("metric:") else event.name
        begin, finish = (event.time_range.start - start) / 1e3, (event.time_range.end - start) / 1e3
        same_thread = [step for step in steps if step[0] == thread]
        if same_thread and finish <= same_thread[-1][3] + 1e-9:
            continue  # nested
        if same_thread and name == "metrics" and same_thread[-1][1] == "metrics":
            same_thread[-1][3] = finish
            continue
        steps.append([thread, name, begin, finish])
    threads = sorted({thread for thread, _, _ in stacked})
    def trace_ms(seconds: float) -> float:
        return (seconds * 1e6 + to_trace_us - start) / 1e3

    steps += [[f"decoder {threads.index(thread)}", "decoded batch", trace_ms(begin), trace_ms(end)]
              for thread, begin, end in stacked]
    steps += [["pool", f"{count} tasks, submitted to done", trace_ms(begin), trace_ms(end)]
              for count, begin, end in pool_tasks]
    print("timeline (ms from the first label; GPU busy share of each span):")
    for thread, name, begin, finish in sorted(steps, key=lambda step: step[2]):
        span = busy[int(begin * 1e3 / bin_us):int(finish * 1e3 / bin_us) + 1]
        share = f"{span.mean():4.0%}" if len(span) else "  - "
        print(f"  {begin:8.1f} {finish:8.1f}  {share}  {thread:12s} {name}")
    idle_tail = busy[int(max(s[3] for s in steps) * 1e3 / bin_us):]
    print(f"  GPU busy after the last label: {idle_tail.sum() * bin_us / 1e3:.1f} ms")


TOP_LEVEL = "(top level)"  # scoring_thread_steps' sum of the steps not nested in another
_INHERITED = object()  # a class that had no hook of its own gets it back from its parent


@contextlib.contextmanager
def scoring_thread_steps(names: list[str]):
    """Within the block, the seconds the main (scoring) thread spends in each metric's hooks (``metric:NAME``),
    waiting for decoded batches and in each of :data:`ENGINE_STEPS`, added up in the Counter it yields, by host
    timers that do not synchronise the device; :data:`TOP_LEVEL` adds up the time in steps not nested in
    another (so that a run's wall time minus it is the rest of the run). The replaced functions are given back
    after."""
    spent: collections.Counter = collections.Counter()
    main, depth = threading.main_thread(), [0]

    def timer(original, label_of):
        def timed_step(*args, **kwargs):
            if threading.current_thread() is not main:
                return original(*args, **kwargs)
            depth[0] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                depth[0] -= 1
                spent[label_of(args)] += seconds
                if depth[0] == 0:
                    spent[TOP_LEVEL] += seconds
        return timed_step

    steps = [(Prefetched, "__next__", lambda args: "engine:wait for decoded batch")]
    for module_name, class_name, function, label in ENGINE_STEPS:
        owner = importlib.import_module(module_name)
        steps.append((getattr(owner, class_name) if class_name else owner, function, lambda args, label=label: label))
    # Each metric class's hooks as it resolves them: one timer per call (a timer on each class of the hierarchy
    # would time a hook that calls its parent's twice).
    steps += [(klass, hook, lambda args: f"metric:{args[0].name}")
              for klass in {metric_classes()[name] for name in names} for hook in ("update", "compute")]
    # All looked up before any is replaced: a subclass's timer wraps its parent's hook, not the parent's timer.
    replacements = [(owner, function, vars(owner).get(function, _INHERITED), timer(getattr(owner, function), label_of))
                    for owner, function, label_of in steps]
    for owner, function, _, timed_function in replacements:
        setattr(owner, function, timed_function)
    try:
        yield spent
    finally:
        for owner, function, original, _ in reversed(replacements):
            if original is _INHERITED:
                delattr(owner, function)
            else:
                setattr(owner, function, original)


def print_scoring_thread_steps(run, names: list[str], runs: int) -> None:
    """:func:`scoring_thread_steps` of ``runs`` runs of ``run()``: each step's median seconds."""
    rounds = []
    with scoring_thread_steps(names) as spent:
        for _ in range(runs):
            spent.clear()
            wall, _ = timed(run)
            rounds.append({"wall": wall, **spent, "rest of the run": wall - spent[TOP_LEVEL]})
    labels = sorted({label for row in rounds for label in row if label != TOP_LEVEL},
                    key=lambda label: -statistics.median(row.get(label, 0.0) for row in rounds))
    print(f"the scoring thread's time by step, host timers, not synchronised (medians of {runs} runs, ms):")
    for label in labels:
        values = [row.get(label, 0.0) * 1e3 for row in rounds]
        print(f"  {label:34s} {statistics.median(values):8.1f}   " + " ".join(f"{v:.1f}" for v in values))


def label_engine_steps() -> None:
    """Label :data:`ENGINE_STEPS` for the profiler (the engine looks these names up when it calls them, so
    replacing them in their module or class is enough)."""
    for module_name, class_name, function, label in ENGINE_STEPS:
        owner = importlib.import_module(module_name)
        owner = getattr(owner, class_name) if class_name else owner
        original = getattr(owner, function)

        def labelled(*args, _original=original, _label=label, **kwargs):
            with torch.profiler.record_function(_label):
                return _original(*args, **kwargs)
        setattr(owner, function, labelled)


def gpu_idle_by_step(events, kernels, bin_us: float = 50.0) -> list[tuple[str, float, float]]:
    """Per labelled step of the scoring thread (the innermost label at each moment; "(unlabelled)"
    elsewhere): its seconds, and the seconds the GPU had no kernel or copy running meanwhile, over the
    traced span, in bins of ``bin_us`` microseconds. The GPU's idle time during a step is the time that
    step held up the GPU, unless the queue was empty for another reason (decoding)."""
    import numpy as np

    labels = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU
              and e.name.split(":", 1)[0] in ("metric", "engine", "run")]
    if not labels or not kernels:
        return []
    start = min(e.time_range.start for e in labels + kernels)
    end = max(e.time_range.end for e in labels + kernels)
    bins = int((end - start) / bin_us) + 1

    def span(event) -> slice:
        return slice(int((event.time_range.start - start) / bin_us), int((event.time_range.end - start) / bin_us) + 1)

    busy = np.zeros(bins, bool)
    for kernel in kernels:
        busy[span(kernel)] = True
    names = sorted({e.name for e in labels})
    step = np.full(bins, len(names), np.int32)  # len(names): unlabelled
    for event in sorted(labels, key=lambda e: e.time_range.end - e.time_range.start, reverse=True):
        step[span(event)] = names.index(event.name)  # nested labels are shorter: painted last, they win
    names.append("(unlabelled)")
    seconds = np.bincount(step, minlength=len(names)) * bin_us / 1e6
    idle = np.bincount(step[~busy], minlength=len(names)) * bin_us / 1e6
    return sorted(zip(names, seconds.tolist(), idle.tolist()), key=lambda row: -row[2])


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def trace(run, names: list[str]) -> None:
    """One run under torch.profiler: the GPU's busy time against the wall, and per metric host time, kernels
    and GPU time (see the module's docstring)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

    label_metric_hooks(names)
    label_engine_steps()
    stacked: list[tuple[int, float, float]] = []
    label_decoded_batches(stacked)
    pool_tasks: list[list] = []
    time_pool_tasks(pool_tasks)
    waited = [0.0]
    time_batch_waits(waited)
    with profile(activities=activities) as prof:
        with torch.profiler.record_function("run:marker"):
            marker_s = time.perf_counter()
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.events()
    # The GPU-side spans of the labels ("metric:...") cover their kernels and the gaps between: not work.
    kernels = [event for event in events
               if event.device_type == torch.autograd.DeviceType.CUDA and not event.name.startswith("metric:")]
    busy = busy_seconds([(e.time_range.start / 1e6, e.time_range.end / 1e6) for e in kernels])
    print(f"traced run {wall:.2f} s (profiler on); GPU busy {busy:.3f} s ({busy / wall:.0%}) in {len(kernels)} "
          f"kernels and copies; scoring thread waited for decoded batches {waited[0]:.2f} s")
    def launches(event) -> int:
        return sum(launches(child) for child in event.cpu_children) + ("LaunchKernel" in event.name)

    per_metric = {}
    for event in events:
        if event.name.startswith("metric:") and event.device_type == torch.autograd.DeviceType.CPU:
            host, gpu, count = per_metric.get(event.name, (0.0, 0.0, 0))
            per_metric[event.name] = (host + event.cpu_time_total / 1e6, gpu + event.device_time_total / 1e6,
                                      count + launches(event))
    print("  metric                     host s   GPU s  kernels")
    for name, (host, gpu, count) in sorted(per_metric.items(), key=lambda item: -item[1][0]):
        print(f"  {name[7:]:24s} {host:8.3f} {gpu:7.3f} {count:8d}")
    averages = prof.key_averages()
    print(averages.table(sort_by="self_device_time_total", row_limit=25))
    rows = gpu_idle_by_step(events, kernels)
    if rows:
        print("the scoring thread's steps (innermost label) and the GPU's idle time during each:")
        print("  step                            thread s   GPU idle s")
        for name, seconds, idle in rows:
            print(f"  {name:32s} {seconds:8.3f} {idle:12.3f}")
    print_timeline(events, kernels, stacked, marker_s, pool_tasks)


def count_synchronisations(run, device: torch.device) -> collections.Counter:
    """Run ``run()`` with CUDA's synchronisation warnings on; count them by the innermost package frame."""
    where: collections.Counter = collections.Counter()
    if device.type != "cuda":
        return where

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [frame for frame in traceback.extract_stack() if "foresight_eval" in frame.filename]
        site = frames[-1] if frames else None
        where[f"{Path(site.filename).name}:{site.lineno} {site.name}" if site else f"{filename}:{lineno}"] += 1

    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT, or several (comma-separated) taken in turn")
    parser.add_argument("--top", type=int, default=40, help="profile lines shown")
    parser.add_argument("--steps", type=int, default=0, metavar="N",
                        help="first N runs with the scoring thread's time by step (host timers, untraced)")
    parser.add_argument("--trace", action="store_true", help="also one run under torch.profiler")
    parser.add_argument("--metrics", help="comma-separated metrics to profile (default: the default suite)")
    parser.add_argument("--reference-cache", action="store_true",
                        help="runs use the default reference cache (warm after the warm-up), not none")
    args = parser.parse_args()
    sizes = parse_sizes(args.size)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ensure_alexnet_weights(tmp)
        clips = make_clips(tmp / "clips", args.clips, args.frames, 0, 0, sizes=sizes)
        # Every batch shape seen once; at least two clips, so the process's first bootstrap (and scipy.stats's
        # import) happens here, not in the first timed run.
        warm_up = make_clips(tmp / "warm_up", max(2, len(sizes)), args.frames, 0, 0, sizes=sizes)
        options = ScoreOptions(batch_size=16)
        # As the goals are measured (suite_speed.py's "no cache"), unless --reference-cache: the default cache
        # folder, warm after the warm-up run.
        resources = {} if args.reference_cache else {"cache_dir": None}
        suite = args.metrics.split(",") if args.metrics else [
            metric.name for metric in prepare_metrics(None, {}, RunContext(device=device))[0]]
        print(f"device {device}, {args.clips} clips x {args.frames} frame pairs at {args.size}; suite: {', '.join(suite)}")

        def run_suite(clip_folders=clips):
            return score(*clip_folders, suite, options=options, device=device, resources=resources)

        run_suite(warm_up)
        decode_s, _ = timed(lambda: decode_only(*clips, options, device))
        suite_s, run = timed(run_suite)
        print(f"decode-only {decode_s:.2f} s, suite {suite_s:.2f} s ({suite_s / decode_s:.1f}x)")
        phases = run.manifest.get("timings", {}).get("ranks", [{}])[0]
        print("the run's phases (s): " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items()
                                                 if name != "start_up"))
        if args.steps:
            print_scoring_thread_steps(run_suite, suite, args.steps)
        profile = cProfile.Profile()
        profile.runcall(run_suite)
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("cumulative").print_stats("foresight_eval", args.top)
        stats.sort_stats("tottime").print_stats(args.top // 2)
        print(text.getvalue())

        if args.trace:  # before the hooks are synchronised below
            trace(run_suite, suite)
        spent: collections.Counter = collections.Counter()
        time_metric_hooks(suite, device, spent)
        synced_s, _ = timed(run_suite)
        print(f"suite with each metric synchronised {synced_s:.2f} s; in the metrics {sum(spent.values()):.2f} s:")
        for metric, seconds in spent.most_common():
            print(f"  {metric:24s} {seconds:.3f} s")
        syncs = count_synchronisations(run_suite, device)
        if syncs:
            print(f"host waits for the GPU: {sum(syncs.values())} times; by calling line:")
            for site, count in syncs.most_common(args.top):
                print(f"  {count:6d}  {site}")


if __name__ == "__main__":
    main()
