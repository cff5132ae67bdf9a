"""The scoring engine: horizons, mismatches, error rows, the run folder."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from foresight_eval import ScoreOptions, score
from foresight_eval.errors import UsageError
from foresight_eval.io.files import write_atomic
from foresight_eval.metrics.base import RunContext
from foresight_eval.metrics.registry import prepare_metrics
from tests.clipmaker import gradient_clip
from tests.test_readers import bad_inputs


def write_pair(tmp_path, name, pred, ref):
    for side, frames in (("preds", pred), ("refs", ref)):
        (tmp_path / side).mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / side / f"{name}.npy", frames)


def test_context_frames_are_skipped_and_horizons_count_from_one(tmp_path):
    ref = gradient_clip(n_frames=6)
    pred = ref.copy()
    pred[3] = 0  # horizon 2 with context 2
    write_pair(tmp_path, "clip", pred, ref)
    run = score(tmp_path / "preds", tmp_path / "refs", ["mae"], options=ScoreOptions(context=2, batch_size=3))
    rows = run.pairs[0].per_frame["mae"]
    assert [(h, f) for h, f, _ in rows] == [(1, 2), (2, 3), (3, 4), (4, 5)]
    assert [v > 0 for _, _, v in rows] == [False, True, False, False]
    assert run.pairs[0].frames == 4
    assert [h["horizon"] for h in run.metrics["mae"].per_horizon] == [1, 2, 3, 4]


def test_frame_count_mismatch_is_an_error_row_unless_min(tmp_path):
    ref = gradient_clip(n_frames=6)
    write_pair(tmp_path, "clip", ref[:5], ref)
    with pytest.raises(UsageError):
        score(tmp_path / "preds", tmp_path / "refs", ["mse"], options=ScoreOptions(frame_mismatch="bogus"))
    run = score(tmp_path / "preds", tmp_path / "refs", ["mse"])
    assert run.pairs[0].status == "error"
    assert "prediction has 5 frames, reference has 6" in run.pairs[0].error
    run = score(tmp_path / "preds", tmp_path / "refs", ["mse"], options=ScoreOptions(frame_mismatch="min"))
    assert run.pairs[0].ok and run.pairs[0].frames == 5


def test_frame_count_mismatch_found_while_streaming(tmp_path):
    from tests.clipmaker import write_container

    ref = gradient_clip(n_frames=6)
    (tmp_path / "refs").mkdir()
    np.save(tmp_path / "refs" / "clip.npy", ref)
    write_container(tmp_path / "preds" / "clip.mkv", ref[:4], "ffv1", "bgr0")
    run = score(tmp_path / "preds", tmp_path / "refs", ["mse"])
    assert "prediction has 4 frames, reference has 6" in run.pairs[0].error


def test_size_mismatch_is_an_error_row_unless_resized(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    ref = np.repeat(np.stack([xx * 4, yy * 6, xx + yy], axis=-1)[None], 3, axis=0).astype(np.uint8)
    half = ref.reshape(3, 16, 2, 24, 2, 3).mean(axis=(2, 4)).astype(np.uint8)
    write_pair(tmp_path, "clip", half, ref)
    run = score(tmp_path / "preds", tmp_path / "refs", ["psnr"])
    assert "prediction frames are 24x16, reference frames are 48x32" in run.pairs[0].error
    run = score(tmp_path / "preds", tmp_path / "refs", ["psnr"], options=ScoreOptions(resize="ref"))
    assert run.pairs[0].ok and run.metrics["psnr"].mean > 30


def test_bad_clips_become_error_rows_and_the_rest_is_scored(tmp_path):
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    preds.mkdir()
    reasons = bad_inputs(preds)
    good = gradient_clip(n_frames=4, height=16, width=16)
    refs.mkdir()
    for name in reasons:
        np.save(refs / f"{name.split('.')[0]}.npy", good)
    np.save(preds / "fine.npy", good)
    np.save(refs / "fine.npy", good)
    run = score(preds, refs, ["mse", "ssim"], options=ScoreOptions())
    by_video = {pair.video: pair for pair in run.pairs}
    assert by_video["fine"].ok and by_video["fine"].values["mse"] == 0
    failed = {pair.video for pair in run.failed}
    assert failed == {name.split(".")[0] for name in reasons}
    assert all(pair.error and "\n" not in pair.error for pair in run.failed)
    assert run.metrics["mse"].n == 1


def test_context_longer_than_clip_is_an_error_row(tmp_path):
    write_pair(tmp_path, "clip", gradient_clip(n_frames=3), gradient_clip(n_frames=3))
    run = score(tmp_path / "preds", tmp_path / "refs", ["mse"], options=ScoreOptions(context=3))
    assert "none left after --context 3" in run.pairs[0].error


def test_unknown_metric_and_parameter_are_usage_errors(tmp_path):
    write_pair(tmp_path, "clip", gradient_clip(), gradient_clip())
    with pytest.raises(UsageError, match="unknown metric 'nope'"):
        score(tmp_path / "preds", tmp_path / "refs", ["nope"])
    with pytest.raises(UsageError, match="no parameter 'windw'"):
        score(tmp_path / "preds", tmp_path / "refs", ["ssim"], params={"ssim": {"windw": 3}})
    with pytest.raises(UsageError, match="must be one of"):
        score(tmp_path / "preds", tmp_path / "refs", ["ssim"], params={"ssim": {"mode": "fast"}})


def test_run_folder_contents(tmp_path):
    ref = gradient_clip(n_frames=5)
    write_pair(tmp_path, "a", ref, ref)
    write_pair(tmp_path, "b", np.clip(ref.astype(int) + 9, 0, 255).astype(np.uint8), ref)
    run = score(tmp_path / "preds", tmp_path / "refs", ["psnr", "ssim"], params={"ssim": {"mode": "skimage"}},
                options=ScoreOptions(context=1), extra={"latency_overhead": 0.319})
    out = run.write(tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "foresight-eval/run/v1"
    assert summary["metrics"]["ssim"]["params"]["mode"] == "skimage"
    assert summary["metrics"]["ssim"]["params"]["window_size"] == 7
    # clip a is identical: PSNR is infinite, kept honest, stored as the JSON number 1e999 (read back as inf)
    assert summary["metrics"]["psnr"]["mean"] == float("inf") and '"mean": 1e999' in (out / "summary.json").read_text()
    assert summary["extra"] == {"latency_overhead": 0.319}
    assert summary["options"]["context"] == 1
    expected = hashlib.sha256((tmp_path / "preds" / "b.npy").read_bytes()).hexdigest()
    assert summary["manifest"]["inputs"]["predictions"]["sha256"]["b.npy"] == expected
    assert summary["manifest"]["packages"]["torch"]
    with open(out / "per_video.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["video"] for r in rows] == ["a", "b"] and rows[1]["status"] == "ok"
    assert float(rows[1]["ssim"]) < 1
    with open(out / "per_frame.csv") as handle:
        frames = list(csv.DictReader(handle))
    assert len(frames) == 2 * 2 * 4 and {f["metric"] for f in frames} == {"psnr", "ssim"}
    assert not list(out.glob(".*.tmp"))


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "summary.json"
    write_atomic(target, "old")
    with pytest.raises(TypeError):
        write_atomic(target, 123)  # not writable data: the write fails midway
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_peak_memory_does_not_grow_with_clip_length(tmp_path):
    """Frames stream through in batches: a clip 16x longer must not need more memory (beyond the
    per-frame result rows and the 1 MiB read buffer of input hashing)."""
    import tracemalloc

    peaks = {}
    for n_frames in (32, 512):
        frames = np.zeros((n_frames, 64, 64, 3), dtype=np.uint8)
        write_pair(tmp_path / str(n_frames), "clip", frames, frames)
        tracemalloc.start()
        score(tmp_path / str(n_frames) / "preds", tmp_path / str(n_frames) / "refs", ["mae"],
              options=ScoreOptions(batch_size=4))
        peaks[n_frames] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    clip_bytes = 512 * 64 * 64 * 3
    assert peaks[512] < peaks[32] + clip_bytes / 4


def test_the_next_pair_decodes_while_the_previous_one_is_scored(tmp_path, monkeypatch):
    """The engine opens pair k+1 (its decoding threads start) before it scores pair k: the next clip's first
    frame is read while the current clip's metric is still working. A pair that fails to open still gets its
    own error row, and the results keep the plan's order."""
    import time

    from foresight_eval.io import clips as clip_readers
    from foresight_eval.metrics import pixel

    for name in ("a", "b", "c"):
        write_pair(tmp_path, name, gradient_clip(n_frames=4), gradient_clip(n_frames=4))
    first_read, scored = {}, []
    original_frames, original_per_frame = clip_readers.ArrayReader.frames, pixel.MAE.per_frame

    def frames(self):
        for frame in original_frames(self):
            first_read.setdefault(self.path.stem, time.monotonic())
            yield frame

    def slow_per_frame(self, batch):
        time.sleep(0.5)
        scored.append(time.monotonic())
        return original_per_frame(self, batch)

    monkeypatch.setattr(clip_readers.ArrayReader, "frames", frames)
    monkeypatch.setattr(pixel.MAE, "per_frame", slow_per_frame)
    # On the CPU (on a GPU the next pair opens once the current one's first batch is queued: the test below)
    run = score(tmp_path / "preds", tmp_path / "refs", ["mae"], options=ScoreOptions(batch_size=4), device="cpu")
    assert all(pair.ok for pair in run.pairs) and len(scored) == 3
    assert first_read["b"] < scored[0] and first_read["c"] < scored[1]  # read while the clip before was scored

    (tmp_path / "preds" / "b.npy").write_bytes(b"not an array")
    monkeypatch.setattr(pixel.MAE, "per_frame", original_per_frame)
    run = score(tmp_path / "preds", tmp_path / "refs", ["mae"], options=ScoreOptions(batch_size=4))
    assert [(pair.video, pair.ok) for pair in run.pairs] == [("a", True), ("b", False), ("c", True)]
    assert "b.npy" in run.pairs[1].error


