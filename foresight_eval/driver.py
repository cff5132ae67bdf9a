"""The run driver: a run's plan, and the one loop that carries it out for `score`, `latents` and `generate`.

A :class:`RunPlan` holds what a run will do, checked before any work starts: the work items in plan order
(clip pairs, latent file pairs, context clips) with the key that names each, the definitions of the metrics
that run, the metrics skipped (with their reasons), what else makes two runs' results comparable (the
scoring options) and the world (`torchrun` ranks). Its :attr:`RunPlan.header` is what the run journal
records first and what ``resume`` checks (:mod:`foresight_eval.journal`).

:func:`run_plan` is the loop: it takes this rank's share of the items, reuses the results an interrupted run
already journaled for items whose input files are unchanged, hands the others to a scoring callable in
batches, journals each result as it comes back, reports progress, gathers every rank's results on rank 0
and puts them back in plan order. The scoring callable takes a batch of :class:`Task` and returns the
results finished by then (of this batch or of earlier ones: a callable that writes in background threads
returns results late, and returns the rest from ``finish``); a callable that fails must turn the failure
into an error result, so one bad item never loses the run.

Memory: the loop holds this rank's results (a few numbers per item and metric, per frame at most; never
frames), the SHA-256 hashes of their input files and the journaled results of an interrupted run being
resumed; the callable bounds what it holds per batch. Rank 0 holds every rank's results at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from foresight_eval.distributed import World, gather_to_main
from foresight_eval.errors import InputError, UsageError, field_ref
from foresight_eval.journal import Journal, load_finished_pairs
from foresight_eval.results import PairResult

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RunPlan(Generic[T]):
    """What a run will do (see the module docstring). ``key`` names an item; the results name theirs with
    :func:`run_plan`'s ``result_key`` so that plan order can be restored after the gather."""

    items: Sequence[T]
    key: Callable[[T], Hashable]
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> definition (describe())
    skipped: Mapping[str, str] = field(default_factory=dict)  # name -> why it does not run
    settings: Mapping[str, Any] = field(default_factory=dict)  # options etc. that results depend on
    world: World = World()

    def __post_init__(self) -> None:
        keys = [self.key(item) for item in self.items]
        if len(set(keys)) != len(keys):
            duplicated = sorted({str(key) for key in keys if keys.count(key) > 1})
            raise ValueError(f"run plan: items share the keys {duplicated}; results could not be told apart")
        both = sorted(set(self.metrics) & set(self.skipped))
        if both:
            raise ValueError(f"run plan: metrics {both} are both run and skipped")

    @property
    def header(self) -> dict[str, Any]:
        """The journal header: what must be equal for two runs' results to be comparable."""
        return {"metrics": {name: dict(definition) for name, definition in self.metrics.items()}, **self.settings}


@dataclass(frozen=True)
class Task(Generic[T]):
    """One work item as the scoring callable gets it."""

    item: T
    inputs: dict[str, Any] = field(default_factory=dict)  # SHA-256 of its input files, when the run hashes them
    problem: str | None = None  # its input files cannot be read: the callable must make it an error result


@dataclass
class Gathered(Generic[R]):
    """What :func:`run_plan` returns on rank 0: every rank's results in plan order, and each rank's
    ``rank_extra`` (in rank order)."""

    results: list[R]
    rank_extras: list[Any]


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc, 10 ms resolution); None where that is unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22 of stat: start time
    except (OSError, ValueError, IndexError):
        return None


class RunPhases:
    """Wall seconds of one rank's phases of a run, in the order they end: where a run's time goes, and
    which parts do not shrink when `torchrun` adds ranks (benchmarks/scaling.py reads them from the manifest).

    ``start_up`` is the process's age when the run began (interpreter, imports, argument parsing; under
    `torchrun` from the rank's own start); then each :meth:`end` closes the phase since the previous one."""

    DEFINITION = ("seconds per rank: start_up (process start to the run's start: interpreter, imports, options), "
                  "setup (pairing, metric set-up and model loading), scoring (this rank's share, journaling "
                  "included), gather (waiting for every rank and collecting the results, rank 0), merge (set "
                  "values, summaries and bootstrap CIs, rank 0); writing the run folder comes after and is not "
                  "included")

    def __init__(self) -> None:
        age = process_age()
        self.seconds: dict[str, float] = {} if age is None else {"start_up": round(age, 3)}
        self._since = time.perf_counter()

    def end(self, phase: str) -> dict[str, float]:
        """Close ``phase`` (the time since the previous one ended); a copy of every phase so far."""
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._since, 4)
        self._since = now
        return dict(self.seconds)

    def record(self, other_ranks: Sequence[Mapping[str, float] | None]) -> dict[str, Any]:
        """The manifest's ``timings``: this process's phases as rank 0's, then the others' (as gathered)."""
        return {"definition": self.DEFINITION, "ranks": [dict(self.seconds), *(dict(r or {}) for r in other_ranks[1:])]}


