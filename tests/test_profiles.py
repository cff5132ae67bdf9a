"""Compatibility profiles: loading and validating profile files, applying them to a run (conflicts refused),
recording them in the run folder, the `profiles` command, and compare refusing runs of different profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from foresight_eval.cli import main
from foresight_eval.compare import ParameterMismatch, compare
from foresight_eval.engine import score
from foresight_eval.options import ScoreOptions
from foresight_eval.errors import UsageError
from foresight_eval.io.files import sha256_file
from foresight_eval.metrics.registry import create
from foresight_eval.profiles import ProfileError, apply_profile, load_profile, profile_names
from foresight_eval.stats import BootstrapConfig
from tests.clipmaker import gradient_clip
from tests.fake_runs import make_run, write_run

PROFILE = """name: mine
description: A test convention.
reference: "here"
metrics: [mse, ssim, psnr]
params:
  mse: {reduction: sum}
  ssim: {mode: skimage}
options: {resize: ref}
"""


@pytest.fixture
def clips(tmp_path):
    for side, seed in (("preds", 1), ("refs", 0)):
        (tmp_path / side).mkdir()
        for clip in ("a", "b"):
            np.save(tmp_path / side / f"{clip}.npy", gradient_clip(5, 24, 32, seed=seed + (clip == "b")))
    return tmp_path / "preds", tmp_path / "refs"


@pytest.fixture
def profile_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(PROFILE, encoding="utf-8")
    return path


def test_packaged_profiles_load_and_validate():
    assert {"openstl", "common-metrics", "vbench"} <= set(profile_names())
    for name in profile_names():
        profile = load_profile(name)
        assert profile.name == name and profile.metrics and len(profile.sha256) == 64
    openstl = load_profile("openstl")
    assert ("mse.reduction", "mean", "sum") in openstl.settings()
    assert ("ssim.data_range", 1.0, 2.0) in openstl.settings()


@pytest.mark.parametrize("edit, key, message", [
    (("metrics: [mse, ssim, psnr]", "metrics: [mse, nope]"), "metrics", "unknown metric 'nope'"),
    (("mse: {reduction: sum}", "mse: {reductoin: sum}"), "params.mse.reductoin", "has no parameter 'reductoin'"),
    (("mse: {reduction: sum}", "mse: {reduction: max}"), "params.mse", "must be one of"),
    (("ssim: {mode: skimage}", "lpipz: {net: alex}"), "params.lpipz", "unknown metric 'lpipz'"),
    (("options: {resize: ref}", "options: {window: 5}"), "options.window", "unknown option"),
    (("options: {resize: ref}", "options: {batch_size: 4}"), "options.batch_size", "unknown option"),
    (("options: {resize: ref}", "options: {resize: maybe}"), "options", "options: resize must be"),
    (("name: mine", "name: mine\nthreshold: 3"), "threshold", "unknown key"),
    (("reference: \"here\"", "reference: \"\""), "reference", "non-empty string"),
])
def test_profile_errors_name_the_file_and_the_key(tmp_path, edit, key, message):
    path = tmp_path / "bad.yaml"
    path.write_text(PROFILE.replace(*edit), encoding="utf-8")
    with pytest.raises(ProfileError) as raised:
        load_profile(path)
    assert str(raised.value).startswith(f"{path}: {key}: ") and message in str(raised.value)


def test_unknown_profile_names_the_packaged_ones(tmp_path):
    with pytest.raises(ProfileError, match="neither a profile file nor a profile name.*openstl"):
        load_profile("opensttl")
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "missing.yaml")


def test_apply_profile_merges_and_refuses_conflicts(profile_file):
    profile = load_profile(profile_file)
    names, params, options = apply_profile(profile, None, {"ssim": {"k1": 0.02}}, ScoreOptions(context=2))
    assert names == ["mse", "ssim", "psnr"]
    assert params == {"ssim": {"k1": 0.02, "mode": "skimage"}, "mse": {"reduction": "sum"}}
    assert (options.resize, options.context) == ("ref", 2)
    names, params, _ = apply_profile(profile, ["ssim"], {"ssim": {"mode": "skimage"}}, ScoreOptions())
    assert names == ["ssim"] and params == {"ssim": {"mode": "skimage"}}  # the same value is no conflict
    with pytest.raises(UsageError, match=r"-p ssim.mode='wang' conflicts with profile 'mine', which sets ssim.mode='skimage'"):
        apply_profile(profile, None, {"ssim": {"mode": "wang"}}, ScoreOptions())
    with pytest.raises(UsageError, match="metrics='lpips': not scored by profile 'mine'"):
        apply_profile(profile, ["ssim", "lpips"], None, ScoreOptions())
    vbench = load_profile("vbench")
    with pytest.raises(UsageError, match="context=4 conflicts with profile 'vbench', which sets context=0"):
        apply_profile(vbench, None, None, ScoreOptions(context=4))


def test_score_under_a_profile_records_it(clips, profile_file, tmp_path):
    preds, refs = clips
    run = score(preds, refs, profile=profile_file, bootstrap=BootstrapConfig(n_resamples=10), run_dir=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    recorded = summary["profile"]
    assert recorded["name"] == "mine" and recorded["sha256"] == sha256_file(profile_file)
    assert recorded["params"] == {"mse": {"reduction": "sum"}, "ssim": {"mode": "skimage"}}
    assert recorded["options"] == {"resize": "ref"} and summary["options"]["resize"] == "ref"
    assert list(summary["metrics"]) == ["mse", "ssim", "psnr"]
    assert summary["metrics"]["mse"]["params"]["reduction"] == "sum"
    assert summary["metrics"]["ssim"]["params"]["window_size"] == 7
    # the summed MSE is the per-pixel mean times the pixels of a frame
    plain = score(preds, refs, ["mse"], bootstrap=BootstrapConfig(n_resamples=10))
    assert plain.profile is None and plain.summary_dict()["profile"] is None
    assert run.pairs[0].values["mse"] == pytest.approx(plain.pairs[0].values["mse"] * 3 * 24 * 32)


def test_cli_score_profile_and_conflicts(clips, tmp_path):
    preds, refs = map(str, clips)
    runner = CliRunner()
    result = runner.invoke(main, ["score", preds, refs, "--profile", "openstl", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["profile"]["name"] == "openstl" and set(summary["metrics"]) == {"mse", "mae", "ssim", "psnr"}
    narrowed = runner.invoke(main, ["score", preds, refs, "--profile", "openstl", "-m", "ssim", "--json"])
    assert narrowed.exit_code == 0 and set(json.loads(narrowed.stdout)["metrics"]) == {"ssim"}
    conflict = runner.invoke(main, ["score", preds, refs, "--profile", "openstl", "-p", "ssim.mode=wang"])
    assert conflict.exit_code == 2
    assert "-p ssim.mode='wang' conflicts with profile 'openstl', which sets ssim.mode='skimage'" in conflict.output
    option = runner.invoke(main, ["score", preds, refs, "--profile", "vbench", "--context", "2"])
    assert option.exit_code == 2 and "--context 2 conflicts with profile 'vbench'" in option.output


def test_cli_profiles_lists_and_shows(tmp_path, profile_file):
    runner = CliRunner()
    listed = runner.invoke(main, ["profiles"])
    assert listed.exit_code == 0, listed.output
    for text in ("openstl", "common-metrics", "vbench", "psnr.cap: None -> 100"):
        assert text in listed.output
    shown = runner.invoke(main, ["profiles", "show", "openstl", "--json"])
    record = json.loads(shown.stdout)
    assert record["reference"].startswith("chengtan9907/OpenSTL@c74deb5")
    assert {"setting": "mse.reduction", "default": "mean", "value": "sum", "changed": True} in record["settings"]
    own = runner.invoke(main, ["profiles", "show", str(profile_file)])
    assert own.exit_code == 0 and "ssim.mode" in own.output and "skimage" in own.output
    missing = runner.invoke(main, ["profiles", "show", "nope"])
    assert missing.exit_code == 2 and "neither a profile file nor a profile name" in missing.output


def _run_under(folder, profile):
    run = make_run({"ssim": [0.9, 0.8, 0.85]})
    run.profile = None if profile is None else load_profile(profile).record()
    return run.write(folder)


def test_compare_refuses_runs_of_different_profiles_naming_both(tmp_path):
    openstl, plain, openstl_again = (_run_under(tmp_path / name, profile) for name, profile in
                                     (("a", "openstl"), ("b", None), ("c", "openstl")))
    with pytest.raises(ParameterMismatch, match=r"profile: 'openstl' \(a\), no profile \(b\)"):
        compare([openstl, plain])
    assert compare([openstl, openstl_again]).pairs[0].n == 3
    assert "profile: 'openstl' (a), no profile (b)" in compare([openstl, plain], force=True).parameter_differences
    common = _run_under(tmp_path / "d", "common-metrics")
    with pytest.raises(ParameterMismatch, match=r"profile: 'openstl' \(a\), 'common-metrics' \(d\)"):
        compare([openstl, common])


def test_compare_refuses_an_edited_profile_file(tmp_path, profile_file):
    a = _run_under(tmp_path / "a", profile_file)
    profile_file.write_text(PROFILE.replace("reduction: sum", "reduction: mean"), encoding="utf-8")
    b = _run_under(tmp_path / "b", profile_file)
    with pytest.raises(ParameterMismatch, match="profile file sha256"):
        compare([a, b])


LEGACY_WANG = {"mode": "wang", "k1": 0.01, "k2": 0.03, "data_range": 1.0, "window": "gaussian", "window_size": 11,
               "sigma": 1.5, "sample_covariance": False, "border": "reflect"}


def test_runs_recorded_with_the_old_wang_mode_compare_as_torchmetrics(tmp_path):
    """Before the modes were named after their references, mode=wang was the reflect-padded window."""
    values = {"ssim": [0.9, 0.8, 0.85]}
    old = write_run(tmp_path / "old", values, params={"ssim": LEGACY_WANG})
    new_default = write_run(tmp_path / "new", values, params={"ssim": create("ssim").describe()["params"]})
    assert create("ssim").params["mode"] == "torchmetrics"
    assert compare([old, new_default]).pairs[0].n == 3
    new_wang = write_run(tmp_path / "wang", values, params={"ssim": create("ssim", mode="wang").describe()["params"]})
    with pytest.raises(ParameterMismatch) as raised:
        compare([old, new_wang])
    assert "ssim.params.mode: 'torchmetrics' (old), 'wang' (wang)" in str(raised.value)
    assert "ssim.params.border: 'reflect' (old), 'valid' (wang)" in str(raised.value)


def test_resume_refuses_a_run_scored_under_another_profile(clips, tmp_path):
    preds, refs = clips
    run_dir = tmp_path / "run"
    score(preds, refs, ["ssim"], profile="common-metrics", bootstrap=BootstrapConfig(n_resamples=10), run_dir=run_dir)
    resumed = score(preds, refs, ["ssim"], profile="common-metrics", bootstrap=BootstrapConfig(n_resamples=10),
                    run_dir=run_dir, resume=True)
    assert resumed.profile["name"] == "common-metrics"
    with pytest.raises(UsageError, match="profile.name: was 'common-metrics', now 'openstl'"):
        score(preds, refs, ["ssim"], profile="openstl", bootstrap=BootstrapConfig(n_resamples=10), run_dir=run_dir,
              resume=True)
