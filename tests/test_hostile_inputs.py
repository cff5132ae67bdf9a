"""Hostile and broken inputs: a corpus built at test time, scored through the command line.

Every case asserts the exit code, the error row's reason (or the one-line usage error), that every other
pair was scored, and that the run folder is consistent (summary, per_video.csv and journal agree, no lock
left behind). The ten defects of issue 13 have the cases named ``test_defectNN_*``; the corpus cases
(``test_corpus``) are the inputs that were already handled and must stay so.

Clips are 16x16 with 4 frames: the whole file runs in seconds, and only the signal cases start a process.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import logging
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from foresight_eval.cli import main
from foresight_eval.gates.spec import load_gates
from foresight_eval.io.annotations import AnnotationError, load_spatial_resources
from foresight_eval.io.clips import discover_clips
from foresight_eval.journal import LOCK_FILE, RunLock
from foresight_eval.report.render import markdown_escape
from foresight_eval.results import PairResult, fail_pair
from foresight_eval.runs import load_run, read_run_csv
from tests.clipmaker import gradient_clip, write_container, write_frames_folder

REPO = Path(__file__).resolve().parents[1]
T, H, W = 4, 16, 16
HOSTILE_NAMES = ["new\nline", "carriage\rreturn", "<script>alert(1)<\\script>", "comma, \"quote\"", "tab\tand|pipe",
                 "null"]


# --- building inputs ------------------------------------------------------------------------------

def frames(seed: int = 0, n: int = T) -> np.ndarray:
    return gradient_clip(n_frames=n, height=H, width=W, seed=seed)


def good_pair(preds: Path, refs: Path, name: str, seed: int = 0) -> None:
    clip = frames(seed)
    np.save(preds / f"{name}.npy", np.clip(clip.astype(np.int16) + 3, 0, 255).astype(np.uint8))
    np.save(refs / f"{name}.npy", clip)


def write_png(path: Path, array: np.ndarray, bits: int = 16, size: tuple[int, int] | None = None) -> Path:
    """A PNG written by hand (Pillow cannot write 16-bit colour): grey, grey + alpha, RGB or RGBA by the
    channel count; ``size`` overrides the header's width and height (a decompression bomb's lie)."""
    array = np.asarray(array, dtype=">u2" if bits == 16 else np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    h, w, c = array.shape
    raw = b"".join(b"\x00" + array[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    width, height = size or (w, h)
    header = struct.pack(">IIBBBBB", width, height, bits, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


class Payload:
    """A pickle that, if ever unpickled, creates its marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


# --- running and checking -------------------------------------------------------------------------

def cli(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)
    return result.exit_code, result.output


def first_json(output: str) -> dict:
    """The JSON document a --json run prints (the notes after it go to stderr, which the runner mixes in)."""
    return json.JSONDecoder().raw_decode(output[output.index("{"):])[0]


def per_video_rows(run_dir: Path) -> dict[str, dict[str, str]]:
    with open(run_dir / "per_video.csv", encoding="utf-8", newline="") as handle:
        return {row["video"]: row for row in csv.DictReader(handle)}