def test_a_pair_calls_back_once_its_first_batch_is_queued(tmp_path, monkeypatch):
    """On a GPU the metrics only queue work, so the engine opens the next pair (its timestamps read on the
    scoring thread) once the current pair's first batch is queued, not before it: the device starts at once.
    The hook that does it, on the CPU."""
    import dataclasses

    import torch

    from foresight_eval import engine
    from foresight_eval.io.pairing import pair_clips
    from foresight_eval.metrics import pixel

    for name in ("a", "b", "c"):
        write_pair(tmp_path, name, gradient_clip(n_frames=6), gradient_clip(n_frames=6))
    events = []
    original_init, original_per_frame = engine.PairInFlight.__init__, pixel.MAE.per_frame

    def opening(self, pair, *args, **kwargs):
        events.append(f"open {pair.key}")
        original_init(self, pair, *args, **kwargs)

    def per_frame(self, batch):
        events.append(f"batch {batch.video}")
        return original_per_frame(self, batch)

    monkeypatch.setattr(engine.PairInFlight, "__init__", opening)
    monkeypatch.setattr(pixel.MAE, "per_frame", per_frame)
    pairs = pair_clips(tmp_path / "preds", tmp_path / "refs").pairs
    metric = prepare_metrics(["mae"], {}, RunContext(device=torch.device("cpu")))[0][0]
    called = []
    opened = engine.PairInFlight(pairs[0], ScoreOptions(batch_size=4), torch.device("cpu"))
    opened.score([metric], torch.device("cpu"), after_first_batch=lambda: called.append(list(events)))
    assert opened.finish().ok and called == [["open a", "batch a"]]  # once, after the first of two batches
    assert events == ["open a", "batch a", "batch a"]
    failed = engine.PairInFlight(dataclasses.replace(pairs[1], problem="broken"), ScoreOptions(), torch.device("cpu"))
    called.clear()
    failed.score([metric], torch.device("cpu"), after_first_batch=lambda: called.append(1))
    assert not failed.finish().ok
    assert called == [1]  # a pair without a batch still lets the next one open (the engine on a GPU: tests/test_gpu.py)



