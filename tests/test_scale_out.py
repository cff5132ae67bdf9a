"""Scale-out: torchrun ranks give exactly the single-process run; interrupted runs resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from foresight_eval import ScoreOptions, score
from foresight_eval.errors import UsageError

METRICS = ["psnr", "ssim", "mae"]
TIMING_FIELDS = ("started", "finished", "command", "torch_threads", "timings")


def comparable_summary(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    for field in TIMING_FIELDS:
        summary["manifest"].pop(field)
    summary["options"].pop("world_size")
    return summary


def assert_same_run_folder(a, b):
    assert comparable_summary(a) == comparable_summary(b)
    for name in ("per_video.csv", "per_frame.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name


@pytest.fixture
def fixture_sets(fixtures_dir, tmp_path):
    """Predictions with one corrupt clip, so error rows take part too."""
    preds = tmp_path / "preds"
    shutil.copytree(fixtures_dir / "preds" / "noise_strong", preds)
    (preds / "clip02.mp4").write_bytes(b"corrupt")
    return preds, fixtures_dir / "refs"


def test_torchrun_two_ranks_give_the_single_process_run(fixture_sets, tmp_path):
    preds, refs = fixture_sets
    args = [str(preds), str(refs), "--context", "4", "-m", ",".join(METRICS), "--device", "cpu"]
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "foresight_eval", "score", *args, "--out", str(single)],
                   capture_output=True, text=True)
    distributed = tmp_path / "distributed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "foresight_eval", "score", *args, "--out", str(distributed)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode != 0  # the corrupt clip fails the job (exit 1 on rank 0), as in one process
    assert "terminate called" not in result.stderr  # no rank aborts at exit (process group left to teardown)
    assert "clip pairs scored" in result.stdout, result.stderr[-2000:]
    assert sorted(p.name for p in (distributed / "partial").iterdir()) == ["rank-00000.jsonl", "rank-00001.jsonl"]
    assert_same_run_folder(single, distributed)
    summary = json.loads((distributed / "summary.json").read_text())
    assert summary["options"]["world_size"] == 2
    # where the time went, per rank: rank 0 also waited for the gather and merged
    main_rank, other_rank = summary["manifest"]["timings"]["ranks"]
    assert list(main_rank) == ["start_up", "setup", "scoring", "gather", "merge"]
    assert list(other_rank) == ["start_up", "setup", "scoring"]
    assert all(seconds >= 0 for rank in (main_rank, other_rank) for seconds in rank.values())


def test_interrupted_run_resumes_to_the_same_run_folder(fixture_sets, tmp_path):
    preds, refs = fixture_sets
    options = ScoreOptions(context=4)
    complete = tmp_path / "complete"
    score(preds, refs, METRICS, options=options, run_dir=complete)

    interrupted = tmp_path / "interrupted"
    finished = []

    def die_after_three(pair):
        finished.append(pair.video)
        if len(finished) == 3:
            raise KeyboardInterrupt  # as if the process were killed here

    with pytest.raises(KeyboardInterrupt):
        score(preds, refs, METRICS, options=options, run_dir=interrupted, on_pair=die_after_three)
    assert not (interrupted / "summary.json").exists()
    journal = (interrupted / "partial" / "rank-00000.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 3  # header and the three finished pairs

    rescored = []
    score(preds, refs, METRICS, options=options, run_dir=interrupted, resume=True,
          on_pair=lambda pair: rescored.append(pair.video))
    assert_same_run_folder(complete, interrupted)
    journal = (interrupted / "partial" / "rank-00000.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 6, "only the three missing pairs were scored again"


def test_resume_refuses_other_metric_parameters_and_changed_inputs_are_rescored(fixture_sets, tmp_path):
    preds, refs = fixture_sets
    run_dir = tmp_path / "run"
    score(preds, refs, METRICS, options=ScoreOptions(context=4), run_dir=run_dir)
    with pytest.raises(UsageError, match="metrics.ssim.params.mode: was 'torchmetrics', now 'skimage'"):
        score(preds, refs, METRICS, params={"ssim": {"mode": "skimage"}}, options=ScoreOptions(context=4),
              run_dir=run_dir, resume=True)
    with pytest.raises(UsageError, match="options.context: was 4, now 3"):
        score(preds, refs, METRICS, options=ScoreOptions(context=3), run_dir=run_dir, resume=True)

    shutil.copy(preds / "clip00.mp4", preds / "clip02.mp4")  # the corrupt clip is replaced
    run = score(preds, refs, METRICS, options=ScoreOptions(context=4), run_dir=run_dir, resume=True)
    assert not run.failed


def test_resume_without_a_journal_is_a_usage_error(fixture_sets, tmp_path):
    preds, refs = fixture_sets
    with pytest.raises(UsageError, match="holds no run journal"):
        score(preds, refs, METRICS, run_dir=tmp_path / "new", resume=True)


def test_run_level_map_survives_resume(fixtures_dir, tmp_path):
    """COCO mAP is computed from every clip's journaled part, so a resumed run gets the same value."""
    from foresight_eval.io.annotations import load_spatial_resources

    preds = fixtures_dir / "preds" / "shift_strong"
    resources = load_spatial_resources(fixtures_dir / "coco" / "refs.json",
                                       fixtures_dir / "coco" / "detections" / "shift_strong.json")
    options = ScoreOptions(context=4)
    complete = score(preds, fixtures_dir / "refs", ["map50", "mae"], options=options, resources=resources)

    seen = []

    def die_after_two(pair):
        seen.append(pair)
        if len(seen) == 2:
            raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        score(preds, fixtures_dir / "refs", ["map50", "mae"], options=options, resources=resources,
              run_dir=run_dir, on_pair=die_after_two)
    resumed = score(preds, fixtures_dir / "refs", ["map50", "mae"], options=options, resources=resources,
                    run_dir=run_dir, resume=True)
    assert 0 < complete.metrics["map50"].mean < 1
    assert resumed.metrics["map50"].set_values == complete.metrics["map50"].set_values


