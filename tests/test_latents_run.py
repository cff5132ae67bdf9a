"""The latents run through the run driver: its run folder, journal and --resume, and config.yaml replay.

A resumed run must write what an uninterrupted one writes, including the per-item bootstrap CI of a single
file pair (its item values travel through the journal as JSON), and a journal of another configuration
is refused as `score` refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from foresight_eval.cli import main
from foresight_eval.config import CONFIG_FILE, LatentsConfig
from foresight_eval.errors import UsageError
from foresight_eval.io.latents import LatentOptions
from foresight_eval.latents import latents

METRICS = ["cka", "neighbourhood_recall", "intrinsic_dim"]
PARAMS = {"neighbourhood_recall": {"k": 5}}
TIMING_FIELDS = ("started", "finished", "command", "torch_threads", "timings")


def write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": torch.as_tensor(array).contiguous()}, str(path))


@pytest.fixture
def sets(tmp_path, rng) -> tuple[Path, Path]:
    """Four latent file pairs, (40, 8) features of shared factors on both sides, and one broken pair."""
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("p", "q", "r", "s"):
        z = rng.normal(size=(40, 3))
        write(a / f"{name}.safetensors", z @ rng.normal(size=(3, 8)))
        write(b / f"{name}.safetensors", z @ rng.normal(size=(3, 8)) + 0.1 * rng.normal(size=(40, 8)))
    write(a / "t.safetensors", rng.normal(size=(7, 8)))  # 7 items against 40: an error row
    write(b / "t.safetensors", rng.normal(size=(40, 8)))
    return a, b


def run_folder(run_dir: Path) -> dict:
    """The run folder's files as compared between runs (times and the command line differ)."""
    summary = without_times(json.loads((run_dir / "summary.json").read_text()))
    return {"summary": summary, **{name: (run_dir / name).read_text() for name in ("per_video.csv", "per_frame.csv")}}


def without_times(summary: dict) -> dict:
    for field in TIMING_FIELDS:
        summary["manifest"].pop(field)
    return summary


def journal_lines(run_dir: Path) -> list[str]:
    return (run_dir / "partial" / "rank-00000.jsonl").read_text().splitlines()


def test_an_interrupted_latents_run_resumes_to_the_uninterrupted_run_folder(sets, tmp_path):
    a, b = sets
    complete = tmp_path / "complete"
    run = latents(a, b, METRICS, params=PARAMS, device="cpu", run_dir=complete)
    assert [pair.status for pair in run.pairs] == ["ok", "ok", "ok", "ok", "error"]
    assert len(journal_lines(complete)) == 1 + 5

    interrupted = tmp_path / "interrupted"
    seen = []

    def die_after_two(pair):
        seen.append(pair.video)
        if len(seen) == 2:
            raise KeyboardInterrupt  # as if the process were killed here

    with pytest.raises(KeyboardInterrupt):
        latents(a, b, METRICS, params=PARAMS, device="cpu", run_dir=interrupted, on_pair=die_after_two)
    assert not (interrupted / "summary.json").exists() and len(journal_lines(interrupted)) == 1 + 2
    latents(a, b, METRICS, params=PARAMS, device="cpu", run_dir=interrupted, resume=True)
    assert run_folder(interrupted) == run_folder(complete)
    assert len(journal_lines(interrupted)) == 1 + 5, "only the three missing pairs were scored again"


