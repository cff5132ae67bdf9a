"""The worker pool for metrics' CPU-bound work (foresight_eval.workers): pooled values equal inline ones, in
frame order; a failure in a worker is one error row; per-frame values reach the rows intact.

On a GPU the pool is on by default; here (CPU only) the tests force it with ``ScoreOptions(workers=...)``.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from foresight_eval import ScoreOptions, score
from foresight_eval.engine import score_pair
from foresight_eval.errors import UsageError
from foresight_eval.io.pairing import pair_clips
from foresight_eval.device_copies import to_host_async
from foresight_eval.metrics.base import FrameBatch, Metric, MetricInfo, RunContext
from foresight_eval import workers
from foresight_eval.workers import INLINE, ITEMS_PER_TASK, WorkerPool, default_workers, stop_idle_workers


@pytest.fixture(scope="module")
def two_clips(fixtures_dir, tmp_path_factory):
    """Two fixture clip pairs (128x96, 20 frames: 2 batches of 16 and 4, so order across batches matters)."""
    root = tmp_path_factory.mktemp("clips")
    for side, source in (("preds", fixtures_dir / "preds" / "shift_mild"), ("refs", fixtures_dir / "refs")):
        (root / side).mkdir()
        for name in ("clip00.mp4", "clip01.mp4"):
            shutil.copy(source / name, root / side / name)
    return root / "preds", root / "refs"


@pytest.mark.slow
@pytest.mark.parametrize("params", [{}, {"matching": "approx"}, {"mode": "bsds"}, {"detector": "torch"}],
                         ids=["exact", "approx", "bsds", "torch-canny"])  # torch-canny: the GPU path's packed maps
def test_edge_f1_in_worker_processes_equals_inline(two_clips, params):
    runs = {workers: score(*two_clips, ["edge_f1"], params={"edge_f1": params}, device="cpu",
                           options=ScoreOptions(workers=workers), resources={"cache_dir": None})
            for workers in (0, 2)}
    inline, pooled = runs[0], runs[2]
    assert all(pair.ok for pair in inline.pairs + pooled.pairs)
    assert pooled.manifest["metric_workers"] == {"workers": 2, "start_method": "forkserver"}
    assert inline.manifest["metric_workers"] == {"workers": 0, "start_method": "inline"}
    if params.get("mode") == "bsds":  # a run-level value from every frame's counts: equal to the last bit
        assert pooled.metrics["edge_f1"].set_values == inline.metrics["edge_f1"].set_values
        assert [p.set_parts for p in pooled.pairs] == [p.set_parts for p in inline.pairs]
        assert len(inline.pairs[0].set_parts["edge_f1"]) == 20
        return
    for ours, theirs in zip(pooled.pairs, inline.pairs):
        assert ours.values == theirs.values
        assert ours.per_frame["edge_f1"] == theirs.per_frame["edge_f1"]
        assert [row[1] for row in ours.per_frame["edge_f1"]] == list(range(20))  # frame order across batches
    assert 0.3 < inline.pairs[0].values["edge_f1"] < 1.0  # a shifted prediction: neither trivial extreme


def fail_on_frame(frame_index: int, failing: int) -> float:
    """A worker task (module level, so a worker process can import it)."""
    if frame_index == failing:
        raise ValueError(f"worker failed on frame {frame_index}")
    return float(frame_index)


class PooledProbe(Metric):
    """Per-frame values computed in the run's pool; frame ``failing`` of clip ``failing_clip`` raises there."""

    info = MetricInfo(name="pooled_probe", description="frame index, computed in the pool", direction="higher")
    defaults = {"failing": -1, "failing_clip": ""}

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.pool = context.pool

    def reset(self) -> None:
        self.parts = []

    def update(self, batch: FrameBatch):
        failing = self.params["failing"] if batch.video == self.params["failing_clip"] else -1
        deferred = self.pool.map(fail_on_frame, batch.frame_index.tolist(), [failing] * len(batch.frame_index),
                                 combine=lambda values: torch.tensor(values, dtype=torch.float64))
        self.parts.append(deferred)
        return deferred

    def compute(self) -> float:
        return float(torch.cat([part.result() for part in self.parts]).mean())


@pytest.mark.parametrize("workers", [0, 1])
def test_a_failure_in_a_worker_is_one_error_row(two_clips, workers):
    pairs = pair_clips(*two_clips).pairs
    with WorkerPool(workers) as pool:
        probe = PooledProbe(failing=17, failing_clip=pairs[0].key)
        probe.setup(RunContext(pool=pool))
        options = ScoreOptions(batch_size=8)
        failed, fine = (score_pair(pair, [probe], options, torch.device("cpu")) for pair in pairs)
    assert not failed.ok and failed.error == "ValueError: worker failed on frame 17"
    assert fine.ok and fine.values["pooled_probe"] == pytest.approx(9.5)  # the pool goes on after a failure
    assert [row[:2] for row in fine.per_frame["pooled_probe"]] == [(i + 1, i) for i in range(20)]


