"""Latent files: formats, refusals, shape reductions, pairing, the latents run and its CLI."""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from foresight_eval.cli import main
from foresight_eval.errors import InputError, UsageError
from foresight_eval.io.latents import LatentOptions, load_latent_pair, pair_latents, read_latents, to_matrix, to_sequences
from foresight_eval.latents import latents
from foresight_eval.results import load_summary

REPO = Path(__file__).resolve().parent.parent
FIXTURE_LATENTS = REPO / "fixtures" / "latents"


def write(path: Path, array, fmt: str | None = None, **extra) -> Path:
    """Save ``array`` (and named ``extra`` tensors) in the format of ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"latents": torch.as_tensor(np.asarray(array)), **{k: torch.as_tensor(v) for k, v in extra.items()}}
    suffix = path.suffix
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    elif suffix == ".npy":
        np.save(path, np.asarray(array))
    elif suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in tensors.items()})
    else:
        torch.save(tensors if extra else tensors["latents"], path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".npy", ".npz", ".pt"])
def test_every_format_reads_the_same_tensor(suffix, tmp_path, rng):
    array = rng.normal(size=(5, 3)).astype(np.float32)
    loaded = read_latents(write(tmp_path / f"x{suffix}", array))
    np.testing.assert_array_equal(loaded.numpy(), array)


def test_multi_tensor_files_take_the_named_or_latents_tensor(tmp_path, rng):
    array, other = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    for suffix in (".safetensors", ".npz", ".pt"):
        path = write(tmp_path / f"m{suffix}", array, other=other)
        np.testing.assert_array_equal(read_latents(path).numpy(), array)
        np.testing.assert_array_equal(read_latents(path, key="other").numpy(), other)
        with pytest.raises(InputError, match="no tensor named 'missing'"):
            read_latents(path, key="missing")
    np.savez(tmp_path / "two.npz", a=array, b=other)
    with pytest.raises(InputError, match=r"two\.npz: holds \['a', 'b'\]; name one with --key"):
        read_latents(tmp_path / "two.npz")


class NotATensor:
    def __init__(self):
        self.values = [1, 2, 3]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickled_object_in_a_pt_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"latents": torch.zeros(3, 2), "config": NotATensor()}, path)
    with pytest.raises(InputError, match=r"evil\.pt: refused: torch\.load\(weights_only=True\).*pickled Python object"):
        read_latents(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(NotATensor()))
    with pytest.raises(InputError, match=r"raw\.pt: refused"):
        read_latents(raw)


def test_non_tensor_contents_and_object_arrays_are_refused(tmp_path):
    torch.save([torch.zeros(2, 2)], tmp_path / "list.pt")
    with pytest.raises(InputError, match=r"list\.pt: holds a list, not a tensor or a dict of tensors"):
        read_latents(tmp_path / "list.pt")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"objects\.npy: array holds Python objects \(pickled data\), refused"):
        read_latents(tmp_path / "objects.npy")
    np.save(tmp_path / "complex.npy", np.ones((3, 2), dtype=np.complex64))
    with pytest.raises(InputError, match=r"complex\.npy: dtype complex64 is not a real number type"):
        read_latents(tmp_path / "complex.npy")


@pytest.mark.parametrize("array, message", [
    (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, np.inf]]), r"bad\.safetensors: 2 item\(s\) hold NaN or inf values \(first: item 1\)"),
    (np.zeros((0, 4), dtype=np.float32), r"bad\.safetensors: latent array of shape \(0, 4\) is empty"),
    (np.zeros((3, 0), dtype=np.float32), r"bad\.safetensors: latent array of shape \(3, 0\) is empty"),
    (np.zeros(5, dtype=np.float32), r"bad\.safetensors: latent shape \(5,\) is none of \(N, D\)"),
    (np.zeros((2, 3, 4, 5), dtype=np.float32), r"bad\.safetensors: latent shape \(2, 3, 4, 5\) is none of"),
])
def test_bad_latent_arrays_are_named_errors(array, message, tmp_path):
    with pytest.raises(InputError, match=message):
        read_latents(write(tmp_path / "bad.safetensors", array))


def test_unreadable_files_are_named_errors(tmp_path):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(InputError, match=r"corrupt\.safetensors: not a readable safetensors file"):
        read_latents(tmp_path / "corrupt.safetensors")
    (tmp_path / "corrupt.npy").write_bytes(b"not numpy")  # no .npy header: NumPy would unpickle it
    with pytest.raises(InputError, match=r"corrupt\.npy: .*refused"):
        read_latents(tmp_path / "corrupt.npy")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match=r"truncated\.pt: refused"):
        read_latents(tmp_path / "truncated.pt")


def test_reductions_are_explicit_and_documented_shapes(rng):
    seq = torch.from_numpy(rng.normal(size=(4, 3, 5)))
    with pytest.raises(InputError, match="--reduce mean, --reduce flatten or --reduce per-timestep"):
        to_matrix(seq, None, Path("s.npy"))
    assert torch.equal(to_matrix(seq, "mean", Path("s")), seq.mean(dim=1))
    assert torch.equal(to_matrix(seq, "flatten", Path("s"))[1], seq[1].flatten())
    per_step = to_matrix(seq, "per-timestep", Path("s"))
    assert per_step.shape == (12, 5) and torch.equal(per_step[1 * 3 + 2], seq[1, 2])
    video = torch.from_numpy(rng.normal(size=(4, 6, 3, 2, 2)))  # (N, C, T, H, W)
    with pytest.raises(InputError, match="--spatial mean .* or --spatial flatten"):
        to_sequences(video, None, Path("v.npy"))
    pooled = to_sequences(video, "mean", Path("v"))
    assert pooled.shape == (4, 3, 6) and torch.allclose(pooled[2, 1], video[2, :, 1].mean(dim=(1, 2)))
    flat = to_sequences(video, "flatten", Path("v"))
    assert flat.shape == (4, 3, 24) and torch.equal(flat[2, 1], video[2, :, 1].flatten())
    assert to_matrix(to_sequences(torch.zeros(4, 7), None, Path("m")), None, Path("m")).shape == (4, 7)
    with pytest.raises(UsageError, match="reduce must be one of"):
        LatentOptions(reduce="max")


def test_pairs_need_the_same_items(tmp_path, rng):
    a = write(tmp_path / "a.npy", rng.normal(size=(5, 3)))
    b = write(tmp_path / "b.npy", rng.normal(size=(6, 3)))
    with pytest.raises(InputError, match=r"a\.npy has 5 items, .*b\.npy has 6"):
        load_latent_pair("x", a, b, LatentOptions())
    c = write(tmp_path / "c.npy", rng.normal(size=(5, 2, 3)))
    d = write(tmp_path / "d.npy", rng.normal(size=(5, 4, 3)))
    with pytest.raises(InputError, match="--reduce per-timestep: .* gives 10 items, .* gives 20"):
        load_latent_pair("x", c, d, LatentOptions(reduce="per-timestep")).matrices()


def test_pairing_by_relative_name_skips_other_sidecars_and_strips_latents(tmp_path, rng):
    write(tmp_path / "a" / "s1" / "x.safetensors", rng.normal(size=(4, 2)))
    write(tmp_path / "a" / "y.npy", rng.normal(size=(4, 2)))
    write(tmp_path / "a" / "only_a.pt", rng.normal(size=(4, 2)))
    write(tmp_path / "b" / "s1" / "x.npz", rng.normal(size=(4, 2)))
    write(tmp_path / "b" / "y.latents.safetensors", rng.normal(size=(4, 2)))
    np.savez(tmp_path / "b" / "y.masks.npz", masks=np.zeros((2, 2)))
    (tmp_path / "b" / "notes.txt").write_text("ignored")
    pairing = pair_latents(tmp_path / "a", tmp_path / "b")
    assert [(p.key, p.pred.name, p.ref.name) for p in pairing.pairs] == [
        ("s1/x", "x.safetensors", "x.npz"), ("y", "y.npy", "y.latents.safetensors")]
    assert pairing.unmatched_preds == ["only_a"] and pairing.unmatched_refs == []
    with pytest.raises(UsageError, match="strict: unmatched latent files"):
        pair_latents(tmp_path / "a", tmp_path / "b", strict=True)
    sidecars = pair_latents(tmp_path / "b", tmp_path / "b", sidecars_only=True)
    assert [p.key for p in sidecars.pairs] == ["y"]
    with pytest.raises(UsageError, match="no latent files found"):
        pair_latents(tmp_path / "a", tmp_path / "b" / "notes.txt")


def test_a_broken_file_is_one_error_row_and_the_run_folder_reads_back(tmp_path, rng):
    z = rng.normal(size=(40, 3))
    for name in ("p", "q"):
        write(tmp_path / "a" / f"{name}.safetensors", z @ rng.normal(size=(3, 8)))
        write(tmp_path / "b" / f"{name}.safetensors", z @ rng.normal(size=(3, 5)))
    write(tmp_path / "a" / "r.safetensors", np.full((40, 8), np.nan))
    write(tmp_path / "b" / "r.safetensors", rng.normal(size=(40, 5)))
    run = latents(tmp_path / "a", tmp_path / "b", ["cka", "neighbourhood_recall"], device="cpu",
                  params={"neighbourhood_recall": {"k": 5}})
    assert [(p.video, p.status) for p in run.pairs] == [("p", "ok"), ("q", "ok"), ("r", "error")]
    assert "r.safetensors: 40 item(s) hold NaN or inf" in run.pairs[2].error
    run.write(tmp_path / "run")
    summary = load_summary(tmp_path / "run")
    assert summary["metrics"]["cka"]["n"] == 2 and summary["metrics"]["cka"]["ci"] == "bootstrap over file pairs"
    assert summary["metrics"]["neighbourhood_recall"]["params"] == {"k": 5, "distance": "cosine"}
    assert summary["videos"] == {"total": 3, "ok": 2, "error": 1, "errors": {"r": run.pairs[2].error}}
    assert summary["options"]["inputs"] == "latents"
    header = (tmp_path / "run" / "per_video.csv").read_text().splitlines()[0]
    assert header == "video,status,error,frames,pred,ref,cka,neighbourhood_recall"


def test_one_pair_gets_item_bootstrap_for_item_means_only(tmp_path, rng):
    x = rng.normal(size=(50, 6))
    a, b = write(tmp_path / "a.npy", x), write(tmp_path / "b.npy", x + 0.3 * rng.normal(size=x.shape))
    run = latents(a, b, ["cka", "neighbourhood_recall", "intrinsic_dim"], device="cpu")
    recall, cka = run.metrics["neighbourhood_recall"], run.metrics["cka"]
    assert recall.n == 50 and recall.ci_low < recall.mean < recall.ci_high
    assert recall.definition["ci"] == "bootstrap over items"
    assert cka.n == 1 and cka.ci_low is None and cka.definition["ci"] is None
    details = run.metrics["intrinsic_dim"].set_values["per_pair"]["b"]
    assert set(details["a"]) == {"pca90", "pca95", "participation_ratio", "twonn", "twonn_items_used",
                                 "twonn_duplicates_dropped"}


def test_cli_on_the_fixtures_table_json_and_run_folder(tmp_path):
    runner = CliRunner()
    vlm, decoder = FIXTURE_LATENTS / "vlm", FIXTURE_LATENTS / "decoder"
    result = runner.invoke(main, ["latents", str(vlm), str(decoder), "-m", "cka,probe_r2"])
    assert result.exit_code == 1, result.output  # 5-D decoder latents need explicit reductions
    assert "--spatial mean" in result.output
    out = tmp_path / "run"
    result = runner.invoke(main, ["latents", str(vlm), str(decoder), "--reduce", "mean", "--spatial", "mean",
                                  "-m", "cka,cka_biased,probe_r2", "-p", "probe_r2.inner_folds=3",
                                  "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == load_summary(out)
    assert summary["videos"]["ok"] == 3 and 0.3 < summary["metrics"]["cka"]["mean"] < 0.95
    assert summary["metrics"]["probe_r2"]["params"]["inner_folds"] == 3
    result = runner.invoke(main, ["latents", str(FIXTURE_LATENTS / "future_pred"), str(FIXTURE_LATENTS / "future_true"),
                                  "-m", "latent_cosine", "--json"])
    assert result.exit_code == 0, result.output
    curve = [h["mean"] for h in json.loads(result.stdout)["metrics"]["latent_cosine"]["per_horizon"]]
    assert len(curve) == 8 and curve == sorted(curve, reverse=True)
    result = runner.invoke(main, ["latents", str(vlm), str(decoder), "-m", "psnr"])
    assert result.exit_code == 2 and "scores frames, not latents" in result.output


def test_metrics_command_lists_latent_metrics():
    result = CliRunner().invoke(main, ["metrics", "--json"])
    entries = json.loads(result.stdout)["metrics"]
    assert entries["cka"]["inputs"] == "latents" and entries["latent_cosine"]["defaults"] == {"k": 5, "context": 0, "centred": False}


def test_latents_api_accepts_ordered_params(tmp_path, rng):
    x = rng.normal(size=(30, 4))
    a, b = write(tmp_path / "a.npy", x), write(tmp_path / "b.npy", x)
    run = latents(a, b, ["rsa_spearman"], params=OrderedDict(rsa_spearman={"distance": "cosine"}), device="cpu")
    assert run.metrics["rsa_spearman"].mean == pytest.approx(1.0)


def test_cli_sidecars_beside_videos(tmp_path, rng):
    x = rng.normal(size=(30, 4))
    for side in ("preds", "refs"):
        np.save(tmp_path / side / "clip01.npy", np.zeros((2, 4, 4, 3), dtype=np.uint8)) if (tmp_path / side).mkdir() \
            is None else None
        write(tmp_path / side / "clip01.latents.safetensors", x)
    result = CliRunner().invoke(main, ["latents", str(tmp_path / "preds"), str(tmp_path / "refs"), "--sidecars",
                                       "-m", "cka", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"]["ok"] == 1 and summary["metrics"]["cka"]["mean"] == pytest.approx(1.0)