def take_values_as_a_gpus(monkeypatch, events: list[str]) -> None:
    """Run on the CPU, treat every value a metric leaves on its device as a GPU's: copied to the host behind the
    work ("copy" in ``events``) and waited for when read (the copies' event: "wait")."""
    from foresight_eval.metrics import base

    class Copied:  # the event recorded behind a GPU's copies to the host
        def synchronize(self):
            events.append("wait")

    def to_host_async(*tensors):
        events.append("copy")
        return [tensor.numpy() for tensor in tensors], Copied()

    monkeypatch.setattr(base, "waits_for_device", lambda tensor: True)
    monkeypatch.setattr(base, "to_host_async", to_host_async)


def test_values_on_their_way_from_a_device_are_the_values(fixtures_dir, monkeypatch):
    """Every kind of clip value a metric leaves on a device (a running mean, the motion IoUs' last frame, frozen's
    flags) and the per-frame values, taken as a GPU's (copied to the host behind the work, read when the pair is
    finished): the values and rows of a run that reads them at once."""
    names = ["mae", "tc", "frozen", "motion_iou", "motion_iou_st", "flicker_delta"]

    def run():
        result = score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", names, device="cpu",
                       options=ScoreOptions(context=4, batch_size=5), resources={"cache_dir": None})
        assert all(pair.ok for pair in result.pairs)
        return [(pair.values, dict(pair.per_frame)) for pair in result.pairs]

    at_once = run()
    events: list[str] = []
    take_values_as_a_gpus(monkeypatch, events)
    assert run() == at_once
    # per clip: the per-frame values' copy and each clip value's
    assert events.count("wait") == len(at_once) * (1 + len(names))