def test_a_pair_is_finished_after_the_next_one_is_scored(two_clips, monkeypatch):
    """The engine collects a pair's pool work (PairInFlight.finish) only after scoring the next pair, so the
    workers match one pair while the device and the decoders work on the next; the values are those of an
    inline run, which finishes each pair's matching as it goes."""
    from foresight_eval import engine

    calls = []
    for step in ("score", "finish"):
        original = getattr(engine.PairInFlight, step)

        def recorded(self, *args, _original=original, _step=step, **kwargs):
            calls.append((_step, self.pair.key))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(engine.PairInFlight, step, recorded)
    runs = [score(*two_clips, ["edge_f1"], device="cpu", options=ScoreOptions(workers=workers, batch_size=8),
                  resources={"cache_dir": None}) for workers in (1, 0)]
    first, second = (pair.key for pair in pair_clips(*two_clips).pairs)
    assert calls[:4] == [("score", first), ("score", second), ("finish", first), ("finish", second)]
    pooled, inline = ([(pair.values, pair.per_frame) for pair in run.pairs] for run in runs)
    assert pooled == inline and all(pair.ok for run in runs for pair in run.pairs)


class ReusedBuffer(Metric):
    """Returns the same tensor every batch, overwritten in place, plus a NaN for frame 0 (not recorded)."""

    info = MetricInfo(name="reused_buffer", description="frame index from a reused buffer", direction="higher")

    def reset(self) -> None:
        self.buffer = None

    def update(self, batch: FrameBatch) -> torch.Tensor:
        if self.buffer is None or len(self.buffer) != len(batch.frame_index):
            self.buffer = torch.empty(len(batch.frame_index), dtype=torch.float64)
        self.buffer.copy_(batch.frame_index)
        self.buffer[batch.frame_index == 0] = math.nan
        return self.buffer

    def compute(self) -> Any:
        return 0.0


def test_per_frame_values_are_taken_per_batch_and_stay_in_order(two_clips):
    """The engine moves per-frame values to the host once per clip, not per batch and metric; a metric that
    reuses its output tensor must still give each batch's values."""
    pair = pair_clips(*two_clips).pairs[0]
    result = score_pair(pair, [ReusedBuffer()], ScoreOptions(batch_size=6), torch.device("cpu"))
    assert result.ok
    assert result.per_frame["reused_buffer"] == [(i + 1, i, float(i)) for i in range(1, 20)]


def test_inline_pool_raises_at_once_and_keeps_order():
    deferred = INLINE.map(fail_on_frame, [3, 1, 2], [-1] * 3)
    assert deferred.result() == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="frame 2"):
        INLINE.map(fail_on_frame, [1, 2], [2, 2])


class Gate:
    """Stands in for a CUDA event recorded after copies to the host: ``synchronize`` waits until opened."""

    def __init__(self):
        self.opened = threading.Event()

    def synchronize(self) -> None:
        assert self.opened.wait(60), "the gate was never opened"


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux's scheduling policies")
def test_workers_run_only_when_nothing_else_wants_the_cpu():
    """Their values are waited for a clip pair late; decoding and the thread driving the device come first."""
    with WorkerPool(2) as pool:
        policies = pool.map(os.sched_getscheduler, [0, 0]).result()
    assert policies == [os.SCHED_IDLE] * 2
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the scoring process itself is left as it was


def test_items_go_to_the_workers_several_a_task_in_order():
    """Fewer tasks for the run's process to hand over; the values still come item by item, in order, and a
    failing item fails the map."""
    assert ITEMS_PER_TASK == 2
    with WorkerPool(2) as pool:
        deferred = pool.map(fail_on_frame, range(5), [-1] * 5)
        assert len(deferred._futures) == 3  # tasks: items 0-1, 2-3, 4
        assert deferred.result() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert pool.map(fail_on_frame, [], []).result() == []
        with pytest.raises(ValueError, match="frame 3"):
            pool.map(fail_on_frame, range(5), [3] * 5).result()


def worker_pid(_: Any) -> int:
    return os.getpid()


