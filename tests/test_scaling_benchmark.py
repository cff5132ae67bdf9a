"""benchmarks/scaling.py: ``--rounds`` runs every world size that many times in alternating order and reports
medians (one run of each told a rank's start-up noise from the ranks' effect no better than a coin)."""

from __future__ import annotations

import json
import subprocess
import types
from pathlib import Path

import pytest


@pytest.mark.parametrize("differing_round", [None, 2])
def test_rounds_alternate_the_world_sizes_and_report_medians(benchmark_module, monkeypatch, differing_round):
    scaling = benchmark_module("scaling")
    started: list[int] = []
    # each round's scoring seconds, per rank
    scoring = {1: iter([[10.0], [14.0], [12.0]]), 2: iter([[6.0, 8.0], [5.0, 9.0], [7.0, 4.0]])}

    def run(command, **kwargs):  # a launcher's run: its run folder, as `score --json --out` writes it
        ranks = int(command[command.index("--nproc-per-node") + 1])
        out = Path(command[command.index("--out") + 1])
        out.mkdir()
        started.append(ranks)
        phases = [{"start_up": 1.0 + rank, "scoring": seconds} for rank, seconds in enumerate(next(scoring[ranks]))]
        summary = {"metrics": {"psnr": {"mean": 30.0}}, "manifest": {"timings": {"ranks": phases}}}
        (out / "summary.json").write_text(json.dumps(summary))
        differs = differing_round is not None and len(started) == 2 * differing_round + 2  # its second run: 2 ranks
        (out / "per_frame.csv").write_text("other" if differs else "rows")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(scaling, "subprocess", types.SimpleNamespace(run=run))
    args = scaling.build_parser().parse_args(["--ranks", "1,2", "--launchers", "launch", "--clips", "1", "--frames",
                                              "4", "--size", "64x64", "--rounds", "3", "--device", "cpu"])
    report = scaling.measure(args)

    assert started == [1, 2, 2, 1, 1, 2]  # the order reversed every other round
    one, two = report["runs"]["1 launch"], report["runs"]["2 launch"]
    assert len(one["wall_rounds"]) == len(two["wall_rounds"]) == 3 and report["rounds"] == 3
    # each rank's phases: their medians over the rounds
    assert one["phases"] == [{"start_up": 1.0, "scoring": 12.0}]
    assert two["phases"] == [{"start_up": 1.0, "scoring": 6.0}, {"start_up": 2.0, "scoring": 8.0}]
    assert report["model"]["scoring_s"] == 12.0
    assert one["results_identical"]
    assert two["results_identical"] is (differing_round is None)
