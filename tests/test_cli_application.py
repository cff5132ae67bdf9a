"""The command line as one application: every command's exceptions map to one exit status in one place
(cli.common.application_errors, run by the group), and library errors name fields, which the CLI prints
as flags."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from foresight_eval import ScoreOptions
from foresight_eval.cli import main
from foresight_eval.cli.common import EXIT_INTERNAL, cli_message
from foresight_eval.errors import InputError, MetricUnavailable, UsageError, field_ref
from foresight_eval.study import Study


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def broken_catalog(monkeypatch):
    """A bug in a command's code path: `metrics` raises an exception no layer expects."""
    def crash(*args, **kwargs):
        raise ZeroDivisionError("division by zero in the catalogue")

    monkeypatch.setattr("foresight_eval.catalog.metric_catalog", crash)


def test_an_unexpected_exception_is_one_line_and_exit_3(runner, broken_catalog):
    result = runner.invoke(main, ["metrics"])
    assert result.exit_code == EXIT_INTERNAL == 3
    lines = result.output.strip().splitlines()
    assert lines == ["internal error: ZeroDivisionError: division by zero in the catalogue (run with --debug for "
                     "the traceback)"]


def test_debug_prints_the_traceback(runner, broken_catalog):
    result = runner.invoke(main, ["--debug", "metrics"])
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.output and "in crash" in result.output
    assert result.output.rstrip().endswith("internal error: ZeroDivisionError: division by zero in the catalogue")


def test_a_deliberate_error_that_is_no_usage_error_exits_1(runner, monkeypatch):
    def unavailable(*args, **kwargs):
        raise MetricUnavailable(f"needs {field_ref('weights_dir')}")

    monkeypatch.setattr("foresight_eval.catalog.metric_catalog", unavailable)
    result = runner.invoke(main, ["metrics"])
    assert (result.exit_code, result.output.strip()) == (1, "error: needs --weights-dir")


def test_usage_errors_exit_2_and_name_the_flag(runner, tmp_path):
    (tmp_path / "preds").mkdir()
    (tmp_path / "refs").mkdir()
    result = runner.invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), "--context", "-1"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --context must be >= 0"


def test_a_library_error_names_the_field_and_the_cli_the_flag():
    with pytest.raises(UsageError) as raised:
        ScoreOptions(fps_mismatch="sometimes")
    assert str(raised.value).startswith("fps_mismatch must be one of")
    assert cli_message(raised.value).startswith("--fps-mismatch must be one of")

    with pytest.raises(UsageError) as raised:
        Study(limit=0)
    assert (str(raised.value), cli_message(raised.value)) == ("limit must be >= 1", "--limit must be >= 1")


@pytest.mark.parametrize("name, value, python, cli", [
    ("resize", "ref", "resize='ref'", "--resize ref"),
    ("run_dir", "runs/x", "run_dir='runs/x'", "--out runs/x"),
    ("strict", True, "strict=True", "--strict"),
    ("batch_size", 0, "batch_size=0", "--batch-size 0"),
    ("preds", None, "preds=None", "PREDS None"),
])
def test_field_references_render_for_each_audience(name, value, python, cli):
    error = InputError(f"see {field_ref(name, value)} here")
    assert str(error) == f"see {python} here"
    assert cli_message(error) == f"see {cli} here"
    assert str(InputError(f"{field_ref(name)}!")) == f"{name}!"


def test_a_non_package_error_is_printed_as_it_is():
    assert cli_message(FileNotFoundError("no such file: x")) == "no such file: x"


@pytest.mark.parametrize("with_out", [True, False])
def test_ctrl_c_exits_130_and_says_how_to_resume_a_run_folder(runner, tmp_path, monkeypatch, with_out):
    def interrupted(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("foresight_eval.config.RunConfig.run", interrupted)
    (tmp_path / "preds").mkdir()
    (tmp_path / "refs").mkdir()
    out = ["--out", str(tmp_path / "run")] if with_out else []
    result = runner.invoke(main, ["score", str(tmp_path / "preds"), str(tmp_path / "refs"), *out])
    assert result.exit_code == 130
    assert result.output.startswith("interrupted")
    assert ("--resume to finish the run" in result.output) == with_out
