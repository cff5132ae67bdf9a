"""Studies: seeds (two-level bootstrap, per-seed rows), categories, subsets, frame rates (mismatch,
resampling, variable frame rate, --horizon-seconds), and how reports, leaderboards and gates show them."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from foresight_eval.cli import main
from foresight_eval.engine import score
from foresight_eval.options import ScoreOptions
from foresight_eval.errors import UsageError
from foresight_eval.io.video import VideoReader
from foresight_eval.stats import BootstrapConfig
from foresight_eval.study import (
    UNLABELLED, Study, _two_level_means, load_categories, seed_folders, two_level_bootstrap,
)
from foresight_eval.timing import clip_timing, nearest_frames
from tests.clipmaker import write_container

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST = BootstrapConfig(n_resamples=300)


def flat_clip(levels, height: int = 16, width: int = 16) -> np.ndarray:
    """One flat grey frame per level: the frame's level identifies it after decoding."""
    return np.stack([np.full((height, width, 3), level, dtype=np.uint8) for level in levels])


def write_vfr(path: Path, frames: np.ndarray, times_ms) -> Path:
    """A lossless (FFV1) Matroska clip whose frames play at ``times_ms``: variable frame rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=1000)  # millisecond ticks: the encoder keeps each pts
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, ms in zip(frames, times_ms):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = ms, Fraction(1, 1000)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    return path


# ---------------------------------------------------------------- the two-level bootstrap

def test_two_level_bootstrap_variance_matches_its_closed_form():
    """Resampling clips then seeds: Var(mean*) = [var(clip means) + mean(within var / k)] / n (population
    variances), with unequal seed counts. 20000 resamples put the estimate within ~2% of it."""
    rng = np.random.default_rng(1)
    rows = [rng.normal(i, 1 + i % 3, size=2 + i % 3) for i in range(12)]
    table = np.full((12, 4), np.nan)
    for i, row in enumerate(rows):
        table[i, :row.size] = row
    counts = np.array([row.size for row in rows])
    means = _two_level_means(table, counts, 20000, np.random.default_rng(0))
    clip_means = np.array([row.mean() for row in rows])
    expected = (clip_means.var() + np.mean([row.var() / row.size for row in rows])) / len(rows)
    assert means.var() == pytest.approx(expected, rel=0.05)
    estimate = two_level_bootstrap(rows, BootstrapConfig(n_resamples=2000))
    assert estimate.mean == pytest.approx(clip_means.mean()) and estimate.n == 12


def test_one_seed_per_clip_is_the_ordinary_bootstrap():
    """With k = 1 there is nothing to resample within a clip: the CI is SciPy's percentile bootstrap's
    (other random draws, so equal within Monte Carlo error: 3% of the CI's width at 20000 resamples)."""
    values = np.random.default_rng(2).gamma(2.0, size=40)
    config = BootstrapConfig(n_resamples=20000)
    ours = two_level_bootstrap([[v] for v in values], config)
    scipy_ci = scipy_stats.bootstrap((values,), np.mean, n_resamples=20000, method="percentile",
                                     rng=np.random.default_rng(5)).confidence_interval
    width = scipy_ci.high - scipy_ci.low
    assert abs(ours.ci_low - scipy_ci.low) < 0.03 * width and abs(ours.ci_high - scipy_ci.high) < 0.03 * width


def test_two_level_bootstrap_coverage_on_synthetic_studies():
    """500 simulated studies, y_ij = mu + a_i + e_ij with sd(a) = sd(e) = 1, 30 clips x 3 seeds: the 95% CI
    covers mu in 92-99% of them (0.941 measured over 1000 studies, docs/study.md)."""
    rng = np.random.default_rng(2026)
    n, k, studies, mu = 30, 3, 500, 2.0
    covered = 0
    for study in range(studies):
        values = mu + rng.normal(size=(n, 1)) + rng.normal(size=(n, k))
        estimate = two_level_bootstrap(values, BootstrapConfig(n_resamples=400, seed=study))
        covered += estimate.ci_low <= mu <= estimate.ci_high
    assert 0.92 <= covered / studies <= 0.99, covered / studies


def test_clip_only_resampling_would_undercover_when_seeds_are_ignored():
    """The same simulation, treating the 90 seed rows as independent clips (what a one-level bootstrap over
    rows does): coverage falls well below 95%, which is why seeds need the two-level scheme."""
    rng = np.random.default_rng(7)
    n, k, mu, covered = 30, 3, 0.0, 0
    for study in range(200):
        values = mu + 2.0 * rng.normal(size=(n, 1)) + 0.3 * rng.normal(size=(n, k))
        two = two_level_bootstrap(values, BootstrapConfig(n_resamples=300, seed=study))
        flat = two_level_bootstrap(values.reshape(-1, 1), BootstrapConfig(n_resamples=300, seed=study))
        assert two.ci_high - two.ci_low > 1.4 * (flat.ci_high - flat.ci_low)
        covered += flat.ci_low <= mu <= flat.ci_high
    assert covered / 200 < 0.85


# ---------------------------------------------------------------- seeds through the engine

@pytest.fixture
def seeded(tmp_path):
    """Three seeds of predictions for three clips (arrays), references of 6 frames."""
    rng = np.random.default_rng(0)
    refs = tmp_path / "refs"
    refs.mkdir()
    for clip in ("a", "b", "c"):
        np.save(refs / f"{clip}.npy", rng.integers(0, 255, size=(6, 8, 8, 3), dtype=np.uint8))
    for seed in range(3):
        folder = tmp_path / "preds" / f"seed{seed}"
        folder.mkdir(parents=True)
        for clip in ("a", "b", "c"):
            ref = np.load(refs / f"{clip}.npy").astype(np.int16)
            noise = np.random.default_rng(10 * seed + ord(clip)).integers(-20 * (seed + 1), 20 * (seed + 1) + 1, ref.shape)
            np.save(folder / f"{clip}.npy", np.clip(ref + noise, 0, 255).astype(np.uint8))
    return tmp_path


def test_seeded_run_keeps_per_seed_rows_and_averages_clips_over_seeds(seeded):
    out = seeded / "run"
    run = score(seed_folders(seeded / "preds"), seeded / "refs", ["mae"], device="cpu", bootstrap=FAST,
                options=ScoreOptions(context=1), run_dir=out)
    assert [(p.video, p.seed) for p in run.pairs] == [(c, f"seed{s}") for c in "abc" for s in range(3)]
    table = {(p.video, p.seed): p.values["mae"] for p in run.pairs}
    clip_means = [np.mean([table[c, f"seed{s}"] for s in range(3)]) for c in "abc"]
    summary = json.loads((out / "summary.json").read_text())["metrics"]["mae"]
    assert summary["mean"] == pytest.approx(np.mean(clip_means)) and summary["n"] == 3
    assert summary["ci"].startswith("two-level bootstrap")
    assert summary["ci_low"] < summary["mean"] < summary["ci_high"]
    per_seed = [np.mean([table[c, f"seed{s}"] for c in "abc"]) for s in range(3)]
    assert summary["seeds"]["per_seed"]["seed2"] == pytest.approx(per_seed[2])
    assert summary["seeds"]["sd_between_seeds"] == pytest.approx(np.std(per_seed, ddof=1))
    rows = list(csv.DictReader((out / "per_video.csv").open()))
    assert [r["seed"] for r in rows[:3]] == ["seed0", "seed1", "seed2"] and float(rows[0]["mae"]) == table["a", "seed0"]
    frames = list(csv.DictReader((out / "per_frame.csv").open()))
    assert len(frames) == 3 * 3 * 5 and {r["seed"] for r in frames} == {"seed0", "seed1", "seed2"}
    assert set(json.loads((out / "summary.json").read_text())["manifest"]["inputs"]["predictions"]["sha256"]) >= {
        "seed0/a.npy", "seed2/c.npy"}


def test_seeded_run_resumes_per_seed_and_compares_by_clip(seeded):
    out = seeded / "run"
    sets = {"s0": seeded / "preds" / "seed0", "s1": seeded / "preds" / "seed1"}
    first = score(sets, seeded / "refs", ["mae"], device="cpu", bootstrap=FAST, run_dir=out)
    (out / "summary.json").unlink()
    resumed = score(sets, seeded / "refs", ["mae"], device="cpu", bootstrap=FAST, run_dir=out, resume=True)
    assert [(p.seed, p.video, p.values) for p in resumed.pairs] == [(p.seed, p.video, p.values) for p in first.pairs]
    # compare pairs by clip, each clip's value averaged over its seeds
    single = score(seeded / "preds" / "seed0", seeded / "refs", ["mae"], device="cpu", bootstrap=FAST,
                   run_dir=seeded / "single")
    from foresight_eval.compare import compare

    entry = compare([seeded / "single", out]).pairs[0]
    averaged = {c: np.mean([p.values["mae"] for p in first.pairs if p.video == c]) for c in "abc"}
    assert entry.n == 3 and entry.mean_b == pytest.approx(np.mean(list(averaged.values())))
    assert entry.mean_a == pytest.approx(single.metrics["mae"].mean)


# ---------------------------------------------------------------- categories

def test_categories_from_files_and_patterns(tmp_path):
    keys = ["collisions/a", "collisions/b", "falling/c", "d"]
    assert load_categories("folder:1", keys) == {
        "collisions/a": ["collisions"], "collisions/b": ["collisions"], "falling/c": ["falling"], "d": [UNLABELLED]}
    assert load_categories(r"regex:^(\w+)/", keys)["falling/c"] == ["falling"]
    (tmp_path / "labels.csv").write_text("video,category\ncollisions/a,x;y\nfalling/c,z\nfalling/c,x\n")
    assert load_categories(tmp_path / "labels.csv", keys) == {
        "collisions/a": ["x", "y"], "collisions/b": [UNLABELLED], "falling/c": ["z", "x"], "d": [UNLABELLED]}
    (tmp_path / "labels.json").write_text(json.dumps({"d": "solo", "collisions/b": ["p", "q"]}))
    assert load_categories(tmp_path / "labels.json", keys)["collisions/b"] == ["p", "q"]
    (tmp_path / "bad.csv").write_text("clip,label\na,b\n")
    with pytest.raises(UsageError, match="'video' and 'category' columns"):
        load_categories(tmp_path / "bad.csv", keys)


def test_category_means_and_a_gate_on_one_category_through_check_junit(seeded, tmp_path):
    labels = {"a": ["hard"], "b": ["hard", "easy"]}  # c has none: unlabelled, not dropped
    out = tmp_path / "run"
    run = score(seeded / "preds" / "seed0", seeded / "refs", ["mae"], device="cpu", bootstrap=FAST,
                run_dir=out, study=Study(categories=labels))
    values = {p.video: p.values["mae"] for p in run.pairs}
    by_category = json.loads((out / "summary.json").read_text())["metrics"]["mae"]["by_category"]
    assert set(by_category) == {"hard", "easy", UNLABELLED}
    assert by_category["hard"]["mean"] == pytest.approx((values["a"] + values["b"]) / 2)
    assert by_category[UNLABELLED] == {"mean": values["c"], "ci_low": None, "ci_high": None, "n": 1}
    rows = list(csv.DictReader((out / "per_video.csv").open()))
    assert [r["category"] for r in rows] == ["hard", "hard;easy", UNLABELLED]
    hard = by_category["hard"]["mean"]
    gates = tmp_path / "gates.yaml"
    gates.write_text(f"name: cats\nmetrics:\n"
                     f"  - {{metric: mae, category: hard, threshold: {hard * 1.01}, direction: lower}}\n"
                     f"  - {{metric: mae, category: easy, threshold: {values['b'] * 0.5}, direction: lower}}\n"
                     f"  - {{metric: mae, category: missing, threshold: 1, direction: lower}}\n")
    junit = tmp_path / "junit.xml"
    result = CliRunner().invoke(main, ["check", str(out), "--gates", str(gates), "--junit", str(junit)])
    assert result.exit_code == 1, result.output
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"mae[hard]", "mae[easy]", "mae[missing]"}
    assert cases["mae[hard]"].find("failure") is None
    assert cases["mae[easy]"].find("failure").get("type") == "fail"
    assert "no clip of category 'missing'" in cases["mae[missing]"].find("failure").get("message")


