"""The run config (foresight_eval.config): `score --config run.yaml` runs what the same command line runs,
the command line overrides the file, bad files are usage errors naming file and key, and the config.yaml
written into every run folder replays the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from foresight_eval.cli import main
from foresight_eval.config import CONFIG_FILE, RunConfig, read_config_file
from foresight_eval.errors import UsageError
from foresight_eval.runs import load_run

# What a run records of its parameters (the manifest's command line and times differ between runs).
RECORDED = ("options", "bootstrap", "extra", "profile", "skipped_metrics", "unmatched")


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def clips(fixtures_dir, tmp_path) -> tuple[Path, Path]:
    """Two fixture clip pairs, copied so the run's inputs are small."""
    preds, refs = tmp_path / "preds", tmp_path / "refs"
    for source, target in ((fixtures_dir / "preds" / "blur_mild", preds), (fixtures_dir / "refs", refs)):
        target.mkdir()
        for name in ("clip00.mp4", "clip01.mp4"):
            shutil.copy(source / name, target / name)
    return preds, refs


def score(runner, *args: str):
    result = runner.invoke(main, ["score", *map(str, args), "--json"])
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


def means(summary: dict) -> dict[str, float]:
    return {name: figures["mean"] for name, figures in summary["metrics"].items()}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_yaml_file_runs_what_the_same_command_line_runs(runner, clips, tmp_path):
    preds, refs = clips
    _, from_cli = score(runner, preds, refs, "--context", "2", "-m", "psnr,mae", "-p", "psnr.data_range=1.0",
                        "--bootstrap-resamples", "200", "--seed", "3", "--extra", "latency=0.5")
    config = write_yaml(tmp_path / "run.yaml", {
        "preds": str(preds), "refs": str(refs), "context": 2, "metrics": ["psnr", "mae"],
        "params": {"psnr": {"data_range": 1.0}}, "bootstrap_resamples": 200, "seed": 3,
        "extra": {"latency": 0.5}})
    result, from_file = score(runner, "--config", config)
    assert result.exit_code == 0, result.output
    assert set(from_file["metrics"]) == {"psnr", "mae"}
    assert means(from_file) == means(from_cli)
    for key in RECORDED:
        assert from_file[key] == from_cli[key], key
    assert from_file["metrics"]["psnr"]["params"] == from_cli["metrics"]["psnr"]["params"]
    assert from_file["bootstrap"]["n_resamples"] == 200 and from_file["options"]["context"] == 2


def test_the_command_line_wins_over_the_file(runner, clips, tmp_path, fixtures_dir):
    preds, refs = clips
    config = write_yaml(tmp_path / "run.yaml", {
        "preds": str(fixtures_dir / "preds" / "noise_mild"), "refs": str(refs), "context": 2,
        "metrics": "psnr,mae", "params": {"psnr": {"data_range": 2.0}}, "extra": {"a": 1, "b": 2}})
    result, summary = score(runner, preds, "--config", config, "--context", "3", "-p", "psnr.data_range=1.0",
                            "--extra", "b=5")
    assert result.exit_code == 0, result.output
    assert summary["options"]["context"] == 3  # the command line's
    assert summary["metrics"]["psnr"]["params"]["data_range"] == 1.0
    assert summary["extra"] == {"a": 1, "b": 5}  # merged name by name
    assert summary["manifest"]["inputs"]["predictions"]["root"] == str(preds)  # PREDS given: the file's replaced
    assert set(summary["metrics"]) == {"psnr", "mae"}  # not given: the file's
    assert "command line" in runner.invoke(main, ["score", "--help"], terminal_width=200).output


