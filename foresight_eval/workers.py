"""A pool of worker processes for a run's CPU-bound metric work, so that it overlaps the device's work.

On a GPU the scoring device finishes a batch long before the CPU-only parts of some metrics do (the
one-to-one edge matching of ``edge_f1``: a k-d tree, a graph and a maximum flow per frame). A metric hands
such work to the run's pool (``RunContext.pool``) with :meth:`WorkerPool.map` and returns a
:class:`Deferred` instead of its per-frame values; the engine goes on with the next batches and collects the
values, in frame order, at the end of the clip.

Processes, not threads: the work holds the GIL. Measured on 640x360 Canny maps (2-core machine,
``docs/speed.md``): SciPy's ``maximum_flow`` ran no faster on two threads than on one, and building the
flow graph (Python lists from ``cKDTree.query_ball_point``) ran slower; only scikit-image's ``thin``
released it. Workers get NumPy arrays and return plain values; they are started lazily, on the first
work handed over, by a fork server (a clean process, not a fork of one that may hold CUDA state and
threads) that has imported the work's module once (a module without torch: see :meth:`WorkerPool.warm_up`);
``spawn`` where there is no fork server. ``workers=0`` runs the work inline, in the calling thread: the
default on the CPU, where there is no device work to overlap with and the workers would only compete
with the main process for the same cores.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Protocol

from foresight_eval.errors import UsageError


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(device_type: str) -> int:
    """Worker processes of a run on ``device_type`` when not given: 0 (inline) on the CPU; on an accelerator all
    but one of the usable CPUs, shared among the processes of this node (``LOCAL_WORLD_SIZE``, set by torchrun).
    The workers run at the lowest priority (:func:`_lowest_priority`), so they take only the CPU time that the
    decoding threads and the thread driving the device leave: on the 16-CPU H200 host the default suite took
    0.464-0.481 s with 15 such workers, 0.486-0.493 s with 8 and 0.478 s with 12; at equal priority 8 workers had
    been faster than 15 (0.574 against 0.620 s), as they competed with the decoding (medians of 7 alternating
    rounds; benchmarks/RESULTS.md, the twelfth and thirteenth sessions)."""
    if device_type == "cpu":
        return 0
    per_process = usable_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, per_process - 1)


def _worker_start(run_pid: int) -> None:
    """A worker's first step: :func:`_leave_with` the run's process, :func:`_lowest_priority`, and OpenCV on
    one thread. The workers are the run's
    parallelism, one process per CPU; OpenCV's own thread pool (a thread per CPU in each worker) only added
    threads that wait on each other: its parallel labelling (``cv2.connectedComponents``, the linking of
    ``edge_matching.link_edges``) took 1.68 ms of CPU per 640x360 map on two threads against 1.20 ms on one
    (2-core machine), and on the 16-CPU H200 host the default suite of the issue's clip shape kept the CPUs busy
    8.04 s against 6.14 s and took 0.651 against 0.614 s (medians of 5 alternating rounds; benchmarks/RESULTS.md,
    issue 17's seventeenth session)."""
    _leave_with(run_pid)
    _lowest_priority()
    import cv2  # imported already where the fork server preloaded the work's module

    cv2.setNumThreads(1)


def _leave_with(run_pid: int) -> None:
    """End this worker when the run's process ends, however it ends. A worker waits on its pool's queue, whose
    writing end every worker holds too, so it never sees the queue close: one whose process left without
    stopping it (``os._exit``, as ranks other than 0 leave: ``distributed.leave_if_not_main``; a kill) would
    wait for ever, and so would the fork server, which outlives the last of its workers, and whatever reads
    their inherited standard output (a launcher, ``subprocess.run``): the kept pools (:data:`IDLE_POOLS_KEPT`)
    made a two-rank `score` hang so. A thread waits on the run's process (Linux's pidfd: no polling) and ends
    the worker when it exits; elsewhere (no ``os.pidfd_open``) the workers end only when stopped."""
    try:
        run_process = os.pidfd_open(run_pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or the run's process is gone already
        return

    def leave_when_the_run_ends() -> None:
        select.select([run_process], [], [])
        os._exit(0)

    threading.Thread(target=leave_when_the_run_ends, name="foresight-eval-run-watch", daemon=True).start()


def _lowest_priority() -> None:
    """Run the worker only when no other thread of the machine wants the CPU (Linux's
    ``SCHED_IDLE``; the highest nice value elsewhere). The workers' values are waited for one clip pair late
    (engine.PairInFlight), while the decoding threads and the thread that drives the device are each on the run's
    critical path: at equal priority the workers' matching held the third clip's first decoded batch back from
    about 100 to 205 ms (1 x H200, 16 CPUs). Measured there (default suite, 3 clips x 32 frame pairs of 640x360,
    medians of 7 alternating rounds; benchmarks/RESULTS.md, the thirteenth session): 0.549 s with 8 workers at
    the same priority, 0.486 s idle, 0.497 s at nice 19, 0.512 s at nice 10, 0.464 s with 15 idle workers.
    Where other jobs keep every CPU busy the workers get little time (and cannot take their priority back):
    ``--workers 0`` is the way out, as the ``score`` command's help says."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        if hasattr(os, "nice"):
            os.nice(19)


class Deferred:
    """Values being computed by a :class:`WorkerPool`: ``result()`` waits for them and returns ``combine``
    of the list of results in submission order, or raises the first failure (a worker's exception, or
    ``BrokenProcessPool`` when a worker died)."""

    def __init__(self, futures: list[Future], combine: Callable[[list[Any]], Any] = list):
        self._futures, self._combine = futures, combine

    def result(self) -> Any:
        return self._combine([future.result() for future in self._futures])

    def cancel(self) -> None:
        """Drop the work not started yet (the clip failed: nobody will read it)."""
        for future in self._futures:
            future.cancel()


class Joined(Deferred):
    """``combine`` of the results of several :class:`Deferred`, in order: a value built from the work of
    several hand-overs (a clip's value from its batches')."""

    def __init__(self, parts: list[Deferred], combine: Callable[[list[Any]], Any]):
        self._parts, self._combine = list(parts), combine

    def result(self) -> Any:
        return self._combine([part.result() for part in self._parts])

    def cancel(self) -> None:
        for part in self._parts:
            part.cancel()


class _WhenReady(Deferred):
    """A :class:`Deferred` whose work is handed over later, by the pool's dispatching thread (``submitted``:
    the future of that hand-over, a Deferred)."""

    def __init__(self, submitted: Future):
        self._submitted = submitted

    def result(self) -> Any:
        return self._submitted.result().result()

    def cancel(self) -> None:
        if not self._submitted.cancel():  # handed over already, or being handed over
            self._submitted.result().cancel()


class Ready(Protocol):
    """What :meth:`WorkerPool.map_when_ready` waits on: a ``torch.cuda.Event`` recorded after the copies."""

    def synchronize(self) -> None: ...


# Items (frames) handed to a worker in one task. Each task costs the run's process a submission, a pickled
# message through the pool's queue and a result, handled by the pool's threads, which take the GIL from the
# thread that drives the device; two frames a task halve them. On the 16-CPU H200 host (default suite, the
# issue's clip shape, medians of 7 alternating rounds) 2 took 0.524 s and 4 took 0.528 s against 0.553 s for 1
# (the sixteenth session's trial: 2 0.588 s, 4 0.627 s, 8 0.647 s, 16 0.732 s against 0.614 s: more frames a
# task leave fewer tasks than workers at a clip's end); benchmarks/RESULTS.md, issue 17's seventeenth session.
ITEMS_PER_TASK = 2

# Idle worker pools a process keeps for its later runs (0: every run stops its workers at its end). A run of the
# same worker count takes the kept one over: its workers are up, so the run forks none (15 on the 16-CPU H200
# host, by the fork server, from the hand-over thread) and leaves none to exit beside the next run's work. Idle
# workers wait on their queue at the lowest priority; a `score` command's workers exit with it, as before (the
# interpreter's exit stops every pool); :func:`stop_idle_workers` stops them sooner.
IDLE_POOLS_KEPT = 1
_idle_pools: list[tuple[tuple[int, str], ProcessPoolExecutor]] = []  # (workers, start method), oldest first
_IDLE_POOLS_LOCK = threading.Lock()


def _take_idle_pool(key: tuple[int, str]) -> ProcessPoolExecutor | None:
    if IDLE_POOLS_KEPT == 0:  # every run starts its own workers
        return None
    with _IDLE_POOLS_LOCK:
        for index, (idle_key, executor) in enumerate(_idle_pools):
            if idle_key == key:
                del _idle_pools[index]
                return executor
    return None


def _keep_idle_pool(key: tuple[int, str], executor: ProcessPoolExecutor) -> None:
    with _IDLE_POOLS_LOCK:
        _idle_pools.append((key, executor))
        surplus = max(0, len(_idle_pools) - IDLE_POOLS_KEPT)  # the oldest go
        stopping = [oldest for _, oldest in _idle_pools[:surplus]]
        del _idle_pools[:surplus]
    for oldest in stopping:
        oldest.shutdown(wait=False, cancel_futures=True)


def stop_idle_workers() -> None:
    """Stop the worker processes this process keeps for its later runs (:data:`IDLE_POOLS_KEPT`); a later run
    starts its own again."""
    with _IDLE_POOLS_LOCK:
        stopping = [executor for _, executor in _idle_pools]
        _idle_pools.clear()
    for executor in stopping:
        executor.shutdown(wait=True)


def _apply_to_items(fn: Callable[..., Any], items: list[tuple[Any, ...]]) -> list[Any]:
    """A worker's task: ``fn`` of each item, in order."""
    return [fn(*args) for args in items]


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


_HIDING = threading.Lock()


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start worker processes without the main script. multiprocessing sends a new process the path (or
    module name) of ``__main__`` and runs it there as ``__mp_main__``: a user's script that calls ``score()``
    without an ``if __name__ == "__main__":`` guard would then score again in every worker. The work handed
    over lives in importable modules, so the workers need no main script: it is hidden from the start-up
    data while processes start (they start inside ``submit``)."""
    with _HIDING:  # the main thread and the hand-over thread may both hand work over
        main = sys.modules.get("__main__")
        hidden = {name: main.__dict__[name] for name in ("__file__", "__spec__")
                  if main is not None and name in main.__dict__}
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__spec__ = None  # read unguarded by multiprocessing: set, not removed
        try:
            yield
        finally:
            if main is not None:
                main.__dict__.update(hidden)


class WorkerPool:
    """``workers`` processes for CPU-bound metric work, 0: inline. One per run: started on first use (or taken
    over from an earlier run of the process, :data:`IDLE_POOLS_KEPT`), stopped by :meth:`shutdown`; leaving its
    ``with`` block keeps the workers for the next run, or stops them when the block ends with an exception."""

    def __init__(self, workers: int = 0):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise UsageError(f"--workers must be a whole number >= 0 (0: inline), got {workers!r}")
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._dispatcher: ThreadPoolExecutor | None = None  # map_when_ready's hand-overs, one thread
        self._starting = threading.Lock()
        self.start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            combine: Callable[[list[Any]], Any] = list) -> Deferred:
        """``fn`` applied to each item of the zipped ``iterables``, :data:`ITEMS_PER_TASK` items a task, as a
        :class:`Deferred`. ``fn`` must be a module-level function and the items picklable (NumPy arrays,
        numbers). Inline, the work is done before this returns and a failure raises here."""
        items = list(zip(*iterables))
        if self.workers == 0:
            return Deferred([_done(fn(*args)) for args in items], combine)
        tasks = [items[start:start + ITEMS_PER_TASK] for start in range(0, len(items), ITEMS_PER_TASK)]
        with _main_script_hidden():
            try:
                futures = [self._start(fn).submit(_apply_to_items, fn, task) for task in tasks]
            except BrokenProcessPool:  # a worker died (killed, out of memory) in an earlier clip, an error row: restart
                self._stop_workers()
                futures = [self._start(fn).submit(_apply_to_items, fn, task) for task in tasks]
        return Deferred(futures, lambda per_task: combine([value for values in per_task for value in values]))

    def map_when_ready(self, ready: Ready | None, fn: Callable[..., Any], *iterables: Iterable[Any],
                       combine: Callable[[list[Any]], Any] = list) -> Deferred:
        """:meth:`map`, handed over once ``ready`` has happened (None: now): the items may be host views of
        device-to-host copies still in flight, ``ready`` the CUDA event recorded after them. The calling
        thread does not wait: a thread of the pool waits and hands the work over, in call order, so the
        thread that drives the GPU never drains its queue. Inline (no workers) the work is done before this
        returns, after waiting."""
        if ready is None or self.workers == 0:
            if ready is not None:
                ready.synchronize()
            return self.map(fn, *iterables, combine=combine)
        if self._dispatcher is None:
            self._dispatcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foresight-eval-hand-over")

        def hand_over() -> Deferred:
            ready.synchronize()
            return self.map(fn, *iterables, combine=combine)

        return _WhenReady(self._dispatcher.submit(hand_over))

    def warm_up(self, fn: Callable[..., Any]) -> None:
        """Get the workers' start under way (from a metric's ``setup``, naming the function it will hand over):
        the fork server is started now and imports ``fn``'s module while the models load and the first
        batches decode; the workers themselves are forked from it on the first hand-over (by the pool's
        hand-over thread for :meth:`map_when_ready`, off the thread that drives the device). Measured on the
        H200's host (benchmarks/RESULTS.md, the eighth session of issue 17): a fresh `score` run of the
        default suite took 9.2 s with every worker forked here, in the calling thread (25-30 ms for 15 once
        the fork server is up, after its import in a fresh process), against 8.2 s; 0.71 against 0.68 s a run
        in a process whose fork server is up. Forking them in the hand-over thread at once was no better
        (8.5 s, 0.72 s): the scoring thread's set-up slowed beside it."""
        if self.workers and self.start_method == "forkserver":
            from multiprocessing import forkserver

            self._preload(fn)
            forkserver.ensure_running()

    def _preload(self, fn: Callable[..., Any]) -> None:
        # Imported once by the fork server (if this process has not started one yet), not by each worker: fn's
        # module and the modules it names in WORKER_PRELOAD, which it imports on first use (so that the run's
        # own process, which only hands fn over, need not).
        extra = getattr(sys.modules.get(fn.__module__), "WORKER_PRELOAD", ())
        multiprocessing.get_context("forkserver").set_forkserver_preload([fn.__module__, *extra])

    def _start(self, fn: Callable[..., Any]) -> ProcessPoolExecutor:
        with self._starting:  # the calling thread and the hand-over thread may both start the pool
            if self._executor is None:
                self._executor = _take_idle_pool(self._key())
            if self._executor is None:
                if self.start_method == "forkserver":
                    self._preload(fn)
                self._executor = ProcessPoolExecutor(max_workers=self.workers, initializer=_worker_start,
                                                     initargs=(os.getpid(),),
                                                     mp_context=multiprocessing.get_context(self.start_method))
            return self._executor

    def _key(self) -> tuple[int, str]:
        return self.workers, self.start_method

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the workers (the work not started is dropped); the pool may be used again afterwards.
        ``wait=False``: return without waiting for the processes to exit (they finish the task in hand, if
        any, then exit; the interpreter waits for them at its exit)."""
        self._stop_dispatcher()  # first: a hand-over in progress still finds the workers
        self._stop_workers(wait=wait)

    def _stop_dispatcher(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.shutdown(wait=True, cancel_futures=True)
            self._dispatcher = None

    def _stop_workers(self, *, wait: bool = True) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: Any) -> None:
        if exc_type is None and IDLE_POOLS_KEPT > 0:
            self._keep_workers()
        else:
            # Not waiting: joining every worker (10 ms for 15 on a 16-CPU host) would delay what follows.
            self.shutdown(wait=False)

    def _keep_workers(self) -> None:
        """Hand the workers to the process's idle pools for a later run (the run has collected its work)."""
        self._stop_dispatcher()
        if self._executor is not None:
            _keep_idle_pool(self._key(), self._executor)
            self._executor = None

    def describe(self) -> dict[str, Any]:
        """How the run's metric work was done, for the run manifest."""
        return {"workers": self.workers, "start_method": self.start_method if self.workers else "inline"}


INLINE = WorkerPool(0)  # metrics used outside a run (no RunContext.pool) work inline
