"""The run journal: one JSON line per finished clip pair, appended and flushed as each pair finishes,
so an interrupted run loses at most the pairs in flight and `--resume` can finish it.

Each rank writes its own file, ``<run>/partial/rank-NNNNN.jsonl``. Its first line is a header holding
what makes results comparable (every metric's definition and parameters, the scoring options); a
resumed run must match it. Each later line is one pair's result with the SHA-256 of its input files:
a pair is reused only if its files are unchanged, and only under a header that matches.

A new run (without ``--resume``) into an existing run folder replaces the run there: as it starts, the
previous summary, per-video and per-frame files and journals are removed, so the folder never mixes two
runs. One process at a time writes a run folder: it holds ``<run>/.lock`` (an advisory ``flock``, which
the kernel drops when the process dies, holding the owner's pid and host). A lock file left behind by a
run that was killed is reported and taken over.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from foresight_eval.distributed import current_world
from foresight_eval.errors import UsageError, field_ref
from foresight_eval.io.files import dumps_json, json_safe
from foresight_eval.options import current_option_names
from foresight_eval.results import PER_FRAME_FILE, PER_VIDEO_FILE, SUMMARY_FILE, PairResult, load_summary

PARTIAL_DIR = "partial"
LOCK_FILE = ".lock"
log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _pair_record(result: PairResult) -> dict[str, Any]:
    return {
        "video": result.video, "pred": result.pred, "ref": result.ref, "status": result.status,
        "error": result.error, "frames": result.frames, "values": result.values,
        "per_frame": {name: [list(row) for row in rows] for name, rows in result.per_frame.items()},
        "set_parts": result.set_parts, "inputs": result.inputs, "seed": result.seed, "media": result.media,
    }


def _number(value: Any) -> float:
    # NaN is stored as null; infinities as +-1e999 (journals of older versions: "inf" strings, read alike)
    return float("nan") if value is None else float(value)


def _pair_from_record(record: dict[str, Any]) -> PairResult:
    return PairResult(
        video=record["video"], pred=record["pred"], ref=record["ref"], status=record["status"],
        error=record["error"], frames=record["frames"],
        values={name: _number(v) for name, v in record["values"].items()},
        per_frame={name: [(int(h), int(f), _number(v)) for h, f, v in rows] for name, rows in record["per_frame"].items()},
        set_parts=record["set_parts"], inputs=record["inputs"], seed=record.get("seed", ""),
        media=record.get("media", {}),
    )


def _journal_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / PARTIAL_DIR / f"rank-{rank:05d}.jsonl"


class Journal:
    """This rank's journal. ``resume``: append to it (its header was checked by :func:`load_finished_pairs`);
    otherwise start afresh, and the main rank (``rank`` 0) removes what a previous run left in the folder."""

    def __init__(self, run_dir: Path, rank: int, header: dict[str, Any], *, world_size: int = 1,
                 resume: bool = False):
        self.path = _journal_path(run_dir, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and rank == 0:
            _remove_previous_run(Path(run_dir), world_size)
        self._handle = open(self.path, "a" if resume else "w", encoding="utf-8")
        if resume and self.path.stat().st_size:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a line cut short by a kill: end it, or the next record joins it
                    self._handle.write("\n")
        if self.path.stat().st_size == 0:
            self._write({"header": json_safe(header)})

    def append(self, result: PairResult) -> None:
        self._write({"pair": json_safe(_pair_record(result))})

    def _write(self, record: dict[str, Any]) -> None:
        self._handle.write(dumps_json(record, indent=None) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _header_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    differences = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += _header_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: was {a!r}, now {b!r}")
    return differences


def _current_names(header: dict[str, Any]) -> dict[str, Any]:
    """A journal header with options renamed since it was written under their current names."""
    options = header.get("options")
    return {**header, "options": current_option_names(options)} if isinstance(options, dict) else header


def load_finished_pairs(run_dir: Path, header: dict[str, Any]) -> dict[tuple[str, str], PairResult]:
    """Pairs already finished in ``run_dir``'s journals, by (seed, video); refuses journals scored differently.

    A line cut short by a crash is ignored: its pair is simply scored again.
    """
    files = sorted((Path(run_dir) / PARTIAL_DIR).glob("rank-*.jsonl"))
    if not files:
        raise UsageError(f"{field_ref('resume')}: {run_dir} holds no run journal ({PARTIAL_DIR}/rank-*.jsonl) to resume from")
    expected = json_safe(header)
    finished: dict[str, PairResult] = {}
    for file in files:
        with open(file, encoding="utf-8") as handle:
            matches = False  # records count only under a header equal to this run's
            for number, line in enumerate(handle):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                if "header" in record:
                    differences = _header_differences(_current_names(record["header"]), expected) \
                        if isinstance(record["header"], dict) else ["header: not a JSON object"]
                    if number == 0 and differences:
                        raise UsageError(f"{field_ref('resume')}: {file} was scored differently: " + "; ".join(differences))
                    # A later header: a journal another run appended to (before run folders were locked).
                    matches = not differences
                elif "pair" in record and matches:
                    pair = _pair_from_record(record["pair"])
                    finished[pair.seed, pair.video] = pair
    return finished


def _remove_previous_run(run_dir: Path, world_size: int) -> None:
    """What a previous run left in ``run_dir``: the summary first (its presence marks a finished run), then
    the tables and the journals of ranks this run does not have (each rank restarts its own)."""
    for name in (SUMMARY_FILE, PER_VIDEO_FILE, PER_FRAME_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for journal in (run_dir / PARTIAL_DIR).glob("rank-*.jsonl"):
        rank = journal.stem.removeprefix("rank-")
        if not rank.isdigit() or int(rank) >= world_size:
            journal.unlink(missing_ok=True)


def is_run_folder(path: Path) -> bool:
    """A folder this package wrote: a finished run (summary.json of our schema) or an interrupted one."""
    path = Path(path)
    try:
        load_summary(path)
        return True
    except (OSError, ValueError, AttributeError):  # AttributeError: JSON that is no object
        pass
    return any((path / PARTIAL_DIR).glob("rank-*.jsonl")) or (path / LOCK_FILE).is_file()


def prepare_run_folder(run_dir: Path) -> Path:
    """Create ``--out`` before any scoring starts; a usage error (exit 2) when it cannot be created, or
    when it is an existing folder holding files but no run (its files would be overwritten)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        entries = sorted(entry.name for entry in run_dir.iterdir() if not entry.name.startswith("."))
    except OSError as exc:
        raise UsageError(f"{field_ref('run_dir', run_dir)}: cannot create the run folder ({exc.strerror or exc})") from exc
    if entries and not is_run_folder(run_dir):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UsageError(f"{field_ref('run_dir', run_dir)}: an existing folder that is not a run folder (it holds {shown}); "
                         "give a new or empty folder, or a run folder")
    return run_dir