def test_torchrun_latents_equal_the_single_process_run(fixtures_dir, tmp_path):
    args = ["latents", str(fixtures_dir / "latents" / "vlm"), str(fixtures_dir / "latents" / "decoder"),
            "--reduce", "mean", "--spatial", "mean", "-m", "cka,neighbourhood_recall", "--device", "cpu"]
    subprocess.run([sys.executable, "-m", "foresight_eval", *args, "--out", str(tmp_path / "single")],
                   check=True, capture_output=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "-m", "foresight_eval", *args, "--out", str(tmp_path / "distributed")],
                   check=True, capture_output=True, env=env, timeout=300)
    assert_same_run_folder(tmp_path / "single", tmp_path / "distributed")


@pytest.mark.parametrize("rank, code, status", [(1, None, 0), (1, 2, 2), (1, "a message", 1), (0, None, None)])
def test_a_rank_other_than_0_leaves_without_the_interpreters_finalization(monkeypatch, capsys, rank, code, status):
    """Its finalization could race a gloo thread that frees a collective's tensors and abort the rank (the
    torchrun test below, about one run in 40): ranks other than 0 end with os._exit, their streams flushed."""
    from foresight_eval import distributed

    class Left(Exception):
        pass

    def exit_now(value):
        raise Left(value)

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: rank)
    monkeypatch.setattr(distributed.os, "_exit", exit_now)
    stopped = []  # the metric workers kept for a next run: os._exit would leave them waiting
    monkeypatch.setattr(distributed, "stop_idle_workers", lambda: stopped.append(True))
    print("written before leaving", end="")
    if status is None:
        distributed.leave_if_not_main(code)  # rank 0 exits as usual
        assert not stopped
    else:
        with pytest.raises(Left) as left:
            distributed.leave_if_not_main(code)
        assert left.value.args == (status,) and stopped == [True]
    assert capsys.readouterr().out == "written before leaving"


def test_a_single_process_exits_as_usual(monkeypatch):
    from foresight_eval import distributed

    monkeypatch.setattr(distributed.os, "_exit", lambda value: pytest.fail("os._exit outside a process group"))
    distributed.leave_if_not_main(0)


def test_torchrun_generate_shares_clips_over_ranks(fixtures_dir, tmp_path):
    contexts = tmp_path / "contexts"
    contexts.mkdir()
    for name in ("clip00", "clip01", "clip02"):
        shutil.copy(fixtures_dir / "refs" / f"{name}.mp4", contexts)
    out = tmp_path / "preds"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "foresight_eval",
         "generate", "--inputs", str(contexts), "--out", str(out), "--preset", "tiny", "--device", "cpu",
         "--frames", "8", "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["clip00.mp4", "clip01.mp4", "clip02.mp4"]
    manifest = json.loads((out / "generate_manifest.json").read_text())
    assert manifest["videos"]["ok"] == 3 and set(manifest["timings"]) == {"rank0", "rank1"}
