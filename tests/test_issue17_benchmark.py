"""benchmarks/issue17.py: ``--rounds`` sets the rounds of every figure, the GPU figures' included (they were
suite_speed.py's default three whatever ``--rounds`` said) and the two-GPU figure's (scaling.py's, one run of
each world size before)."""

from __future__ import annotations

import argparse


def test_the_gpu_figures_run_in_the_rounds_asked_for(benchmark_module, monkeypatch, tmp_path):
    issue17, suite_speed = benchmark_module("issue17"), benchmark_module("suite_speed")
    asked = []

    def measure(args):  # a GPU's figures, as suite_speed reports them
        asked.append((args.rounds, args.size))
        runs = {name: {"seconds": 0.4, "rounds": [0.4] * args.rounds}
                for name in ("no cache", "warm frame cache", "default cache")}
        gpu = {"device": "cuda:0", "decode_only_s": 0.3, "decode_only_rounds": [0.3] * args.rounds, "suite_runs": runs}
        return {"devices": [gpu], "size": args.size, "frames": args.frames}

    monkeypatch.setattr(suite_speed, "measure", measure)
    _, rows = issue17.gpu_figures(argparse.Namespace(out=tmp_path, quick=False, rounds=5))
    assert asked == [(5, "640x360"), (5, "640x360,320x240,176x144")]
    assert [len(row["per_round"]) for row in rows if "per_round" in row] == [5, 5]


def test_the_scaling_figure_runs_in_the_rounds_asked_for(benchmark_module, monkeypatch):
    issue17, scaling = benchmark_module("issue17"), benchmark_module("scaling")
    asked = []

    def measure(args):  # scaling.py's report of two world sizes
        asked.append((args.metrics, args.rounds))
        runs = {f"{ranks} launch": {"wall_s": 10.0 / ranks, "speed_up": float(ranks), "results_identical": True}
                for ranks in (1, 2)}
        return {"clips": args.clips, "device": args.device, "runs": runs}

    monkeypatch.setattr(scaling, "measure", measure)
    _, rows = issue17.scaling_figure(argparse.Namespace(quick=True, rounds=3))
    assert asked == [("psnr,ssim,lpips", 3), ("default", 3)]
    assert [row["ratio"] for row in rows] == [2.0, 2.0]