@pytest.mark.parametrize("schedule", ["cpu", "device"])
def test_pairs_open_ahead_and_finish_after_the_next_is_scored(tmp_path, monkeypatch, schedule):
    """The engine's order of work. The CPU opens the next pair before scoring the oldest; a device keeps
    ``PAIRS_AHEAD_ON_DEVICE`` pairs decoding ahead, each opened once the oldest's first batch is queued, and the
    first pair decoding alone until its first batch is queued (run
    here on the CPU with the device's schedule, its values taken as a GPU's: copied to the host behind the
    work, waited for when read). Either way a pair is finished (its pool work collected, its values read)
    after the next one is scored: on a device the host waits for no value of a pair before the next pair's
    work is queued. The values are those of scoring pair by pair."""
    import torch

    from foresight_eval import engine
    from foresight_eval.io.pairing import pair_clips
    from foresight_eval.metrics import pixel

    for name in "abcd":
        write_pair(tmp_path, name, gradient_clip(n_frames=6, seed=1), gradient_clip(n_frames=6))
    events = []
    original_init, original_finish, original_per_frame = (
        engine.PairInFlight.__init__, engine.PairInFlight.finish, pixel.MAE.per_frame)

    def opening(self, pair, *args, **kwargs):
        events.append(f"open {pair.key}")
        original_init(self, pair, *args, **kwargs)

    def finishing(self):
        events.append(f"finish {self.pair.key}")
        return original_finish(self)

    def per_frame(self, batch):
        events.append(f"batch {batch.video}")
        return original_per_frame(self, batch)

    monkeypatch.setattr(engine.PairInFlight, "__init__", opening)
    monkeypatch.setattr(engine.PairInFlight, "finish", finishing)
    monkeypatch.setattr(pixel.MAE, "per_frame", per_frame)
    if schedule == "device":
        monkeypatch.setattr(engine, "PAIRS_AHEAD_ON_DEVICE", 2)
        on_a_device = engine._decoding_ahead(torch.device("cuda"))
        monkeypatch.setattr(engine, "_decoding_ahead", lambda device: on_a_device)
        take_values_as_a_gpus(monkeypatch, events)
    run = score(tmp_path / "preds", tmp_path / "refs", ["mae"], device="cpu", options=ScoreOptions(batch_size=4),
                resources={"cache_dir": None})
    queued = ["copy", "copy"]  # the per-frame values' copy and the clip value's, once the pair's batches are queued
    read = ["wait", "wait"]
    expected = {
        "cpu": ["open a", "open b", "batch a", "batch a", "open c", "batch b", "batch b", "finish a", "open d",
                "batch c", "batch c", "finish b", "batch d", "batch d", "finish c", "finish d"],
        "device": ["open a", "batch a", "open b", "batch a", *queued, "open c", "batch b", "open d", "batch b", *queued,
                   "finish a", *read, "batch c", "batch c", *queued, "finish b", *read, "batch d", "batch d", *queued,
                   "finish c", *read, "finish d", *read],
    }
    assert events == expected[schedule]
    assert [pair.video for pair in run.pairs] == list("abcd") and all(pair.ok for pair in run.pairs)
    monkeypatch.undo()
    one_by_one = [engine.score_pair(pair, [pixel.MAE()], ScoreOptions(batch_size=4), torch.device("cpu"))
                  for pair in pair_clips(tmp_path / "preds", tmp_path / "refs").pairs]
    assert [(pair.values, pair.per_frame) for pair in run.pairs] == [(p.values, p.per_frame) for p in one_by_one]
    assert all(pair.values["mae"] > 0 for pair in run.pairs)


def test_each_metrics_values_of_a_batch_are_copied_in_float64_together():
    """The per-frame values of every metric of a batch are copied in one concatenation (per device): each metric
    gets its own values back, in float64, unchanged when the metric reuses its buffer for the next batch."""
    import torch

    from foresight_eval.engine import _copied_in_float64

    buffers = {"psnr": torch.tensor([30.5, 31.25, 29.0], dtype=torch.float32),
               "ssim": torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), "tc": torch.tensor([[0.5], [0.75]])}
    copied = dict(_copied_in_float64(list(buffers.items())))
    for buffer in buffers.values():
        buffer.fill_(-1.0)  # the metrics' next batch
    assert {name: values.dtype for name, values in copied.items()} == dict.fromkeys(buffers, torch.float64)
    assert copied["psnr"].tolist() == [30.5, 31.25, 29.0]
    assert copied["ssim"].tolist() == [0.1, 0.2, 0.3]  # float64 values: not through float32
    assert copied["tc"].tolist() == [[0.5], [0.75]]
    assert _copied_in_float64([]) == []
