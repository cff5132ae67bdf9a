"""Run folders written before a scoring option was renamed keep working: ``ScoreOptions.frames`` became
``frame_mismatch`` (the frame-count mismatch policy it is; ``--frames`` stays as the CLI's old name).

``tests/old_runs/frames-min/`` is a real run folder written by the code before the rename
(``score fixtures/preds/blur_mild fixtures/refs --context 4 --frames min -m psnr,mae --device cpu``):
its summary.json, journal header and config.yaml say ``frames: min``. It is read, compared, checked,
reported and resumed as a run written today."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from foresight_eval import ScoreOptions, score
from foresight_eval.cli import main
from foresight_eval.compare import compare, parameter_differences
from foresight_eval.config import RunConfig, read_config_file
from foresight_eval.errors import UsageError
from foresight_eval.options import current_option_names
from foresight_eval.profiles import load_profile
from foresight_eval.runs import load_run
from foresight_eval.study import Study

OLD_RUN = Path(__file__).resolve().parent / "old_runs" / "frames-min"
METRICS = ["psnr", "mae"]


@pytest.fixture
def old_run(tmp_path) -> Path:
    assert json.loads((OLD_RUN / "summary.json").read_text())["options"]["frames"] == "min"  # written before
    copy = tmp_path / "old"
    shutil.copytree(OLD_RUN, copy)
    return copy


def rescore(fixtures_dir, run_dir, frame_mismatch="min", **kwargs):
    return score(fixtures_dir / "preds" / "blur_mild", fixtures_dir / "refs", METRICS, device="cpu",
                 options=ScoreOptions(context=4, frame_mismatch=frame_mismatch), run_dir=run_dir, **kwargs)


def test_an_old_summary_reads_under_todays_option_names(old_run):
    options = load_run(old_run).summary["options"]
    assert options["frame_mismatch"] == "min" and "frames" not in options


def test_an_old_run_resumes_without_rescoring_and_compares_equal_to_a_new_one(old_run, fixtures_dir, tmp_path):
    journal = old_run / "partial" / "rank-00000.jsonl"
    assert '"frames": "min"' in journal.read_text().splitlines()[0]
    before = len(journal.read_text().splitlines())
    resumed = rescore(fixtures_dir, old_run, resume=True)
    assert not resumed.failed
    assert len(journal.read_text().splitlines()) == before, "every finished pair of the old journal was kept"

    new = tmp_path / "new"
    rescore(fixtures_dir, new)
    assert parameter_differences([load_run(OLD_RUN), load_run(new)]) == []
    paired = compare([OLD_RUN, new]).pairs
    # The old folder's psnr and mae came from the float32 frames; today's CPU path sums the decoded 8-bit
    # differences exactly (metrics/pixel.py): the same values to float32 rounding of the frames.
    assert paired and all(abs(entry.diff) <= 1e-7 * abs(entry.mean_a) for entry in paired)

    other = tmp_path / "other"
    rescore(fixtures_dir, other, frame_mismatch="error", study=Study(limit=1))
    assert parameter_differences([load_run(OLD_RUN), load_run(other)]) == [
        "options.frame_mismatch: 'min' (frames-min), 'error' (other)"]


def test_resuming_an_old_journal_with_another_policy_is_refused(old_run, fixtures_dir):
    with pytest.raises(UsageError, match="options.frame_mismatch: was 'min', now 'error'"):
        rescore(fixtures_dir, old_run, frame_mismatch="error", resume=True)


def test_old_run_folders_go_through_check_and_report(tmp_path):
    runner = CliRunner()
    checked = runner.invoke(main, ["check", str(OLD_RUN), "--baseline", str(OLD_RUN)])
    assert checked.exit_code == 0, checked.output
    reported = runner.invoke(main, ["report", str(OLD_RUN), str(OLD_RUN), "-o", str(tmp_path / "report")])
    assert reported.exit_code == 0, reported.output


def test_an_old_config_file_and_profile_take_frames(old_run, tmp_path):
    values = read_config_file(old_run / "config.yaml")
    assert values["frame_mismatch"] == "min" and "frames" not in values
    assert RunConfig(**values).score_kwargs()["options"].frame_mismatch == "min"

    profile = tmp_path / "old.yaml"
    profile.write_text("name: old\ndescription: d\nreference: r\nmetrics: [psnr]\noptions: {frames: min}\n")
    assert load_profile(profile).options == {"frame_mismatch": "min"}


def test_the_old_name_is_still_taken_and_never_recorded():
    assert ScoreOptions(frames="min") == ScoreOptions(frame_mismatch="min")
    with pytest.raises(UsageError, match="not both"):
        ScoreOptions(frames="error", frame_mismatch="min")
    assert current_option_names({"context": 4, "frames": "min"}) == {"context": 4, "frame_mismatch": "min"}
    assert current_option_names({"frames": "error", "frame_mismatch": "min"}) == {"frame_mismatch": "min"}


def test_the_cli_takes_both_flag_names(tmp_path, fixtures_dir):
    for flag in ("--frame-mismatch", "--frames"):
        out = tmp_path / flag.strip("-")
        result = CliRunner().invoke(main, ["score", str(fixtures_dir / "preds" / "blur_mild"), str(fixtures_dir / "refs"),
                                           "--context", "4", flag, "min", "-m", "mae", "--device", "cpu",
                                           "--limit", "1", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "summary.json").read_text())["options"]["frame_mismatch"] == "min"
        assert "frame_mismatch: min" in (out / "config.yaml").read_text()
