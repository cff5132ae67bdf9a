"""The reference-side cache is on by default (the user cache folder, $FORESIGHT_CACHE in tests: conftest's
``isolated_cache``), off with ``--no-cache``, recorded in the run manifest, and a folder that cannot be written
is one warning and no cache, never a failed clip."""

from __future__ import annotations

import json
import threading
import warnings

import pytest
import torch
from click.testing import CliRunner

from foresight_eval import score
from foresight_eval.cli import main
from foresight_eval.config import RunConfig
from foresight_eval.feature_cache import CacheWarning


def _entries(folder):
    return sorted(folder.rglob("*.safetensors")) if folder.exists() else []


def _score(fixtures_dir, **kwargs):
    run = score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", ["edge_f1"], device="cpu", **kwargs)
    assert all(pair.ok for pair in run.pairs)
    return run


def test_a_run_caches_in_the_user_cache_folder_by_default(fixtures_dir, isolated_cache):
    first = _score(fixtures_dir)
    written = _entries(isolated_cache)
    # the reference edges of 6 clips x 2 batches (16 + 4 frames)
    assert len(written) == 12
    assert first.manifest["reference_cache"] == {"dir": str(isolated_cache), "hits": 0, "misses": 12, "note": None,
                                                  "frame_metrics": True}
    second = _score(fixtures_dir)  # a second model against the same references reads them
    assert second.manifest["reference_cache"] == {"dir": str(isolated_cache), "hits": 12, "misses": 0, "note": None,
                                                   "frame_metrics": True}
    assert [p.per_frame for p in second.pairs] == [p.per_frame for p in first.pairs]
    assert _entries(isolated_cache) == written


def test_no_cache_neither_reads_nor_writes(fixtures_dir, isolated_cache):
    run = _score(fixtures_dir, resources={"cache_dir": None})
    assert _entries(isolated_cache) == []
    assert run.manifest["reference_cache"] == {"dir": None, "hits": 0, "misses": 0, "note": "off (--no-cache)",
                                               "frame_metrics": False}


@pytest.mark.parametrize(("mode", "device", "cached"), [
    ("auto", "cpu", True), ("auto", "cuda", False), ("on", "cuda", True), ("off", "cpu", False)])
def test_the_frame_metrics_reference_side_is_cached_on_the_cpu_by_default(tmp_path, mode, device, cached):
    """On a GPU reading these entries back is slower than recomputing them (benchmarks/RESULTS.md)."""
    from foresight_eval.feature_cache import CACHE_USE_RESOURCE, ReferenceCache, frame_cache_on, open_run_cache

    use = open_run_cache({"cache_dir": tmp_path, "frame_cache": mode}, torch.device(device))
    resources = {"cache_dir": tmp_path, CACHE_USE_RESOURCE: use}
    assert use.root == tmp_path and use.frame_metrics is cached and frame_cache_on(resources) is cached
    assert (ReferenceCache.from_resources(resources, "edges", {}) is not None) is cached


def test_frame_cache_off_writes_no_frame_entries_and_hashes_no_frames(fixtures_dir, isolated_cache, monkeypatch):
    import foresight_eval.engine as engine

    hashed = []
    monkeypatch.setattr(engine, "tensor_sha256", lambda *tensors: hashed.append(tensors))
    run = _score(fixtures_dir, resources={"frame_cache": "off"})
    assert _entries(isolated_cache) == [] and hashed == []
    assert run.manifest["reference_cache"] == {"dir": str(isolated_cache), "hits": 0, "misses": 0, "note": None,
                                               "frame_metrics": False}


def test_a_bad_frame_cache_mode_is_a_usage_error(fixtures_dir, tmp_path):
    from foresight_eval.errors import UsageError

    with pytest.raises(UsageError, match="frame_cache='sometimes' must be one of auto, on, off"):
        _score(fixtures_dir, resources={"frame_cache": "sometimes"})
    result = CliRunner().invoke(main, ["score", str(fixtures_dir / "preds" / "shift_mild"), str(fixtures_dir / "refs"),
                                       "-m", "edge_f1", "--frame-cache", "sometimes"])
    assert result.exit_code == 2 and "--frame-cache" in result.output
    config = tmp_path / "config.yaml"
    config.write_text(f"preds: {fixtures_dir / 'preds' / 'shift_mild'}\nrefs: {fixtures_dir / 'refs'}\n"
                      "metrics: [edge_f1]\nframe_cache: sometimes\n")
    result = CliRunner().invoke(main, ["score", "--config", str(config)])
    assert result.exit_code == 2 and "--frame-cache sometimes must be one of auto, on, off" in result.output