# ---------------------------------------------------------------- subsets

def test_subset_is_recorded_and_marked_in_report_and_leaderboard(seeded, tmp_path):
    run = score(seeded / "preds" / "seed0", seeded / "refs", ["mae"], device="cpu", bootstrap=FAST,
                run_dir=tmp_path / "quick", study=Study(include=("[ab]",), exclude=("b",), limit=5))
    assert [p.video for p in run.pairs] == ["a"]
    subset = run.study["subset"]
    assert subset == {"limit": 5, "include": ["[ab]"], "exclude": ["b"], "found": 3, "selected": 1, "is_subset": True}
    assert run.manifest["study"]["include"] == ["[ab]"]
    full = score(seeded / "preds" / "seed1", seeded / "refs", ["mae"], device="cpu", bootstrap=FAST,
                 run_dir=tmp_path / "full", study=Study(limit=3))
    assert full.study["subset"]["is_subset"] is False
    from foresight_eval.report.build import report
    from foresight_eval.report.leaderboard import leaderboard

    files = report([str(tmp_path / "quick"), str(tmp_path / "full")], tmp_path / "report", worst_k=0)
    markdown = files.markdown.read_text()
    assert "subset: 1 of 3 clips (--limit 5 --include \\[ab\\] --exclude b)" in markdown
    assert markdown.count("subset:") == 1 and "subset" in files.html.read_text()
    leaderboard([str(tmp_path / "full"), str(tmp_path / "quick")], tmp_path / "board", split=True)
    rows = list(csv.DictReader((tmp_path / "board" / "leaderboard.csv").open()))
    assert {r["run"]: r["subset"] for r in rows} == {"full": "", "quick": "subset: 1 of 3 clips (--limit 5 --include [ab] --exclude b)"}
    assert "subset: 1 of 3 clips" in (tmp_path / "board" / "leaderboard.md").read_text()
    with pytest.raises(UsageError, match="no clip left"):
        score(seeded / "preds" / "seed0", seeded / "refs", ["mae"], device="cpu", study=Study(include=("zzz*",)))


