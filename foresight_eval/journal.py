"""The run journal: one JSON line per finished clip pair, appended and flushed as each pair finishes,
so an interrupted run loses at most the pairs in flight and `--resume` can finish it.

Each rank writes its own file, ``<run>/partial/rank-NNNNN.jsonl``. Its first line is a header holding
what makes results comparable (every metric's definition and parameters, the scoring options); a
resumed run must match it. Each later line is one pair's result with the SHA-256 of its input files:
a pair is reused only if its files are unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from foresight_eval.errors import UsageError
from foresight_eval.results import PairResult, json_safe

PARTIAL_DIR = "partial"


def _pair_record(result: PairResult) -> dict[str, Any]:
    return {
        "video": result.video, "pred": result.pred, "ref": result.ref, "status": result.status,
        "error": result.error, "frames": result.frames, "values": result.values,
        "per_frame": {name: [list(row) for row in rows] for name, rows in result.per_frame.items()},
        "set_parts": result.set_parts, "inputs": result.inputs, "seed": result.seed, "media": result.media,
    }


def _number(value: Any) -> float:
    # json_safe writes NaN as null and infinities as strings
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


class Journal:
    def __init__(self, run_dir: Path, rank: int, header: dict[str, Any]):
        self.path = Path(run_dir) / PARTIAL_DIR / f"rank-{rank:05d}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        if self.path.stat().st_size == 0:
            self._write({"header": json_safe(header)})

    def append(self, result: PairResult) -> None:
        self._write({"pair": json_safe(_pair_record(result))})

    def _write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, allow_nan=False) + "\n")
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


def load_finished_pairs(run_dir: Path, header: dict[str, Any]) -> dict[tuple[str, str], PairResult]:
    """Pairs already finished in ``run_dir``'s journals, by (seed, video); refuses journals scored differently.

    A line cut short by a crash is ignored: its pair is simply scored again.
    """
    files = sorted((Path(run_dir) / PARTIAL_DIR).glob("rank-*.jsonl"))
    if not files:
        raise UsageError(f"--resume: {run_dir} holds no run journal ({PARTIAL_DIR}/rank-*.jsonl) to resume from")
    expected = json_safe(header)
    finished: dict[str, PairResult] = {}
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if number == 0:
                    differences = _header_differences(record.get("header", {}), expected)
                    if differences:
                        raise UsageError(f"--resume: {file} was scored differently: " + "; ".join(differences))
                elif "pair" in record:
                    pair = _pair_from_record(record["pair"])
                    finished[pair.seed, pair.video] = pair
    return finished