def test_a_run_takes_over_the_workers_an_earlier_run_of_the_process_left():
    """A run that ends without an exception keeps its workers for the process's next run of the same count
    (workers.IDLE_POOLS_KEPT), which forks none; one that ends with an exception stops them; the process keeps
    at most IDLE_POOLS_KEPT idle pools; stop_idle_workers stops them."""
    stop_idle_workers()
    with WorkerPool(2) as first:
        first.map(worker_pid, range(4)).result()
        kept = first._executor
    with WorkerPool(2) as second:
        assert set(second.map(worker_pid, range(4)).result()) <= set(kept._processes)
        assert second._executor is kept
    with pytest.raises(RuntimeError, match="the run failed"), WorkerPool(2) as failing:
        failing.map(worker_pid, range(2)).result()
        raise RuntimeError("the run failed")
    assert kept._shutdown_thread and workers._idle_pools == []  # stopped, not kept
    with WorkerPool(2) as third:
        third.map(worker_pid, range(2)).result()
        kept = third._executor
    with WorkerPool(1) as other_count:  # not the kept pool's count: workers of its own
        other_count.map(worker_pid, range(2)).result()
        assert other_count._executor is not kept
    assert kept._shutdown_thread and [key for key, _ in workers._idle_pools] == [(1, other_count.start_method)]
    idle = workers._idle_pools[0][1]
    stop_idle_workers()
    assert idle._shutdown_thread and workers._idle_pools == []


LEFT_WITHOUT_STOPPING = """
import os
from foresight_eval.workers import WorkerPool
from tests.test_metric_workers import worker_pid
with WorkerPool(2) as pool:
    pids = set(pool.map(worker_pid, range(8)).result())
print(*pids, flush=True)
os._exit(0)
"""


def pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):  # not Linux 5.3+, or a sandbox that refuses the call
        return False
    return True


