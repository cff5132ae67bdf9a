"""benchmarks/ab_settings.py, the A/B harness of issue 17's figures: settings apply over the code's own values
and give them back, a bad assignment is a clear exit, and a tiny run on the CPU reports every setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BENCHMARKS


@pytest.fixture
def ab_settings(benchmark_module):
    return benchmark_module("ab_settings")


def test_a_setting_applies_over_the_codes_values_and_gives_them_back(ab_settings, monkeypatch):
    from foresight_eval import engine

    monkeypatch.delenv("FORESIGHT_EVAL_CUDA_GRAPHS", raising=False)
    monkeypatch.setattr(engine, "PAIRS_AHEAD_ON_DEVICE", engine.PAIRS_AHEAD_ON_DEVICE)  # given back if this fails
    settings = ab_settings.Settings([["code"], ["three", "engine.PAIRS_AHEAD_ON_DEVICE=3"],
                                     ["eager", "env:FORESIGHT_EVAL_CUDA_GRAPHS=0"]])
    own = engine.PAIRS_AHEAD_ON_DEVICE
    settings.apply("three")
    assert engine.PAIRS_AHEAD_ON_DEVICE == 3 and "FORESIGHT_EVAL_CUDA_GRAPHS" not in os.environ
    settings.apply("eager")
    assert engine.PAIRS_AHEAD_ON_DEVICE == own and os.environ["FORESIGHT_EVAL_CUDA_GRAPHS"] == "0"
    settings.apply("code")
    assert engine.PAIRS_AHEAD_ON_DEVICE == own and "FORESIGHT_EVAL_CUDA_GRAPHS" not in os.environ


def test_the_switch_interval_is_set_and_given_back(ab_settings):
    own = sys.getswitchinterval()
    settings = ab_settings.Settings([["code"], ["fast", "sys:switchinterval=0.001"]])
    try:
        settings.apply("fast")
        assert sys.getswitchinterval() == pytest.approx(0.001)
        settings.apply("code")
        assert sys.getswitchinterval() == own
    finally:
        sys.setswitchinterval(own)


def test_predecoded_frames_decode_each_clip_once_and_only_within_the_setting(ab_settings, fixtures_dir, monkeypatch):
    from foresight_eval.io.video import VideoReader

    decoded = []
    decode = VideoReader.frames

    def counted(reader):
        decoded.append(reader.path)
        return decode(reader)

    monkeypatch.setattr(VideoReader, "frames", counted)
    clip = next(fixtures_dir.joinpath("refs").glob("*.mp4"))
    own = [frame.copy() for frame in VideoReader(clip).frames()]
    settings = ab_settings.Settings([["code"], ["pre", ab_settings.PREDECODED]])
    assert settings.predecoded == {"code": False, "pre": True} and settings.named["pre"] == []
    predecoded = ab_settings.PredecodedFrames()
    decoded.clear()
    for _ in range(3):
        with predecoded:
            frames = list(VideoReader(clip).frames())
        assert len(frames) == len(own) and all((a == b).all() for a, b in zip(frames, own))
    assert decoded == [clip]  # read three times, decoded once
    list(VideoReader(clip).frames())
    assert decoded == [clip, clip]  # outside the setting the reader decodes again


@pytest.mark.parametrize("assignment, message", [("engine.NO_SUCH_CONSTANT=1", "has no 'NO_SUCH_CONSTANT'"),
                                                 ("engine.PAIRS_AHEAD_ON_DEVICE", "expected MODULE.NAME=VALUE"),
                                                 ("engine.PAIRS_AHEAD_ON_DEVICE=two", "not a Python literal")])
def test_a_bad_assignment_is_a_clear_exit(ab_settings, assignment, message):
    with pytest.raises(SystemExit, match=message):
        ab_settings.Settings([["bad", assignment]])


def test_a_tiny_run_reports_every_setting(tmp_path):
    out = tmp_path / "ab.json"
    command = [sys.executable, str(BENCHMARKS / "ab_settings.py"), "--device", "cpu", "--rounds", "1", "--warm-up", "1",
               "--clips", "2", "--frames", "3", "--size", "64x48,48x32", "--metrics", "psnr,motion_iou",
               "--setting", "code", "--setting", "eager", "env:FORESIGHT_EVAL_CUDA_GRAPHS=0", "--leave-one-out",
               "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert list(report["settings"]) == ["code", "eager", "-psnr", "-motion_iou"]
    assert report["settings"]["eager"]["assignments"] == ["env:FORESIGHT_EVAL_CUDA_GRAPHS=0"]
    assert all(figures["means_equal_first"] and len(figures["rounds"]) == 1 for figures in report["settings"].values())
    assert list(report["settings"]["-psnr"]["means"]) == ["motion_iou"]  # the suite without psnr
    assert "eager: median" in result.stdout
    if Path("/proc/stat").exists():  # the machine's busy CPU seconds per run (in ticks of 10 ms): at most all CPUs
        busy = [report["decode_only_cpu_busy_s"]] + [figures["cpu_busy_s"] for figures in report["settings"].values()]
        walls = [report["decode_only_s"]] + [figures["median_s"] for figures in report["settings"].values()]
        assert all(0 <= cpu <= wall * os.cpu_count() + 0.05 for cpu, wall in zip(busy, walls)), (busy, walls)
        assert sum(busy) > 0 and "CPUs busy" in result.stdout


def test_the_default_suite_has_lpips_where_its_weights_are_written_for_the_run(tmp_path):
    """With no AlexNet weights in the torch cache (a lent GPU machine) the run writes seeded random ones: the
    suite is listed after that, so the default suite keeps lpips."""
    out = tmp_path / "ab.json"
    command = [sys.executable, str(BENCHMARKS / "ab_settings.py"), "--device", "cpu", "--rounds", "1", "--warm-up", "0",
               "--clips", "1", "--frames", "2", "--size", "48x32", "--setting", "code", "--setting", "again",
               "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "TORCH_HOME": str(tmp_path / "empty_torch_home")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "random AlexNet weights" in result.stderr
    report = json.loads(out.read_text())
    assert "lpips" in report["metrics"] and "lpips" in report["settings"]["again"]["means"]


def test_dropping_a_metric_outside_the_suite_is_a_clear_exit(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "ab_settings.py"), "--device", "cpu", "--metrics", "psnr",
               "--setting", "code", "--setting", "no-ssim", "without:ssim"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode != 0 and "setting 'no-ssim': ssim not in the suite (psnr)" in result.stderr