def test_an_unusable_cache_folder_is_one_warning_not_a_failure(fixtures_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(CacheWarning, match="cannot be written") as caught:
        run = _score(fixtures_dir, resources={"cache_dir": blocker / "cache"})
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    record = run.manifest["reference_cache"]
    assert record["dir"] is None and record["note"].startswith("not written:")


def test_a_write_failing_mid_run_stops_writing_with_one_warning(fixtures_dir, isolated_cache, monkeypatch):
    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("foresight_eval.feature_cache.write_atomic", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _score(fixtures_dir)
    assert [str(w.message) for w in caught if issubclass(w.category, CacheWarning)] == [
        f"cache folder {isolated_cache} cannot be written ([Errno 28] No space left on device): "
        "going on without caching"]
    assert run.manifest["reference_cache"]["note"] == "not written: [Errno 28] No space left on device"
    assert _entries(isolated_cache) == []


def test_cli_no_cache_and_workers(fixtures_dir, isolated_cache, tmp_path):
    assert "cache_dir" not in RunConfig(preds=fixtures_dir, refs=fixtures_dir).score_kwargs()["resources"]
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["score", str(fixtures_dir / "preds" / "shift_mild"), str(fixtures_dir / "refs"),
                                       "-m", "edge_f1", "--no-cache", "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "summary.json").read_text())["manifest"]
    assert manifest["reference_cache"]["dir"] is None and manifest["metric_workers"]["workers"] == 0
    assert _entries(isolated_cache) == []
    assert "no_cache: true" in (out / "config.yaml").read_text()


def test_the_cache_key_hashes_the_decoded_frames_not_the_device_copies(fixtures_dir, monkeypatch):
    """The reference digest is taken from the frames as decoded (uint8, on the host): hashing the scoring
    device's float copies would copy them back and wait for the device at every batch. Still once per batch
    for every cached metric together (tc, its delta and the edges), and in the decoding thread, not in the
    one that drives the device."""
    import threading

    import foresight_eval.engine as engine
    import foresight_eval.feature_cache as feature_cache

    hashed, threads = [], set()
    original = feature_cache.tensor_sha256

    def recording(*tensors):
        frames = [t.dtype for t in tensors if hasattr(t, "dtype")]
        hashed.extend(frames)
        if frames:
            threads.add(threading.current_thread() is threading.main_thread())
        return original(*tensors)

    monkeypatch.setattr(feature_cache, "tensor_sha256", recording)
    monkeypatch.setattr(engine, "tensor_sha256", recording)
    run = score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", ["edge_f1", "tc", "tc_delta"],
                device="cpu")
    assert all(pair.ok for pair in run.pairs) and run.manifest["reference_cache"]["misses"] > 0
    assert hashed and set(hashed) == {torch.uint8}
    assert len(hashed) == 12  # 6 clips x 2 batches: one digest per batch, whichever metric asked first
    assert threads == {False}


def test_without_a_cache_no_reference_frames_are_hashed(fixtures_dir, monkeypatch):
    """--no-cache: the metrics that read the reference cache (motion masks, tc, edges) hash no frames either:
    a digest of 16 frames of 640x360 is 8 ms on the thread that drives the GPU."""
    import foresight_eval.engine as engine
    import foresight_eval.feature_cache as feature_cache

    hashed = []
    original = feature_cache.tensor_sha256

    def recording(*tensors):
        hashed.extend(t.dtype for t in tensors if hasattr(t, "dtype"))
        return original(*tensors)

    monkeypatch.setattr(feature_cache, "tensor_sha256", recording)
    monkeypatch.setattr(engine, "tensor_sha256", recording)
    names = ["motion_iou", "motion_iou_st", "tc", "tc_delta", "edge_f1"]
    run = score(fixtures_dir / "preds" / "shift_mild", fixtures_dir / "refs", names, device="cpu",
                resources={"cache_dir": None})
    assert all(pair.ok for pair in run.pairs) and hashed == []


def test_boolean_maps_are_stored_as_packed_bits_and_read_back_as_put(tmp_path):
    from foresight_eval.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path, {"computation": "masks"})
    generator = torch.Generator().manual_seed(0)
    put = {"masks": torch.rand(3, 37, 53, generator=generator) > 0.5,  # 5,883 bits: not a whole number of bytes
           "empty": torch.zeros(0, 4, dtype=torch.bool),
           "background": torch.rand(37, 53, generator=generator, dtype=torch.float64)}
    cache.put_tensors("a" * 64, put)
    read = cache.get_tensors("a" * 64)
    assert read.keys() == put.keys()
    for name, tensor in put.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor), name
    (entry,) = _entries(tmp_path)
    assert entry.stat().st_size < 37 * 53 * 8 + 3 * 37 * 53 // 8 + 1024  # the masks as bits, not bytes