def assert_consistent(run_dir: Path, errors: dict[str, str], ok: set[str], metrics: tuple[str, ...] = ("psnr",)):
    """The run folder holds exactly these pairs: the errors with their reasons, the rest scored, read back
    identically by csv and pandas; summary and journal agree; no lock file remains."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = per_video_rows(run_dir)
    assert set(rows) == set(errors) | ok
    for video, reason in errors.items():
        assert rows[video]["status"] == "error", video
        assert reason in rows[video]["error"], (video, rows[video]["error"])
        assert "\x1b" not in rows[video]["error"]
    for video in ok:
        assert rows[video]["status"] == "ok", (video, rows[video]["error"])
        for metric in metrics:
            assert rows[video][metric] != "", (video, metric)
    assert summary["videos"] == {"total": len(rows), "ok": len(ok), "error": len(errors),
                                 "errors": {video: rows[video]["error"] for video in errors}}
    for metric in metrics:
        assert summary["metrics"][metric]["n"] == len(ok)
    per_video = load_run(run_dir).per_video  # what report, compare and check read
    assert sorted(per_video["video"]) == sorted(rows)
    journal = [json.loads(line) for line in (run_dir / "partial" / "rank-00000.jsonl").read_text().splitlines()]
    assert "header" in journal[0] and sorted(r["pair"]["video"] for r in journal[1:]) == sorted(rows)
    assert not (run_dir / LOCK_FILE).exists()


@pytest.fixture
def sides(tmp_path):
    preds, refs = tmp_path / "preds", tmp_path / "refs"
    preds.mkdir()
    refs.mkdir()
    good_pair(preds, refs, "good0", seed=0)
    good_pair(preds, refs, "good1", seed=1)
    return preds, refs


@pytest.fixture
def alarm():
    """A hang becomes a failure after 60 s instead of a stuck test run."""
    def timeout(signum, frame):
        raise TimeoutError("the run hung")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- the corpus: inputs that were handled already, all scored in one run ---------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    preds, refs, out, marker = root / "preds", root / "refs", root / "run", root / "UNPICKLED"
    preds.mkdir()
    refs.mkdir()
    good_pair(preds, refs, "good0", seed=0)
    good_pair(preds, refs, "good1", seed=1)
    ref = frames()
    cases = {}  # video key -> expected reason

    def case(name: str, reason: str) -> Path:
        np.save(refs / f"{name}.npy", ref)
        cases[name] = reason
        return preds / name

    video = write_container(root / "whole.avi", ref, "png", "rgb24").read_bytes()
    case("truncated", "truncated.avi: not a readable video").with_suffix(".avi").write_bytes(video[: len(video) // 2])
    case("empty", "not a readable video").with_suffix(".mp4").write_bytes(b"")
    case("text_as_video", "not a readable video").with_suffix(".mp4").write_text("this is not a video\n")
    np.save(case("zero_frames", "zero frames").with_suffix(".npy"), np.zeros((0, H, W, 3), np.uint8))
    np.save(case("nan", "NaN or infinite").with_suffix(".npy"), np.full((T, H, W, 3), np.nan, np.float32))
    np.save(case("inf", "NaN or infinite").with_suffix(".npy"), np.full((T, H, W, 3), np.inf, np.float32))
    np.save(case("int16", "dtype int16 not supported").with_suffix(".npy"), ref.astype(np.int16))
    objects = np.array([Payload(marker)] * T, dtype=object)
    np.save(case("pickle_npy", "pickled data), refused").with_suffix(".npy"), objects, allow_pickle=True)
    np.savez(case("pickle_npz", "pickled data), refused").with_suffix(".npz"), frames=objects)
    bomb = case("bomb", "DecompressionBomb")
    write_frames_folder(bomb, ref)
    write_png(bomb / "frame9.png", np.zeros((1, 1, 3)), bits=8, size=(100_000, 100_000))
    loop = case("loop", "does not exist").with_suffix(".npy")
    loop.symlink_to(loop.name)  # a link to itself
    np.save(case("duplicate", "ambiguous predictions: duplicate.npy, duplicate.npz").with_suffix(".npy"), ref)
    np.savez(preds / "duplicate.npz", frames=ref)
    folder_loop = preds / "sub"
    folder_loop.mkdir()
    (folder_loop / "up").symlink_to("..", target_is_directory=True)  # skipped: a folder already walked
    for index, name in enumerate(HOSTILE_NAMES):
        good_pair(preds, refs, name, seed=10 + index)
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", out)
    ok = {"good0", "good1", *HOSTILE_NAMES}
    return {"code": code, "output": output, "out": out, "cases": cases, "ok": ok, "marker": marker}


@pytest.mark.parametrize("name", ["truncated", "empty", "text_as_video", "zero_frames", "nan", "inf", "int16",
                                  "pickle_npy", "pickle_npz", "bomb", "loop", "duplicate"])
def test_corpus(corpus, name):
    row = per_video_rows(corpus["out"])[name]
    assert row["status"] == "error" and corpus["cases"][name] in row["error"], row
    assert not corpus["marker"].exists(), "a pickle payload was executed"


def test_corpus_run_exits_1_scores_every_other_pair_and_is_consistent(corpus):
    assert corpus["code"] == 1, corpus["output"]
    assert_consistent(corpus["out"], corpus["cases"], corpus["ok"])


def test_corpus_hostile_names_round_trip(corpus):
    """Newline, CR, HTML, quotes, tab and pipe in clip names: scored, and read back exactly."""
    rows = per_video_rows(corpus["out"])
    for name in HOSTILE_NAMES:
        assert rows[name]["status"] == "ok"
    frame_rows = read_run_csv(corpus["out"] / "per_frame.csv", text=("video", "metric"))  # as reports read it
    assert set(frame_rows["video"]) == corpus["ok"]


def test_corpus_pickle_in_pt_latents_is_refused_unexecuted(tmp_path):
    a, b, marker = tmp_path / "a", tmp_path / "b", tmp_path / "UNPICKLED"
    a.mkdir()
    b.mkdir()
    latents = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    for name in ("good", "evil"):
        torch.save(latents, b / f"{name}.pt")
    torch.save(latents + 0.1, a / "good.pt")
    torch.save({"latents": latents, "payload": Payload(marker)}, a / "evil.pt")
    code, output = cli("latents", a, b, "-m", "cka", "--out", tmp_path / "run")
    assert code == 1, output
    rows = per_video_rows(tmp_path / "run")
    assert rows["good"]["status"] == "ok" and "weights_only" in rows["evil"]["error"]
    assert not marker.exists()


# --- the ten defects ------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 2, 3, 4], ids=["gray", "gray_alpha", "rgb", "rgba"])
def test_defect01_16bit_png_keeps_its_precision(tmp_path, channels):
    """16-bit PNGs are scaled by 1/65535: against float references v / 65535 (values 8 bits cannot hold)
    MAE is 0 and PSNR inf, and v * 257 scores exactly as its 8-bit twin v. Alpha is dropped."""
    rng = np.random.default_rng(channels)
    colour = 1 if channels in (1, 2) else 3
    values = rng.integers(0, 65536, size=(T, H, W, colour), dtype=np.uint16)
    alpha = np.full((H, W, 1), 7, np.uint16)
    twin = frames() if colour == 3 else frames()[..., :1]
    for name, pixels in (("precise", values), ("twin", twin.astype(np.uint16) * 257)):
        folder = tmp_path / "preds" / name
        folder.mkdir(parents=True)
        for index, frame in enumerate(pixels):
            write_png(folder / f"frame{index}.png", np.concatenate([frame, alpha], -1) if channels in (2, 4) else frame)
    (tmp_path / "refs").mkdir()
    precise = values.astype(np.float32) / np.float32(65535)
    np.save(tmp_path / "refs" / "precise.npy", np.repeat(precise, 3 // colour, -1))
    write_frames_folder(tmp_path / "refs" / "twin", np.repeat(twin, 3 // colour, -1))
    code, output = cli("score", tmp_path / "preds", tmp_path / "refs", "-m", "psnr,mae", "--out", tmp_path / "run")
    assert code == 0, output
    for row in per_video_rows(tmp_path / "run").values():
        assert float(row["mae"]) == 0.0 and float(row["psnr"]) == float("inf"), row


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "1"])
def test_defect01_8bit_modes_become_rgb(tmp_path, mode):
    picture = frames()
    preds, refs = tmp_path / "preds" / "clip", tmp_path / "refs" / "clip"
    preds.mkdir(parents=True)
    expected = []
    for index, frame in enumerate(picture):
        image = Image.fromarray(frame).convert(mode)
        image.save(preds / f"frame{index}.png")
        expected.append(np.asarray(image.convert("RGB")))
    write_frames_folder(refs, np.stack(expected))
    code, output = cli("score", preds.parent, refs.parent, "-m", "mae", "--out", tmp_path / "run")
    assert code == 0, output
    assert float(per_video_rows(tmp_path / "run")["clip"]["mae"]) == 0.0


def test_defect02_unreadable_clip_is_one_error_row(sides, tmp_path, monkeypatch):
    """Permission denied while hashing the inputs: one error row, the other pairs scored, exit 1; the same
    for `latents`. As root, file modes do not stop reads, so the denial comes from open() itself."""
    preds, refs = sides
    secret = preds / "secret.npy"
    np.save(secret, frames())
    np.save(refs / "secret.npy", frames())
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for side in (a, b):
        for name in ("good", "secret"):
            np.save(side / f"{name}.npy", np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32))
    denied = {str(secret), str(a / "secret.npy")}
    if os.geteuid() == 0:
        real_open, real_os_open = builtins.open, os.open

        def check(path):
            if os.fspath(path) in denied:
                raise PermissionError(13, "Permission denied", os.fspath(path))

        monkeypatch.setattr(builtins, "open", lambda file, *args, **kw: check(file) or real_open(file, *args, **kw))
        monkeypatch.setattr(os, "open", lambda file, *args, **kw: check(file) or real_os_open(file, *args, **kw))
    else:
        for path in denied:
            os.chmod(path, 0)
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    assert code == 1, output
    assert_consistent(tmp_path / "run", {"secret": "Permission denied"}, {"good0", "good1"})
    code, output = cli("latents", a, b, "-m", "cka", "--out", tmp_path / "latents")
    assert code == 1, output
    rows = per_video_rows(tmp_path / "latents")
    assert rows["good"]["status"] == "ok" and "Permission denied" in rows["secret"]["error"]


def test_defect03_fifo_is_an_error_row_not_a_hang(sides, tmp_path, alarm):
    preds, refs = sides
    os.mkfifo(preds / "pipe.npy")
    np.save(refs / "pipe.npy", frames())
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    assert code == 1, output
    assert_consistent(tmp_path / "run", {"pipe": "a named pipe (FIFO), not a regular file"}, {"good0", "good1"})


@pytest.mark.parametrize("where", ["under_a_file", "read_only_parent"])
def test_defect04_out_that_cannot_be_created_is_a_usage_error(sides, tmp_path, where):
    preds, refs = sides
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    elif os.geteuid() == 0:  # root writes into folders of mode 555, not into sysfs
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no sysfs: no folder here that root cannot write into")
        out = Path("/sys/foresight-eval-test/run")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        out = tmp_path / "ro" / "run"
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", out)
    assert code == 2
    assert "cannot create the run folder" in output and "Traceback" not in output
    assert "scored" not in output  # refused before any scoring
    assert len(output.strip().splitlines()) == 1


def test_defect05_carriage_return_in_a_clip_name_round_trips(sides, tmp_path):
    preds, refs = sides
    good_pair(preds, refs, "bad\rname")
    np.save(preds / "broken\rclip.npy", np.zeros((0, H, W, 3), np.uint8))
    np.save(refs / "broken\rclip.npy", frames())
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    assert code == 1, output
    assert_consistent(tmp_path / "run", {"broken\rclip": "zero frames"}, {"good0", "good1", "bad\rname"})
    code, output = cli("compare", tmp_path / "run", tmp_path / "run")
    assert code in (0, 1), output  # reads the table back without a parse error


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # the plots draw a CR as a missing glyph
def test_defect06_control_characters_in_a_run_label_keep_markdown_tables_whole(sides, tmp_path):
    preds, refs = sides
    cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    label = "bad\rlabel\x0bwith|pipe\u2028end"
    code, output = cli("leaderboard", f"{label}={tmp_path / 'run'}", "other=" + str(tmp_path / "run"),
                       "--out", tmp_path / "board")
    assert code == 0, output
    code, output = cli("report", f"{label}={tmp_path / 'run'}", "--out", tmp_path / "report", "--worst", "0")
    assert code == 0, output
    for markdown in (tmp_path / "board" / "leaderboard.md", tmp_path / "report" / "report.md"):
        text = markdown.read_text(encoding="utf-8")
        assert not any(char in text for char in "\r\x0b\u2028"), markdown
        assert "bad label with\\|pipe end" in text
    board = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    assert len(board) == 2 and label in set(board["run"])
    assert markdown_escape("a\x00b\x1fc\x7fd") == "a b c d"


COCO = {"images": [{"id": 1, "video": "good0", "frame": 0, "width": W, "height": H}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}],
        "categories": [{"id": 1, "name": "thing"}]}


@pytest.mark.parametrize("kind, change, where", [
    ("ref", lambda d: d.update(images=None), "images: expected a JSON list"),
    ("ref", lambda d: d["annotations"][0].update(image_id=[1]), "annotations[0]: image_id must be an integer"),
    ("ref", lambda d: d["annotations"][0].update(category_id={"id": 1}), "annotations[0]: unknown category_id"),
    ("det", lambda d: d[0].update(video=["good0"]), "[0]: video must be the clip's relative path"),
    ("det", lambda d: d[0].update(image_id=[1]), "[0]: image_id must be an integer"),
    ("det", lambda d: d[0].update(frame=[0]), "[0]: frame must be an integer"),
], ids=["images_null", "image_id_list", "category_dict", "det_video_list", "det_image_id_list", "det_frame_list"])
def test_defect07_coco_entries_of_the_wrong_type_are_usage_errors(sides, tmp_path, kind, change, where):
    preds, refs = sides
    reference = json.loads(json.dumps(COCO))
    frame = {"image_id": 1} if "image_id" in where else {"video": "good0", "frame": 0}
    detections = [{"category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9, **frame}]
    change(reference if kind == "ref" else detections)
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    (tmp_path / "det.json").write_text(json.dumps(detections))
    bad = tmp_path / ("ref.json" if kind == "ref" else "det.json")
    with pytest.raises(AnnotationError, match=f"{bad}: " + re.escape(where)):
        load_spatial_resources(tmp_path / "ref.json", tmp_path / "det.json")
    code, output = cli("score", preds, refs, "-m", "box_iou", "--ref-annotations", tmp_path / "ref.json",
                       "--pred-detections", tmp_path / "det.json")
    assert code == 2 and "Traceback" not in output and where.split(":")[0] in output


def test_defect08_gate_file_with_a_complex_key_is_a_usage_error(sides, tmp_path):
    preds, refs = sides
    gate = tmp_path / "gate.yaml"
    gate.write_text("name: g\nmetrics:\n  - metric: psnr\n    ? [a]\n    : 1\n")
    with pytest.raises(Exception, match=f"{gate}:4:7: invalid YAML: a key must be a plain value, got a list"):
        load_gates(gate)
    cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    code, output = cli("check", tmp_path / "run", "--gates", gate)
    assert code == 2 and "a key must be a plain value" in output


def test_defect09_yaml_aliases_in_gate_files_are_refused(sides, tmp_path):
    preds, refs = sides
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(6)]
    gate = tmp_path / "bomb.yaml"
    gate.write_text("\n".join(levels) + "\nname: bomb\nsource: *g\nmetrics:\n  - {metric: psnr, threshold: 1, "
                    "direction: higher, params: *g}\n")
    assert gate.stat().st_size < 600
    with pytest.raises(Exception, match=r"bomb.yaml:2:\d+: invalid YAML: alias \*a is not allowed in a gate file"):
        load_gates(gate)
    cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    for extra in ([], ["--json"]):
        code, output = cli("check", tmp_path / "run", "--gates", gate, *extra)
        assert code == 2 and "alias *a is not allowed" in output and len(output) < 1000


def test_defect10_a_new_run_replaces_the_journal_and_resume_refuses_another_runs(sides, tmp_path):
    """psnr, then ssim into the same folder, then psnr --resume: refused (exit 2, the difference named),
    never psnr reported as NaN with n = 0 from the ssim run's records."""
    preds, refs = sides
    out = tmp_path / "run"
    assert cli("score", preds, refs, "-m", "psnr", "--out", out)[0] == 0
    assert cli("score", preds, refs, "-m", "ssim", "--out", out)[0] == 0
    journal = (out / "partial" / "rank-00000.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 2 and list(json.loads(journal[0])["header"]["metrics"]) == ["ssim"]
    assert_consistent(out, {}, {"good0", "good1"}, metrics=("ssim",))
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", out, "--resume")
    assert code == 2 and "scored differently" in output and "metrics.psnr" in output
    code, output = cli("score", preds, refs, "-m", "ssim", "--out", out, "--resume", "--json")
    assert code == 0 and first_json(output)["metrics"]["ssim"]["n"] == 2


def test_defect10_records_under_another_runs_header_are_not_reused(sides, tmp_path):
    """A journal two runs appended to (as older versions wrote): only records under a matching header count."""
    preds, refs = sides
    out = tmp_path / "run"
    cli("score", preds, refs, "-m", "psnr", "--out", out)
    journal = out / "partial" / "rank-00000.jsonl"
    lines = journal.read_text().splitlines()
    foreign = json.loads(lines[1])
    foreign["pair"]["values"] = {"ssim": 0.5}
    journal.write_text("\n".join([lines[0], json.dumps({"header": {"metrics": {"ssim": {}}}}), json.dumps(foreign)])
                       + "\n")
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", out, "--resume", "--json")
    assert code == 0, output
    summary = first_json(output)
    assert summary["metrics"]["psnr"]["n"] == 2 and summary["metrics"]["psnr"]["mean"] is not None


@pytest.mark.slow
def test_defect10_two_writers_of_one_run_folder(sides, tmp_path, caplog):
    """A run folder locked by a live process is refused (exit 2, naming its pid); a lock left by a
    killed process is reported and taken over."""
    preds, refs = sides
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from foresight_eval.journal import RunLock; "
         f"RunLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, output = cli("score", preds, refs, "-m", "psnr", "--out", out)
        assert code == 2 and f"being written by another run (pid {holder.pid}" in output
        assert not (out / "summary.json").exists()
    finally:
        holder.kill()  # as kill -9: the lock file stays, its flock goes with the process
        holder.wait()
    assert f"pid {holder.pid}" in (out / LOCK_FILE).read_text()
    with caplog.at_level(logging.WARNING, logger="foresight_eval.journal"):
        code, output = cli("score", preds, refs, "-m", "psnr", "--out", out)
    assert code == 0, output
    assert f"stale lock {out / LOCK_FILE} (pid {holder.pid}" in caplog.text
    assert_consistent(out, {}, {"good0", "good1"})


def test_defect10_lock_in_process(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    with pytest.raises(Exception, match="being written by another run"):
        RunLock(tmp_path).acquire()
    lock.release()
    RunLock(tmp_path).acquire()


# --- the smaller ones -----------------------------------------------------------------------------

# Each clip pair takes 1 s longer to score, so that the run is interrupted between pairs, well before its end.
SLOW_CLI = ("import time, foresight_eval.engine as engine; score = engine.PairInFlight.score; "
            "engine.PairInFlight.score = lambda self, *a, **k: (time.sleep(1.0), score(self, *a, **k))[1]; "
            "from foresight_eval.cli import main; main()")


def _default_sigint() -> None:
    """In the child before it starts Python: Ctrl-C's default disposition, unblocked. A child inherits an
    ignored or blocked SIGINT from whatever the test process's state is, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[list[str], Path]:
    """Six good pairs and a broken one, and the run folder of an uninterrupted run."""
    root = tmp_path_factory.mktemp("uninterrupted")
    preds, refs = root / "preds", root / "refs"
    preds.mkdir()
    refs.mkdir()
    for index in range(6):
        good_pair(preds, refs, f"clip{index}", seed=index)
    np.save(preds / "broken.npy", np.zeros((0, H, W, 3), np.uint8))
    np.save(refs / "broken.npy", frames())
    args = [str(preds), str(refs), "-m", "psnr,mae", "--device", "cpu"]
    assert cli("score", *args, "--out", root / "whole")[0] == 1
    return args, root / "whole"


def comparable(run_dir: Path) -> tuple[dict, str, str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    # reference_cache: the cache folder ($FORESIGHT_CACHE differs per test) and this process's hits and misses;
    # timings: seconds
    for field in ("started", "finished", "command", "timings", "reference_cache"):
        summary["manifest"].pop(field)
    return summary, (run_dir / "per_video.csv").read_text(), (run_dir / "per_frame.csv").read_text()


def wait_for_pairs(journal: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 1 + count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not journal {count} pairs: {process.poll()}")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_interrupted_then_resumed_equals_an_uninterrupted_run(tmp_path, uninterrupted, how):
    """kill -9 (the journal may end mid-line, the lock file stays) or Ctrl-C (exit 130, the message says
    how to resume), then --resume: the run folder equals an uninterrupted run's."""
    args, whole = uninterrupted
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "score", *args, "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                               preexec_fn=_default_sigint)
    wait_for_pairs(out / "partial" / "rank-00000.jsonl", 2, process)
    process.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert not (out / "summary.json").exists()
    if how == "sigint":
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr and "--resume" in stderr
        assert not (out / LOCK_FILE).exists()
    else:
        assert process.returncode == -signal.SIGKILL
        assert (out / LOCK_FILE).exists()
    code, output = cli("score", *args, "--out", out, "--resume")
    assert code == 1, output
    assert comparable(out) == comparable(whole)


def test_out_into_a_folder_that_is_not_a_run_folder_is_refused(sides, tmp_path):
    preds, refs = sides
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "summary.json").write_text('{"mine": true}')
    (folder / "notes.txt").write_text("keep")
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", folder)
    assert code == 2 and "not a run folder" in output
    assert (folder / "summary.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "summary.json"]


def test_symlinks_are_followed_and_loops_skipped_and_listed(sides, tmp_path, caplog):
    preds, refs = sides
    outside = tmp_path / "outside"
    outside.mkdir()
    np.save(outside / "linked_file.npy", frames(5))
    write_frames_folder(outside / "linked_folder", frames(6))
    (preds / "linked_file.npy").symlink_to(outside / "linked_file.npy")
    (preds / "linked_folder").symlink_to(outside / "linked_folder", target_is_directory=True)
    np.save(refs / "linked_file.npy", frames(5))
    write_frames_folder(refs / "linked_folder", frames(6))
    (preds / "again").symlink_to(preds, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="foresight_eval.io.clips"):
        keys = [clip.key for clip in discover_clips(preds)]
    assert keys == ["good0", "good1", "linked_file", "linked_folder"]
    assert f"skipped {preds / 'again'}: symbolic link to {preds.resolve()}, a folder already walked" in caplog.text
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    assert code == 0, output
    assert_consistent(tmp_path / "run", {}, {"good0", "good1", "linked_file", "linked_folder"})


def test_terminal_colour_codes_are_stripped_from_error_rows(sides, tmp_path, monkeypatch):
    import foresight_eval.engine as engine

    preds, refs = sides
    good_pair(preds, refs, "colour")
    open_clip = engine.open_clip

    def failing(path, **kwargs):
        if Path(path).stem == "colour":
            raise RuntimeError("\x1b[1m\x1b[31mCUDA error\x1b[0m: out of \x1b]8;;http://x\x07memory\x1b]8;;\x07")
        return open_clip(path, **kwargs)

    monkeypatch.setattr(engine, "open_clip", failing)
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    assert code == 1
    assert_consistent(tmp_path / "run", {"colour": "RuntimeError: CUDA error: out of memory"}, {"good0", "good1"})
    result = PairResult(video="v", pred="p", ref="r")
    fail_pair(result, "\x1b[31mred\x1b[0m")
    assert result.error == "red"


def test_text_file_named_like_a_frame_is_an_unreadable_image(sides, tmp_path):
    preds, refs = sides
    write_frames_folder(preds / "clip", frames(n=8))
    (preds / "clip" / "frame9.png").write_text("not an image\n")
    write_frames_folder(refs / "clip", frames(n=8))
    code, output = cli("score", preds, refs, "-m", "psnr", "--out", tmp_path / "run")
    assert code == 1
    assert_consistent(tmp_path / "run", {"clip": "frame9.png: unreadable image"}, {"good0", "good1"})
    assert "frames" not in per_video_rows(tmp_path / "run")["clip"]["error"].split("unreadable image")[0][-20:]


def test_csv_rows_with_a_carriage_return_are_quoted():
    from foresight_eval.results import _csv

    text = _csv(["video", "x"], [["a\rb", "1.5"], ["plain", "2"]])
    assert text == 'video,x\n"a\rb","1.5"\nplain,2\n'
    assert list(csv.reader(io.StringIO(text, newline=""))) == [["video", "x"], ["a\rb", "1.5"], ["plain", "2"]]
