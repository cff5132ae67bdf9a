"""`python -m foresight_eval.launch`: N ranks without torchrun's agent give exactly the single-process run
(and torchrun's), a failing rank stops the others, and the launcher itself imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from foresight_eval.launch import exit_status, rank_environments
from tests.conftest import REPO
from tests.test_scale_out import METRICS, assert_same_run_folder, fixture_sets  # noqa: F401 - a fixture


def test_each_rank_gets_torchruns_environment():
    envs = rank_environments(2, 29500, {"PATH": "/bin"})
    assert [(e["RANK"], e["LOCAL_RANK"]) for e in envs] == [("0", "0"), ("1", "1")]
    assert all(e["WORLD_SIZE"] == e["LOCAL_WORLD_SIZE"] == "2" and e["MASTER_PORT"] == "29500"
               and e["MASTER_ADDR"] == "127.0.0.1" and e["OMP_NUM_THREADS"] == "1" and e["PATH"] == "/bin"
               for e in envs)
    assert rank_environments(2, 1, {"OMP_NUM_THREADS": "4"})[0]["OMP_NUM_THREADS"] == "4"  # the user's wins
    assert "OMP_NUM_THREADS" not in rank_environments(1, 1, {})[0]
    assert exit_status(-15) == 143 and exit_status(2) == 2


def test_the_launcher_imports_no_torch():
    code = "import sys, foresight_eval.launch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_two_ranks_give_the_single_process_run(fixture_sets, tmp_path):  # noqa: F811
    preds, refs = fixture_sets
    args = ["score", str(preds), str(refs), "--context", "4", "-m", ",".join(METRICS), "--device", "cpu"]
    single, launched = tmp_path / "single", tmp_path / "launched"
    subprocess.run([sys.executable, "-m", "foresight_eval", *args, "--out", str(single)], capture_output=True)
    result = subprocess.run([sys.executable, "-m", "foresight_eval.launch", "--nproc-per-node", "2", *args,
                             "--out", str(launched)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # the corrupt clip: exit 1, as in one process
    assert "terminate called" not in result.stderr
    assert_same_run_folder(single, launched)
    summary = json.loads((launched / "summary.json").read_text())
    assert summary["options"]["world_size"] == 2 and len(summary["manifest"]["timings"]["ranks"]) == 2


def test_two_ranks_with_metric_workers_end(fixtures_dir, tmp_path):
    """Rank 1 leaves by ``os._exit`` with metric workers kept for a next run (workers.IDLE_POOLS_KEPT): it stops
    them first (distributed.leave_if_not_main), and they would end with it anyway (workers._leave_with). With
    neither they, and their fork server, waited for ever, and so did whatever read their standard output: this
    capture (the 2 x H200 scaling run of issue 17's eighteenth session hung so)."""
    args = ["score", str(fixtures_dir / "preds" / "blur_mild"), str(fixtures_dir / "refs"), "-m", "edge_f1",
            "--workers", "2", "--device", "cpu", "--out", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-m", "foresight_eval.launch", "--nproc-per-node", "2", *args],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_failing_rank_stops_the_others(tmp_path, monkeypatch):
    """Rank 1 fails before the gather (its usage error); rank 0, a long sleep here, would wait for it."""
    import foresight_eval.launch as launch

    real_popen = subprocess.Popen

    def popen(command, env):
        body = "import time; time.sleep(120)" if env["RANK"] == "0" else "import sys; sys.exit(2)"
        return real_popen([sys.executable, "-c", body], env=env)

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    start = time.monotonic()
    assert launch.run_ranks(2, ["score"]) == 2
    assert time.monotonic() - start < 60


def test_the_command_line(monkeypatch):
    import foresight_eval.launch as launch

    calls = []
    monkeypatch.setattr(launch, "run_ranks", lambda ranks, args: calls.append((ranks, args)) or 0)
    assert launch.main(["--nproc-per-node", "2", "score", "a", "b", "-m", "psnr"]) == 0
    assert launch.main(["--nproc-per-node=3", "--", "score", "--help"]) == 0
    assert calls == [(2, ["score", "a", "b", "-m", "psnr"]), (3, ["score", "--help"])]
    with pytest.raises(SystemExit):
        launch.main(["--nproc-per-node", "0", "score"])