# ---------------------------------------------------------------- frame rates

def test_fps_mismatch_is_an_error_row_resampled_or_ignored(tmp_path):
    """Reference at 10 fps, prediction at 20 fps holding each reference frame twice (lossless FFV1)."""
    ref = flat_clip([10 * i for i in range(8)])
    write_container(tmp_path / "refs" / "clip.mkv", ref, "ffv1", "bgr0", fps=10)
    write_container(tmp_path / "preds" / "clip.mkv", np.repeat(ref, 2, axis=0), "ffv1", "bgr0", fps=20)

    def run(mode, frames="error"):
        return score(tmp_path / "preds", tmp_path / "refs", ["mae"], device="cpu", bootstrap=FAST,
                     options=ScoreOptions(fps_mismatch=mode, frame_mismatch=frames)).pairs[0]

    error = run("error")
    assert error.status == "error" and "prediction is 20 fps, reference is 10 fps" in error.error
    assert error.media["fps"] == 10 and error.media["pred_fps"] == 20  # recorded on the error row too
    resampled = run("resample-pred")
    assert resampled.ok and resampled.values["mae"] == 0.0 and resampled.frames == 8
    assert resampled.media["alignment"] == "time" and resampled.media["duration"] == pytest.approx(0.8)
    assert run("ignore").status == "error"  # 16 frames against 8, paired by index: --frame-mismatch error
    ignored = run("ignore", frames="min")
    assert ignored.ok and ignored.values["mae"] > 0.01 and ignored.media["alignment"] == "index"