def pair_key(result: PairResult) -> tuple[str, str]:
    """A scored pair's key: (prediction set, clip)."""
    return result.seed, result.video


@contextmanager
def _hashing_thread() -> Iterator[ThreadPoolExecutor]:
    """One background thread for input hashing; leaving early (Ctrl-C, an error) cancels the hashes not
    started, instead of waiting for every remaining file to be read."""
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _task(item: T, pending: Future | None) -> Task[T]:
    if pending is None:
        return Task(item)
    try:
        return Task(item, pending.result())
    except OSError as exc:  # unreadable: one error row
        return Task(item, problem=f"cannot read input: {exc}")
    except InputError as exc:  # not a regular file
        return Task(item, problem=str(exc))


def run_plan(
    plan: RunPlan[T],
    score: Callable[[list[Task[T]]], Iterable[R]],
    *,
    result_key: Callable[[R], Hashable] = pair_key,  # type: ignore[assignment]
    batch_size: int = 1,
    finish: Callable[[], Iterable[R]] | None = None,
    hash_inputs: Callable[[T], dict[str, Any]] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[R], None] | None = None,
    rank_extra: Callable[[], Any] | None = None,
) -> Gathered[R] | None:
    """Carry out ``plan`` on this rank (see the module docstring); the gathered results on rank 0, None on
    the other ranks.

    ``score`` gets batches of at most ``batch_size`` tasks and ``finish`` is called once after the last.
    ``hash_inputs`` gives an item's input-file hashes, computed ahead in a background thread (hashlib
    releases the GIL) and recorded on each result; an item whose files cannot be read reaches ``score``
    with its ``problem`` set. With ``run_dir``, results (:class:`PairResult`) are journaled there;
    ``resume`` reuses those an interrupted run journaled under an equal header, for items whose input
    files are unchanged (a differing header is a UsageError); a journaled run's plan keys are (prediction
    set, clip) pairs, as the journal keys its records. ``on_start`` gets this rank's number of
    items, ``on_result`` each result as it is journaled or reused; ``rank_extra`` is called after the
    loop and its value travels to rank 0 with this rank's results (timings, for instance).
    """
    if resume and run_dir is None:
        raise UsageError(f"{field_ref('resume')} needs the run folder of the interrupted run ({field_ref('run_dir')})")
    world = plan.world
    finished = load_finished_pairs(Path(run_dir), plan.header) if resume else {}
    journal = Journal(Path(run_dir), world.rank, plan.header, world_size=world.size, resume=resume) \
        if run_dir is not None else None
    mine = world.shard(list(plan.items))
    if on_start:
        on_start(len(mine))
    results: list[R] = []

    def report(done: Iterable[R]) -> None:
        for result in done:
            if hash_inputs is not None:
                result.inputs = inputs[result_key(result)]  # type: ignore[attr-defined]
            if journal is not None:
                journal.append(result)  # type: ignore[arg-type]
            results.append(result)
            if on_result:
                on_result(result)

    inputs: dict[Hashable, dict[str, Any]] = {}
    try:
        with _hashing_thread() if hash_inputs else nullcontext() as hasher, torch.inference_mode():
            hashes = [hasher.submit(hash_inputs, item) if hasher else None for item in mine]
            batch: list[Task[T]] = []
            for item, pending in zip(mine, hashes):
                task = _task(item, pending)
                reused = finished.get(plan.key(item))  # type: ignore[call-overload]
                if task.problem is None and reused is not None and reused.inputs == task.inputs:
                    results.append(reused)  # type: ignore[arg-type]
                    if on_result:
                        on_result(reused)  # type: ignore[arg-type]
                    continue
                inputs[plan.key(item)] = task.inputs
                batch.append(task)
                if len(batch) == batch_size:
                    report(score(batch))
                    batch = []
            if batch:
                report(score(batch))
            if finish is not None:
                report(finish())
    finally:
        if journal is not None:
            journal.close()
    gathered = gather_to_main((results, rank_extra() if rank_extra else None), world)
    if not world.is_main:
        return None
    order = {plan.key(item): index for index, item in enumerate(plan.items)}
    merged = sorted((result for rank_results, _ in gathered for result in rank_results),
                    key=lambda result: order[result_key(result)])
    return Gathered(merged, [extra for _, extra in gathered])


def manifest_inputs(sets: Mapping[str, Path], refs: Path, results: Sequence[PairResult]) -> dict[str, Any]:
    """Input roots and file hashes of scored pairs for the manifest; a seeded run's prediction files are
    named ``<seed>/<path>``."""
    def hashes(key: str, prefixed: bool) -> dict[str, str]:
        return dict(sorted((f"{r.seed}/{name}" if prefixed and r.seed else name, digest)
                           for r in results for name, digest in r.inputs.get(key, {}).items()))

    seeded = "" not in sets
    predictions = {"root": {seed: str(root) for seed, root in sets.items()} if seeded else str(sets[""]),
                   "sha256": hashes("pred", seeded)}
    return {"predictions": predictions, "references": {"root": str(refs), "sha256": hashes("ref", False)}}
