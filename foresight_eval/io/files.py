"""Atomic writes and content hashes of input files."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
from collections.abc import Iterable
from typing import Any

from foresight_eval.errors import InputError


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write through a temporary file in the same folder, then rename over the target.

    A reader (or an interrupted run) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_quoting(cells: Iterable[Any]) -> int:
    """``csv.QUOTE_ALL`` for a row or table with a carriage return in a text cell, else ``QUOTE_MINIMAL``.

    Python's csv writer quotes a field for the characters of its line terminator ("\\n" in run files),
    not for a lone "\\r", while readers (csv.reader, pandas) end a row there: such a cell must be quoted.
    """
    return csv.QUOTE_ALL if any(isinstance(cell, str) and "\r" in cell for cell in cells) else csv.QUOTE_MINIMAL


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# JSON numbers have no infinity. An infinite value is written as the number 1e999 (-1e999): valid JSON
# by the grammar of RFC 8259, read back as float("inf") by Python's json module, JavaScript's JSON.parse,
# pandas and most parsers (their doubles overflow to infinity). NaN, which no JSON number can stand for,
# is written as null ("no value"). See docs/statistics.md, "Infinities".
POSITIVE_INFINITY, NEGATIVE_INFINITY = "1e999", "-1e999"
# Placeholders that json.dumps writes verbatim (a NUL cannot occur in names taken from file paths).
_INF_TOKENS = {math.inf: "\x00+inf\x00", -math.inf: "\x00-inf\x00"}


def json_safe(value: Any) -> Any:
    """Plain JSON-ready Python: NaN becomes None (null), NumPy scalars Python numbers, paths strings;
    +-inf stay floats, which :func:`dumps_json` writes as the numbers +-1e999."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def dumps_json(payload: Any, indent: int | None = 2) -> str:
    """``json.dumps`` with the non-finite numbers written as above: +-inf as +-1e999, NaN as null."""
    text = json.dumps(_tokens(payload), indent=indent, sort_keys=False, allow_nan=False)
    for value, literal in ((math.inf, POSITIVE_INFINITY), (-math.inf, NEGATIVE_INFINITY)):
        text = text.replace(json.dumps(_INF_TOKENS[value]), literal)
    return text


def _tokens(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _tokens(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tokens(item) for item in value]
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return _INF_TOKENS[value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    write_atomic(path, dumps_json(payload) + "\n")


def input_file_hashes(path: Path) -> dict[str, Any]:
    """A run input that is not a clip (annotations, detections, masks) for the manifest: its path and the
    SHA-256 of the file, or of every file under the folder by relative path."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {"root": str(path), "sha256": {
        (p.relative_to(path).as_posix() if path.is_dir() else p.name): sha256_file(p) for p in files}}


def special_file_kind(mode: int) -> str | None:
    """What a file that is not a regular file (nor a folder) is, from its ``st_mode``; None for those two."""
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return None


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a regular file. Anything else is an InputError: reading a FIFO waits for a writer that
    may never come, and a device may never end. O_NONBLOCK keeps the open itself from waiting."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        kind = special_file_kind(os.fstat(fd).st_mode)
        if kind or stat.S_ISDIR(os.fstat(fd).st_mode):
            raise InputError(f"{path}: {kind or 'a folder'}, not a regular file")
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: Path, path: Path) -> dict[str, str]:
    """SHA-256 of a clip's files (every frame of a frame folder), keyed by path relative to ``root``."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    base = root if root.is_dir() else root.parent
    return {file.relative_to(base).as_posix(): sha256_file(file) for file in files if file.exists()}


def input_hashes(root: Path, paths: list[Path]) -> dict[str, str]:
    """SHA-256 of every file of several clips under ``root``, for a manifest; a clip that cannot be read is
    left out (it is an error row)."""
    hashes = {}
    for path in paths:
        try:
            hashes.update(file_hashes(root, path))
        except (OSError, InputError):
            continue
    return hashes


def pair_input_hashes(pair: Any, preds: Path, refs: Path) -> dict[str, dict[str, str]]:
    """SHA-256 of a clip pair's files (a :class:`foresight_eval.io.pairing.ClipPair`), by side."""
    return {"pred": file_hashes(preds, pair.pred), "ref": file_hashes(refs, pair.ref)}


def packaged_yaml_names(folder: Any) -> list[str]:
    """The names (without the suffix) of the YAML files in a folder the package ships
    (``importlib.resources.files(...)``: gate presets, profiles)."""
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def named_or_packaged_yaml(name_or_path: str | Path, folder: Any, kind: str, named: str, error: type[Exception],
                           base: Path | None = None) -> Path:
    """A YAML file given by path (relative to ``base`` when given) or by the name of one in ``folder``, a
    folder the package ships; errors call the files ``kind`` files ("gate") and the names ``named``
    ("preset"). Something that looks like a path (a .yaml suffix, a slash) is never taken for a name, so a
    mistyped path is not silently a preset."""
    candidate = Path(name_or_path)
    if base is not None and not candidate.is_absolute():
        candidate = base / candidate
    if candidate.is_file():
        return candidate
    text = str(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in text or "\\" in text:
        raise error(f"{kind} file {text} not found")
    packaged = folder / f"{text.lower()}.yaml"
    if not packaged.is_file():
        raise error(f"{text!r} is neither a {kind} file nor a {named} "
                    f"({named}s: {', '.join(packaged_yaml_names(folder))})")
    return Path(str(packaged))