class RunLock:
    """``<run>/.lock``: one writer per run folder. An advisory ``flock`` makes taking it atomic and is
    dropped by the kernel when its owner dies; the file's content (pid, host) names the owner."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UsageError(f"{field_ref('run_dir', self.path.parent)}: cannot write the lock file "
                                 f"({exc.strerror or exc})") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise UsageError(f"{field_ref('run_dir', self.path.parent)} is being written by another run ({owner}; lock file "
                                 f"{self.path}); wait for it to finish or give another folder") from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:  # else the owner removed it between our open and our lock: take the new one
                break
            os.close(fd)
        stale = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if stale:
            log.warning("stale lock %s (%s) taken over: the run that held it ended without releasing it "
                        "(killed or crashed)", self.path, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # unlinked while still locked, so no one takes a lock being dropped
        os.close(self._fd)
        self._fd = None


def holds_run_folder(function: F) -> F:
    """Wrap a scoring function taking ``run_dir=``: on the main rank, prepare the run folder and hold its
    lock for the whole call (scoring and writing), released however the call ends."""
    @functools.wraps(function)
    def wrapper(*args: Any, run_dir: str | Path | None = None, **kwargs: Any) -> Any:
        if run_dir is None or not current_world().is_main:
            return function(*args, run_dir=run_dir, **kwargs)
        lock = RunLock(prepare_run_folder(Path(run_dir)))
        lock.acquire()
        try:
            return function(*args, run_dir=run_dir, **kwargs)
        finally:
            lock.release()

    return wrapper  # type: ignore[return-value]