def test_variable_frame_rate_clip_is_read_by_timestamp(tmp_path):
    times = [0, 100, 150, 330, 400, 610, 800]  # ms: intervals from 50 to 210
    pred = flat_clip([20 * j for j in range(len(times))])
    write_vfr(tmp_path / "preds" / "clip.mkv", pred, times)
    write_container(tmp_path / "refs" / "clip.mkv", flat_clip([0] * 9), "ffv1", "bgr0", fps=10)
    reader = VideoReader(tmp_path / "preds" / "clip.mkv")
    assert reader.timestamps().tolist() == pytest.approx([t / 1000 for t in times])
    timing = clip_timing(reader)
    assert timing.vfr and timing.fps == pytest.approx(6 / 0.8)
    run = score(tmp_path / "preds", tmp_path / "refs", ["mae"], device="cpu", bootstrap=FAST,
                options=ScoreOptions(frame_mismatch="min"))
    pair = run.pairs[0]
    assert pair.ok and pair.media["alignment"] == "time"
    chosen = [round(v * 255 / 20) for _, _, v in pair.per_frame["mae"]]
    # reference frames at 0, 0.1, ..., 0.8 s; the nearest prediction frame of each (ties to the earlier);
    # by index it would have been 0, 1, 2, 3, 4, 5, 6.
    assert chosen == [0, 1, 2, 3, 4, 4, 5, 5, 6]