def test_environment_variables_fill_only_what_the_file_leaves_out(runner, clips, tmp_path, monkeypatch):
    preds, refs = clips
    monkeypatch.setenv("FORESIGHT_WEIGHTS", str(tmp_path / "from_env"))
    args = ["-m", "mae", "--bootstrap-resamples", "200", "--json"]
    assert runner.invoke(main, ["score", str(preds), str(refs), *args, "--out", str(tmp_path / "a")]).exit_code == 0
    assert read_config_file(tmp_path / "a" / CONFIG_FILE)["weights_dir"] == tmp_path / "from_env"
    config = write_yaml(tmp_path / "run.yaml", {"weights_dir": str(tmp_path / "from_file")})
    result = runner.invoke(main, ["score", str(preds), str(refs), "--config", str(config), *args,
                                  "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert read_config_file(tmp_path / "b" / CONFIG_FILE)["weights_dir"] == tmp_path / "from_file"


@pytest.mark.parametrize("data, expected", [
    ({"contxt": 2}, "unknown key 'contxt' (did you mean 'context'?)"),
    ({"nonsense_key": 1}, "unknown key 'nonsense_key'"),
    ({"context": "two"}, "context must be an integer, got 'two'"),
    ({"strict": "yes"}, "strict must be true or false, got 'yes'"),
    ({"params": {"psnr": 1.0}}, "params must be a mapping metric -> {parameter: value}"),
    ({"include": [1, 2]}, "include must be a list of strings"),
    ({"fps": True}, "fps must be a number or null"),
])
def test_bad_keys_and_types_are_usage_errors_naming_file_and_key(runner, clips, tmp_path, data, expected):
    preds, refs = clips
    config = write_yaml(tmp_path / "bad.yaml", {"preds": str(preds), "refs": str(refs), **data})
    result = runner.invoke(main, ["score", "--config", str(config)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert str(config) in message and expected in message


def test_a_file_that_is_not_a_mapping_and_a_missing_preds_are_usage_errors(runner, tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    result = runner.invoke(main, ["score", "--config", str(listing)])
    assert result.exit_code == 2 and "expected a mapping" in result.output
    empty = write_yaml(tmp_path / "empty.yaml", {"context": 1})
    result = runner.invoke(main, ["score", "--config", str(empty)])
    assert result.exit_code == 2 and "give PREDS and REFS" in " ".join(result.output.split())


def test_every_run_folder_gets_a_config_that_replays_the_run(runner, clips, tmp_path, monkeypatch):
    preds, refs = clips
    monkeypatch.chdir(tmp_path)  # relative paths, recorded as given with the folder they are relative to
    result, first = score(runner, "preds", "refs", "--context", "2", "-m", "psnr,ssim", "--include", "*",
                          "--bootstrap-resamples", "300", "--out", "runs/x")
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((tmp_path / "runs" / "x" / CONFIG_FILE).read_text(encoding="utf-8"))
    assert recorded["preds"] == "preds" and recorded["out"] == "runs/x" and recorded["cwd"] == str(tmp_path)
    assert recorded["metrics"] == ["psnr", "ssim"] and recorded["include"] == ["*"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a replay from another folder reads the same inputs
    result, replay = score(runner, "--config", tmp_path / "runs" / "x" / CONFIG_FILE, "--out", "replay")
    assert result.exit_code == 0, result.output
    assert means(replay) == means(first)
    for key in RECORDED:
        assert replay[key] == first[key], key
    assert replay["manifest"]["study"] == first["manifest"]["study"]
    assert {name: f["params"] for name, f in replay["metrics"].items()} == \
           {name: f["params"] for name, f in first["metrics"].items()}
    assert replay["manifest"]["inputs"]["references"]["sha256"] == first["manifest"]["inputs"]["references"]["sha256"]
    # --out on the command line is relative to where the replay runs, and that folder gets its config too
    assert (elsewhere / "replay" / "summary.json").exists()
    assert read_config_file(elsewhere / "replay" / CONFIG_FILE)["out"] == elsewhere / "replay"


def test_the_python_config_runs_and_records_itself(clips, tmp_path):
    preds, refs = clips
    config = RunConfig(preds=preds, refs=refs, metrics=("mae",), context=1, bootstrap_resamples=200,
                       out=tmp_path / "run")
    run = config.run()
    assert set(run.metrics) == {"mae"}
    assert RunConfig.from_yaml(tmp_path / "run" / CONFIG_FILE) == config
    with pytest.raises(UsageError, match="unknown key 'metric'"):
        RunConfig.from_mapping({"metric": ["mae"]}, "mine.yaml")


def test_an_old_run_folder_without_config_yaml_still_loads(runner, clips, tmp_path):
    preds, refs = clips
    result, _ = score(runner, preds, refs, "-m", "mae", "--bootstrap-resamples", "200", "--out", tmp_path / "old")
    assert result.exit_code == 0, result.output
    (tmp_path / "old" / CONFIG_FILE).unlink()
    run = load_run(tmp_path / "old")
    assert "mae" in run.metrics and len(run.per_video) == 2


def test_seeds_come_from_the_file_and_replay(runner, clips, tmp_path, fixtures_dir):
    preds, refs = clips
    second = tmp_path / "second"
    second.mkdir()
    for name in ("clip00.mp4", "clip01.mp4"):
        shutil.copy(fixtures_dir / "preds" / "noise_mild" / name, second / name)
    config = write_yaml(tmp_path / "seeds.yaml", {"preds": str(preds), "refs": str(refs), "preds_seed": [str(second)],
                                                  "metrics": ["mae"], "bootstrap_resamples": 200,
                                                  "out": str(tmp_path / "seeded")})
    result, first = score(runner, "--config", config)
    assert result.exit_code == 0, result.output
    assert first["study"]["seeds"]["names"] == ["preds", "second"]
    result, replay = score(runner, "--config", tmp_path / "seeded" / CONFIG_FILE, "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert means(replay) == means(first) and replay["study"]["seeds"] == first["study"]["seeds"]
