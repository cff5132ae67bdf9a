"""Fixed costs of a run's set-up (issue 17). The weight files' SHA-256 for the run manifest, remembered per
file version (foresight_eval.weights.weight_sha256): a second run does not read the file again, a changed
file is hashed again, a broken memo is ignored. The LPIPS backbones' file names, written out so that finding
them imports no torchvision, are torchvision's own; a Hugging Face model's cache folder, named without
importing the hub's download module, is the hub's own."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from foresight_eval import RunContext, weights
from foresight_eval.metrics.perceptual import LPIPS_BACKBONES
from foresight_eval.metrics.registry import prepare_metrics


@pytest.fixture
def reads(monkeypatch) -> list:
    """The files hashed (read whole) from here on, with the process memo emptied."""
    seen = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda path: seen.append(path) or real(path))
    monkeypatch.setattr(weights, "_sha256_memo", {})
    return seen


def test_a_file_is_read_once_then_remembered_in_the_process_and_on_disk(tmp_path, reads, monkeypatch):
    weight_file, cache = tmp_path / "w.pth", tmp_path / "cache"
    weight_file.write_bytes(b"weights " * 1000)
    expected = hashlib.sha256(weight_file.read_bytes()).hexdigest()
    assert weights.weight_sha256(weight_file, cache) == expected and len(reads) == 1
    assert weights.weight_sha256(weight_file, cache) == expected and len(reads) == 1  # this process's memo
    monkeypatch.setattr(weights, "_sha256_memo", {})  # a new process: the memo file in the cache folder
    assert weights.weight_sha256(weight_file, cache) == expected and len(reads) == 1
    assert list(json.loads((cache / weights.SHA256_MEMO_FILE).read_text()).values()) == [expected]


def test_a_changed_file_is_hashed_again(tmp_path, reads, monkeypatch):
    weight_file, cache = tmp_path / "w.pth", tmp_path / "cache"
    weight_file.write_bytes(b"a" * 4096)
    weights.weight_sha256(weight_file, cache)
    info = weight_file.stat()
    os.utime(weight_file, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))  # touched
    assert weights.weight_sha256(weight_file, cache) == hashlib.sha256(b"a" * 4096).hexdigest() and len(reads) == 2
    # Rewritten with the same size and its modification time set back: the status-change time still differs.
    info = weight_file.stat()
    weight_file.write_bytes(b"b" * 4096)
    os.utime(weight_file, ns=(info.st_atime_ns, info.st_mtime_ns))
    monkeypatch.setattr(weights, "_sha256_memo", {})
    assert weights.weight_sha256(weight_file, cache) == hashlib.sha256(b"b" * 4096).hexdigest() and len(reads) == 3


@pytest.mark.parametrize("memo", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"KEY": "not a sha-256"}'])
def test_a_broken_memo_file_is_ignored_and_rewritten(tmp_path, reads, memo):
    weight_file, cache = tmp_path / "w.pth", tmp_path / "cache"
    weight_file.write_bytes(b"x" * 100)
    cache.mkdir()
    version = weights._file_version(weight_file)
    (cache / weights.SHA256_MEMO_FILE).write_bytes(memo.replace(b"KEY", version.encode()))
    assert weights.weight_sha256(weight_file, cache) == hashlib.sha256(b"x" * 100).hexdigest() and len(reads) == 1
    assert json.loads((cache / weights.SHA256_MEMO_FILE).read_text()) == {version: hashlib.sha256(b"x" * 100).hexdigest()}


def test_without_a_cache_folder_or_with_an_unwritable_one_nothing_is_written(tmp_path, reads):
    weight_file = tmp_path / "w.pth"
    weight_file.write_bytes(b"y")
    assert weights.weight_sha256(weight_file, None) == hashlib.sha256(b"y").hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    weights._sha256_memo.clear()
    assert weights.weight_sha256(weight_file, blocked) == hashlib.sha256(b"y").hexdigest() and len(reads) == 2


def test_lpips_records_the_digest_and_remembers_it_in_the_run_cache(lpips_weights, tmp_path, reads):
    backbone = LPIPS_BACKBONES["alex"].locate()
    (metric,), _ = prepare_metrics(["lpips"], {}, RunContext(resources={"cache_dir": tmp_path}))
    assert metric.describe()["weights"]["sha256"] == hashlib.sha256(backbone.read_bytes()).hexdigest()
    assert (tmp_path / weights.SHA256_MEMO_FILE).is_file() and reads == [backbone]


@pytest.mark.parametrize("net", sorted(LPIPS_BACKBONES))
def test_lpips_backbone_file_names_are_torchvisions(net):
    import torchvision

    spec = LPIPS_BACKBONES[net]
    enum_name, member = spec.weights_enum.split(".")
    assert spec.filename == os.path.basename(getattr(getattr(torchvision.models, enum_name), member).url)
    assert weights.TorchvisionCheckpoint(spec.name, spec.used_by, spec.weights_enum).filename == spec.filename


def test_hugging_face_candidates_name_the_hubs_own_folders(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    from foresight_eval.metrics.features import DINOV2_MODELS

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    spec = DINOV2_MODELS["small"]
    repo = tmp_path / repo_folder_name(repo_id=spec.repo_id, repo_type="model")
    assert spec.candidates(None)[-1][1] == repo / "snapshots" / "<revision>" / "model.safetensors"  # not cached
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"")
    assert spec.candidates(None)[-1][1] == repo / "snapshots" / "abc123" / "model.safetensors"  # the hub's lookup