@pytest.mark.skipif(not pidfd_works(), reason="the workers watch the run's process by its pidfd (Linux)")
def test_kept_workers_end_when_the_runs_process_leaves_without_stopping_them():
    result = subprocess.run([sys.executable, "-c", LEFT_WITHOUT_STOPPING], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    pids = [int(pid) for pid in result.stdout.split()]
    assert pids
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_without_kept_pools_every_run_starts_and_stops_its_own_workers(monkeypatch):
    stop_idle_workers()
    with WorkerPool(2) as kept_for_later:
        kept_for_later.map(worker_pid, range(2)).result()
        kept = kept_for_later._executor
    monkeypatch.setattr(workers, "IDLE_POOLS_KEPT", 0)
    with WorkerPool(2) as own:
        own.map(worker_pid, range(2)).result()
        started = own._executor
    assert started is not kept and started._shutdown_thread  # its own, stopped at its end
    assert [executor for _, executor in workers._idle_pools] == [kept]  # left for a run that keeps pools
    stop_idle_workers()


def opencv_threads(_: Any) -> int:
    import cv2

    return cv2.getNumThreads()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenCV's own default is one thread on one CPU")
def test_workers_run_opencv_on_one_thread():
    """The workers are the parallelism: OpenCV's own pool in each of them only added waiting threads."""
    import cv2

    threads = cv2.getNumThreads()
    with WorkerPool(2) as pool:
        assert pool.map(opencv_threads, [0, 0]).result() == [1, 1]
    assert cv2.getNumThreads() == threads  # the scoring process itself is left as it was


def test_work_is_handed_over_once_its_inputs_are_ready_and_the_caller_does_not_wait():
    with WorkerPool(2) as pool:
        gate, frames = Gate(), np.zeros(3)
        waiting = pool.map_when_ready(gate, fail_on_frame, frames, [-1] * 3)  # returns with the gate shut
        dropped = pool.map_when_ready(gate, fail_on_frame, frames, [-1] * 3)
        dropped.cancel()  # still queued behind the first: dropped without waiting
        frames[:] = [3, 1, 2]  # "the copy lands" before the event: the work reads these values
        gate.opened.set()
        assert waiting.result() == [3.0, 1.0, 2.0]
        with pytest.raises(CancelledError):
            dropped.result()
        failing = pool.map_when_ready(gate, fail_on_frame, [1, 2], [2, 2])
        with pytest.raises(ValueError, match="frame 2"):  # a worker's failure reaches the reader
            failing.result()
    gate = Gate()
    gate.opened.set()
    assert INLINE.map_when_ready(gate, fail_on_frame, [5], [-1]).result() == [5.0]  # inline: waits, then works


def test_warm_up_starts_the_fork_server_and_leaves_the_workers_to_the_first_hand_over(monkeypatch):
    """Setting up edge_f1 starts the fork server, which imports the work's module meanwhile; forking the
    workers is left to the first hand-over (the pool's thread), off the thread that drives the device."""
    from multiprocessing import forkserver

    pool, started = WorkerPool(2), []
    if pool.start_method != "forkserver":
        pytest.skip("no fork server on this platform: the workers are spawned on the first hand-over")
    ensure_running = forkserver.ensure_running
    monkeypatch.setattr(forkserver, "ensure_running", lambda: started.append(ensure_running()))
    with pool:
        pool.warm_up(fail_on_frame)
        assert len(started) == 1 and pool._executor is None  # the server, no worker
        assert fail_on_frame.__module__ in forkserver._forkserver._preload_modules
        assert pool.map_when_ready(None, fail_on_frame, [4, 5], [-1, -1]).result() == [4.0, 5.0]
    assert WorkerPool(0).warm_up(fail_on_frame) is None and len(started) == 1  # inline: nothing to start


def test_the_fork_server_imports_what_the_work_imports_on_first_use():
    """edge_f1's matching imports SciPy's graph and k-d tree on first use (the run's own process only names the
    functions it hands over): the fork server imports them with the module, once for every worker."""
    from multiprocessing import forkserver

    from foresight_eval.metrics import edge_matching

    pool = WorkerPool(2)
    if pool.start_method != "forkserver":
        pytest.skip("no fork server on this platform")
    pool._preload(edge_matching.edge_f1_of_packed_candidates)
    assert forkserver._forkserver._preload_modules == [edge_matching.__name__, *edge_matching.WORKER_PRELOAD]
    pool._preload(fail_on_frame)  # a module that names nothing more
    assert forkserver._forkserver._preload_modules == [fail_on_frame.__module__]


def compiled_matcher_loaded(_: Any) -> bool:
    from foresight_eval.metrics import edge_matching

    return edge_matching.COMPILED_MATCHING in sys.modules


COMPILED_MATCHER_PROBE = """
import sys
from foresight_eval.metrics import edge_matching
from foresight_eval.workers import WorkerPool
from tests.test_metric_workers import compiled_matcher_loaded
with WorkerPool(2) as pool:
    pool.warm_up(edge_matching.edge_f1_of_packed_candidates)
    print(pool.map(compiled_matcher_loaded, [0, 0]).result(), edge_matching.COMPILED_MATCHING in sys.modules)
"""


def test_the_workers_match_with_the_compiled_matcher_and_the_runs_process_does_not_load_it():
    """edge_f1's fork server loads the compiled matcher for every worker (edge_matching.WORKER_PRELOAD); the
    run's own process matches inline with SciPy and never loads it (a fresh process: the fork server's preload
    is fixed when it starts)."""
    if WorkerPool(2).start_method != "forkserver":
        pytest.skip("no fork server on this platform: the workers load the modules of the work they get")
    result = subprocess.run([sys.executable, "-c", COMPILED_MATCHER_PROBE], capture_output=True, text=True,
                            timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "[True, True] False"


def test_host_copies_of_cpu_tensors_are_the_tensors():
    tensor = torch.arange(6, dtype=torch.uint8).view(2, 3)
    (array, other), ready = to_host_async(tensor, tensor + 1)
    assert ready is None and array.tolist() == tensor.tolist() and other[0, 0] == 1
    array[0, 0] = 9  # no copy was made
    assert tensor[0, 0] == 9


def test_worker_counts(monkeypatch):
    monkeypatch.setattr("foresight_eval.workers.usable_cpus", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers("cpu") == 0  # nothing to overlap with: inline
    assert default_workers("cuda") == 15  # at the lowest priority: they take what decoding leaves
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four processes share the node's CPUs
    assert default_workers("cuda") == 3
    monkeypatch.setattr("foresight_eval.workers.usable_cpus", lambda: 1)
    assert default_workers("cuda") == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(UsageError, match="^workers must be a whole number"):  # the library names the field
            ScoreOptions(workers=bad)


UNGUARDED_SCRIPT = """
from foresight_eval import ScoreOptions, score
print("script body ran", flush=True)
run = score({preds!r}, {refs!r}, ["edge_f1"], options=ScoreOptions(context=4, workers=2), device="cpu", resources={{"cache_dir": None}})
print("pairs ok", sum(pair.ok for pair in run.pairs), flush=True)
"""


@pytest.mark.slow
def test_a_script_without_a_main_guard_is_not_run_again_in_the_workers(fixtures_dir, tmp_path):
    """Workers start without the main script: an unguarded script that calls score() scores once, in its own
    process (multiprocessing would otherwise re-run it in every worker, as `__mp_main__`)."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(UNGUARDED_SCRIPT.format(preds=str(fixtures_dir / "preds" / "blur_mild"),
                                                              refs=str(fixtures_dir / "refs"))))
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(repo), os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("script body ran") == 1, result.stdout
    assert "pairs ok" in result.stdout and "pairs ok 0" not in result.stdout