def test_a_partial_journal_cut_mid_line_is_finished_by_resume(sets, tmp_path):
    """A run folder as a kill leaves it: the header, two finished pairs and half of a third line."""
    a, b = sets
    complete = tmp_path / "complete"
    latents(a, b, METRICS, params=PARAMS, device="cpu", run_dir=complete)
    partial = tmp_path / "partial_run"
    lines = journal_lines(complete)
    (partial / "partial").mkdir(parents=True)
    (partial / "partial" / "rank-00000.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    rescored = []
    latents(a, b, METRICS, params=PARAMS, device="cpu", run_dir=partial, resume=True,
            on_pair=lambda pair: rescored.append(pair.video))
    assert run_folder(partial) == run_folder(complete)
    assert len(journal_lines(partial)) == 1 + 2 + 1 + 3  # the cut line is ended, then three pairs are scored


def test_a_single_pair_keeps_its_item_bootstrap_through_resume(sets, tmp_path):
    """One file pair: the CI of neighbourhood_recall is a bootstrap over its items, whose values must come
    back from the journal exactly; a resume of the finished run rescores nothing and writes the same."""
    a, b = sets
    run_dir = tmp_path / "run"
    first = latents(a / "p.safetensors", b / "p.safetensors", METRICS, params=PARAMS, device="cpu", run_dir=run_dir)
    recall = first.metrics["neighbourhood_recall"]
    assert recall.definition["ci"] == "bootstrap over items" and recall.n == 40
    assert recall.ci_low < recall.mean < recall.ci_high
    before = run_folder(run_dir)
    resumed = latents(a / "p.safetensors", b / "p.safetensors", METRICS, params=PARAMS, device="cpu",
                      run_dir=run_dir, resume=True)
    assert len(journal_lines(run_dir)) == 1 + 1, "the finished pair was reused, not scored again"
    assert (resumed.metrics["neighbourhood_recall"].ci_low, resumed.metrics["neighbourhood_recall"].ci_high) == \
        (recall.ci_low, recall.ci_high)
    assert run_folder(run_dir) == before


def test_resume_refuses_another_configuration_and_rescores_changed_files(sets, tmp_path, rng):
    a, b = sets
    run_dir = tmp_path / "run"
    latents(a, b, ["cka"], device="cpu", run_dir=run_dir)
    with pytest.raises(UsageError, match="metrics.neighbourhood_recall: was None"):
        latents(a, b, ["cka", "neighbourhood_recall"], device="cpu", run_dir=run_dir, resume=True)
    with pytest.raises(UsageError, match="options.key: was None, now 'latents'"):
        latents(a, b, ["cka"], options=LatentOptions(key="latents"), device="cpu", run_dir=run_dir, resume=True)
    write(a / "t.safetensors", rng.normal(size=(40, 8)))  # the broken pair is mended
    rescored = []
    run = latents(a, b, ["cka"], device="cpu", run_dir=run_dir, resume=True,
                  on_pair=lambda pair: rescored.append(pair.video))
    assert not run.failed
    assert len(journal_lines(run_dir)) == 1 + 5 + 1, "only the changed pair was scored again"


def test_a_score_journal_is_not_resumed_as_a_latents_run(sets, tmp_path, fixtures_dir):
    from foresight_eval import score

    run_dir = tmp_path / "run"
    score(fixtures_dir / "preds" / "blur_mild" / "clip00.mp4", fixtures_dir / "refs" / "clip00.mp4", ["mae"],
          device="cpu", run_dir=run_dir)
    with pytest.raises(UsageError, match="was scored differently"):
        latents(*sets, ["cka"], device="cpu", run_dir=run_dir, resume=True)


def test_cli_out_resume_and_config_replay(sets, tmp_path):
    a, b = sets
    runner = CliRunner()
    run_dir = tmp_path / "run"
    args = ["latents", str(a), str(b), "-m", "cka,neighbourhood_recall", "-p", "neighbourhood_recall.k=5",
            "--device", "cpu", "--bootstrap-resamples", "300", "--seed", "4", "--extra", "note=1", "--json"]
    first = runner.invoke(main, [*args, "--out", str(run_dir)])
    assert first.exit_code == 1, first.output  # the broken pair
    config = LatentsConfig.from_yaml(run_dir / CONFIG_FILE)
    assert (config.a, config.metrics, config.params, config.bootstrap_resamples) == \
        (a, ("cka", "neighbourhood_recall"), {"neighbourhood_recall": {"k": 5}}, 300)

    resumed = runner.invoke(main, [*args, "--out", str(run_dir), "--resume"])
    assert resumed.exit_code == 1 and without_times(json.loads(resumed.stdout)) == without_times(json.loads(first.stdout))

    replay = runner.invoke(main, ["latents", "--config", str(run_dir / CONFIG_FILE), "--out", str(tmp_path / "replay"),
                                  "--json"])
    assert replay.exit_code == 1, replay.output
    summary, original = json.loads(replay.stdout), json.loads(first.stdout)
    assert {name: m["mean"] for name, m in summary["metrics"].items()} == \
        {name: m["mean"] for name, m in original["metrics"].items()}
    for key in ("options", "bootstrap", "extra", "skipped_metrics", "unmatched"):
        assert summary[key] == original[key], key
    assert (tmp_path / "replay" / CONFIG_FILE).is_file()


def test_cli_refuses_an_unusable_out_and_resume_without_out(sets, tmp_path):
    a, b = sets
    runner = CliRunner()
    taken = tmp_path / "notes"
    taken.mkdir()
    (taken / "todo.txt").write_text("mine")
    result = runner.invoke(main, ["latents", str(a), str(b), "-m", "cka", "--device", "cpu", "--out", str(taken)])
    assert result.exit_code == 2 and "not a run folder" in result.output
    assert (taken / "todo.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("")
    result = runner.invoke(main, ["latents", str(a), str(b), "-m", "cka", "--device", "cpu", "--out", str(a_file / "x")])
    assert result.exit_code == 2 and "cannot create the run folder" in result.output
    result = runner.invoke(main, ["latents", str(a), str(b), "-m", "cka", "--device", "cpu", "--resume"])
    assert result.exit_code == 2 and "--resume needs the run folder" in result.output
    result = runner.invoke(main, ["latents", "-m", "cka"])
    assert result.exit_code == 2 and "give A and B" in result.output


def test_a_config_file_with_a_score_key_names_it(sets, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"a: {sets[0]}\nb: {sets[1]}\ncontext: 2\n")
    result = CliRunner().invoke(main, ["latents", "--config", str(config)])
    assert result.exit_code == 2 and "unknown key 'context'" in result.output