def test_a_packed_entry_with_too_few_bits_is_recomputed(tmp_path):
    from safetensors.torch import save_file

    from foresight_eval.feature_cache import PACKED_BOOL, FeatureCache

    cache = FeatureCache(tmp_path, {"computation": "masks"})
    cache.put_tensors("b" * 64, {"masks": torch.ones(4, 8, 8, dtype=torch.bool)})
    (entry,) = _entries(tmp_path)
    save_file({"masks": torch.zeros(3, dtype=torch.uint8)}, str(entry),  # 24 bits for a (4, 8, 8) map
              metadata={"clip_sha256": "b" * 64, "fingerprint": cache.digest, PACKED_BOOL + "masks": "[4, 8, 8]"})
    assert cache.get_tensors("b" * 64) is None and cache.misses == 1


class _HeldDeviceCopy:
    """Stands in for the CUDA event after a device's copies to the host: ``synchronize`` waits until released."""

    def __init__(self):
        self.released = threading.Event()

    def synchronize(self):
        assert self.released.wait(10), "never released"


def _held_copies(monkeypatch):
    """Entries put from here on are 'on the device' until the returned event is released."""
    held = _HeldDeviceCopy()
    monkeypatch.setattr("foresight_eval.feature_cache.to_host_async",
                        lambda *tensors: ([tensor.numpy() for tensor in tensors], held))
    return held


def test_within_a_run_an_entry_is_written_after_the_device_without_waiting_for_it(tmp_path, monkeypatch):
    """On a GPU a ``.cpu()`` in put made the scoring thread wait for the device's whole queue at every entry:
    within a run the writer thread waits for the copies, and the run's end waits for the writes."""
    from foresight_eval.feature_cache import CacheUse, FeatureCache

    held = _held_copies(monkeypatch)
    use = CacheUse(tmp_path)
    cache = FeatureCache(tmp_path, {"computation": "masks"}, use)
    masks = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    with use:
        cache.put_tensors("a" * 64, {"masks": masks})  # returns while the device still holds the values
        assert _entries(tmp_path) == []
        held.released.set()
    assert torch.equal(cache.get_tensors("a" * 64)["masks"], masks)


def test_a_slow_writer_holds_at_most_its_memory_bound_of_entries(tmp_path, monkeypatch):
    from foresight_eval.feature_cache import CacheUse, EntryWriter, FeatureCache

    held = _held_copies(monkeypatch)
    monkeypatch.setattr(EntryWriter, "MAX_PENDING_BYTES", 6)  # one entry of 6 booleans
    use = CacheUse(tmp_path)
    cache = FeatureCache(tmp_path, {"computation": "masks"}, use)
    with use:
        cache.put_tensors("a" * 64, {"masks": torch.ones(6, dtype=torch.bool)})
        second = threading.Thread(target=cache.put_tensors, args=("b" * 64, {"masks": torch.ones(6, dtype=torch.bool)}))
        second.start()
        second.join(0.3)
        assert second.is_alive()  # waits for the first entry's write
        held.released.set()
        second.join(10)
        assert not second.is_alive()
    assert len(_entries(tmp_path)) == 2


def test_a_write_failing_in_the_writer_thread_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch):
    """Any error of a write made after the clip (not only the disk's) stops the cache, never the run."""
    from foresight_eval.feature_cache import CacheUse, FeatureCache

    def broken(path, data):
        raise ValueError("a bug in the writer")

    monkeypatch.setattr("foresight_eval.feature_cache.write_atomic", broken)
    use = CacheUse(tmp_path)
    cache = FeatureCache(tmp_path, {"computation": "masks"}, use)
    with pytest.warns(CacheWarning, match="a bug in the writer"), use:
        for key in "ab":
            cache.put_tensors(key * 64, {"masks": torch.ones(3, dtype=torch.bool)})
    assert use.note == "not written: a bug in the writer" and _entries(tmp_path) == []