def test_a_clip_opened_with_its_timestamps_is_read_in_one_open_of_the_file(tmp_path, monkeypatch):
    """The engine opens each clip file once on its scoring thread (probe and timestamps in one pass); decoding
    opens it again in its own thread."""
    times = [0, 100, 150, 330, 400, 610, 800]
    write_vfr(tmp_path / "preds" / "clip.mkv", flat_clip([20 * j for j in range(len(times))]), times)
    write_container(tmp_path / "refs" / "clip.mkv", flat_clip([0] * 9), "ffv1", "bgr0", fps=10)
    opened: list[str] = []  # the side of each file opened
    real_open = av.open

    def counted_open(path, *args, **kwargs):
        opened.append(Path(path).parent.name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(av, "open", counted_open)
    at_open = VideoReader(tmp_path / "preds" / "clip.mkv", timestamps=True)
    assert len(opened) == 1
    assert at_open.timestamps().tolist() == VideoReader(tmp_path / "preds" / "clip.mkv").timestamps().tolist()
    assert len(opened) == 3  # the lazy reader: its probe, then its demux pass
    opened.clear()
    run = score(tmp_path / "preds", tmp_path / "refs", ["mae"], device="cpu", bootstrap=FAST,
                options=ScoreOptions(frame_mismatch="min"))
    assert run.pairs[0].ok and sorted(opened) == ["preds", "preds", "refs", "refs"]  # opened, then decoded


def test_nearest_frames_streams_and_stops_past_the_prediction():
    frames = [np.full((1, 1, 3), j, np.uint8) for j in range(4)]
    times = np.array([0.0, 0.05, 0.1, 0.15])  # 20 fps
    picked = [int(f[0, 0, 0]) for f in nearest_frames(iter(frames), times, np.array([0.0, 0.1, 0.2, 0.3]))]
    assert picked == [0, 2]  # 0.2 s is more than half an interval past the last frame (0.15 s)


def test_horizon_seconds_and_frame_folders_need_a_frame_rate(seeded, tmp_path):
    refs, preds = seeded / "refs", seeded / "preds" / "seed0"
    run = score(preds, refs, ["mae"], device="cpu", bootstrap=FAST,
                options=ScoreOptions(context=1, fps=4.0, horizon_seconds=0.75))
    assert {p.frames for p in run.pairs} == {3}  # horizon frames at 0, 0.25, 0.5 s after the first
    assert [h["seconds"] for h in run.metrics["mae"].per_horizon] == [0.25, 0.5, 0.75]
    assert run.pairs[0].media["duration"] == 1.5 and run.study["timing"]["common_fps"] == 4.0
    unknown = score(preds, refs, ["mae"], device="cpu", bootstrap=FAST, options=ScoreOptions(horizon_seconds=1))
    assert all("give --fps" in p.error for p in unknown.pairs)
    with pytest.raises(UsageError, match="fps must be a positive"):
        ScoreOptions(fps=0)


def test_worked_example_on_the_fixtures(tmp_path):
    """README's example: two seeds, categories from fixtures/study/categories.csv, --by category."""
    out = tmp_path / "study"
    result = CliRunner().invoke(main, [
        "score", str(FIXTURES / "study" / "seeds"), str(FIXTURES / "refs"), "--seeds", "--context", "4",
        "--categories", str(FIXTURES / "study" / "categories.csv"), "--by", "category", "-m", "mae",
        "--bootstrap-resamples", "200", "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"]["seeds"]["names"] == ["seed0", "seed1"]
    assert summary["study"]["categories"]["clips"] == {"collision": 3, "falling": 2, "occlusion": 1, UNLABELLED: 1}
    assert summary["metrics"]["mae"]["by_category"][UNLABELLED]["n"] == 1
    assert "by category" in result.output and "unlabelled" in result.output
    assert [h["seconds"] for h in summary["metrics"]["mae"]["per_horizon"][:2]] == [0.1, 0.2]  # 10 fps
    from foresight_eval.report import plots
    from foresight_eval.runs import load_run

    assert plots.horizon_curve([load_run(out)], "mae").startswith("data:image/png")  # with its seconds axis


def test_cli_seeds_subset_and_a_report_of_category_gates(seeded, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "score", str(seeded / "preds" / "seed0"), str(seeded / "refs"), "--preds-seed", str(seeded / "preds" / "seed1"),
        "--include", "a", "--include", "b", "-m", "mae", "--categories", "regex:^(a)$", "--bootstrap-resamples", "100",
        "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 of 4 clip pairs scored (subset: 2 of 3 clips)" in result.output
    rows = list(csv.DictReader((out / "per_video.csv").open()))
    assert [(r["video"], r["seed"]) for r in rows] == [("a", "seed0"), ("a", "seed1"), ("b", "seed0"), ("b", "seed1")]
    gates = tmp_path / "gates.yaml"
    gates.write_text("name: cats\nmetrics:\n  - {metric: mae, category: a, threshold: 1, direction: lower}\n"
                     "  - {metric: mae, category: unlabelled, threshold: 0, direction: lower}\n")
    from foresight_eval.report.build import report

    markdown = report([str(out)], tmp_path / "report", gates=[str(gates)], worst_k=0).markdown.read_text()
    # one gate row per (metric, category), labelled by both
    gate_rows = [line for line in markdown.splitlines() if line.startswith("| cats | mae")]
    assert [row.split(" | ")[1] for row in gate_rows] == ["mae \\[a\\]", "mae \\[unlabelled\\]"]
    assert "2 seeds (seed0, seed1)" in markdown


def test_fps_sidecar_of_a_frame_folder_or_array(seeded, tmp_path):
    from foresight_eval.io.clips import open_clip

    (seeded / "refs" / "a.fps.json").write_text('{"fps": 8}')
    assert clip_timing(open_clip(seeded / "refs" / "a.npy"), fps=4.0).fps == 8.0  # the clip's own rate wins
    assert clip_timing(open_clip(seeded / "refs" / "b.npy"), fps=4.0).fps == 4.0
    run = score(seeded / "preds" / "seed0", seeded / "refs", ["mae"], device="cpu", bootstrap=FAST,
                options=ScoreOptions(fps=4.0))
    by_clip = {p.video: p for p in run.pairs}
    assert by_clip["a"].status == "error" and "prediction is 4 fps, reference is 8 fps" in by_clip["a"].error
    assert by_clip["b"].ok and by_clip["b"].media["fps"] == 4.0
    (seeded / "refs" / "c.fps.json").write_text('{"fps": -1}')
    with pytest.raises(Exception, match="fps must be a positive number"):
        clip_timing(open_clip(seeded / "refs" / "c.npy"))


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_single_process_seeded_study(tmp_path):
    """Seeds, categories and a subset under torchrun: rank 0's run folder equals one process's."""
    import os
    import subprocess
    import sys

    from tests.test_scale_out import assert_same_run_folder

    args = [str(FIXTURES / "study" / "seeds"), str(FIXTURES / "refs"), "--seeds", "--context", "4", "-m", "mae",
            "--categories", str(FIXTURES / "study" / "categories.csv"), "--limit", "3", "--device", "cpu",
            "--bootstrap-resamples", "200"]
    single, distributed = tmp_path / "single", tmp_path / "distributed"
    subprocess.run([sys.executable, "-m", "foresight_eval", "score", *args, "--out", str(single)],
                   capture_output=True, text=True, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "foresight_eval", "score", *args, "--out", str(distributed)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_run_folder(single, distributed)
    summary = json.loads((distributed / "summary.json").read_text())
    assert summary["study"]["subset"]["selected"] == 3 and summary["study"]["seeds"]["rows"] == {"seed0": 3, "seed1": 3}


def test_check_baseline_on_a_seeded_run_pairs_clips_averaged_over_seeds(seeded, tmp_path):
    from foresight_eval.check import check
    from foresight_eval.compare import Tolerance

    sets = {f"s{s}": seeded / "preds" / f"seed{s}" for s in range(3)}
    score(sets, seeded / "refs", ["mae"], device="cpu", bootstrap=FAST, run_dir=tmp_path / "seeded")
    score(seeded / "preds" / "seed0", seeded / "refs", ["mae"], device="cpu", bootstrap=FAST, run_dir=tmp_path / "base")
    # seeds 1 and 2 are noisier than seed 0: the seeded run's clip means are worse on every clip. Paired by
    # clip (3 pairs, not 9 rows), the exact sign-flip test cannot go below p = 2/2^3 = 0.25, so three clips
    # cannot show the regression: the check passes and says so (docs/statistics.md).
    result = check(tmp_path / "seeded", baseline=tmp_path / "base", max_regression=Tolerance(0.0), bootstrap=FAST)
    entry = result.regression.entries[0]
    assert entry.comparison.n == 3 and entry.comparison.diff > 0
    assert entry.comparison.p_min == 0.25 and entry.status == "pass" and "not significant" in entry.note
