"""`foresight-eval latents`: parse options, run :func:`foresight_eval.latents.latents`, print and write results."""

from __future__ import annotations

from pathlib import Path

import click

from foresight_eval.cli.common import DEVICE_OPTION, parse_metric_params, split_names, stderr, stdout
from foresight_eval.cli.score_cmd import _load_extra, finish_run, run_output_options, run_with_progress
from foresight_eval.journal import prepare_run_folder
from foresight_eval.io.latents import REDUCTIONS, SPATIAL_MODES, LatentOptions
from foresight_eval.latents import latents
from foresight_eval.stats import BootstrapConfig


@click.command("latents")
@click.argument("a", type=click.Path(exists=True, path_type=Path))
@click.argument("b", type=click.Path(exists=True, path_type=Path))
@click.option("--metrics", "-m", "metric_names", metavar="NAMES",
              help="Comma-separated latent metrics (default: cka, cka_rbf, probe_r2, rsa_spearman, "
                   "neighbourhood_recall; also latent_cosine and intrinsic_dim). See `foresight-eval metrics`.")
@click.option("--param", "-p", "params", multiple=True, metavar="METRIC.KEY=VALUE",
              help="A metric parameter, repeatable: -p neighbourhood_recall.k=10 -p latent_cosine.k=5 "
                   "-p rsa_spearman.distance=cosine -p probe_r2.alphas=[0.1,1,10].")
@click.option("--reduce", type=click.Choice(REDUCTIONS), default=None,
              help="How latents with T > 1 steps, (N, T, D) or (N, C, T, H, W), become one vector per item for the "
                   "set metrics: mean over steps, flatten the steps, or per-timestep (every step an item). "
                   "Required for such latents; latent_cosine keeps the steps as horizons.")
@click.option("--spatial", type=click.Choice(SPATIAL_MODES), default=None,
              help="How the H, W axes of (N, C, T, H, W) latents are reduced: mean (C features per step) or "
                   "flatten (C*H*W). Required for such latents.")
@click.option("--key", help="Name of the tensor to read from files holding several (safetensors, npz, dicts "
                            "saved by torch.save); default: the only tensor, else the one named 'latents'.")
@click.option("--sidecars", is_flag=True, help="Only read <clip>.latents.<suffix> files (latents stored beside "
                                              "videos, e.g. the PREDS and REFS folders of `score`); they pair as <clip>.")
@click.option("--strict", is_flag=True, help="Files without a partner on the other side are an error (exit 2).")
@DEVICE_OPTION
@run_output_options
def latents_command(a, b, metric_names, params, reduce, spatial, key, sidecars, strict, device, out_dir, output_format, extra,
                    extra_file, bootstrap_resamples, seed) -> None:
    """Compare latents A with latents B: two files, or two folders whose files pair by relative name.

    Files are .safetensors (preferred), .npy/.npz (never unpickled) or .pt (plain tensors only), shaped
    (N, D), (N, T, D) or (N, C, T, H, W); both sides hold the same N items in the same order. For
    latent_cosine, A is the predicted and B the true future. Every metric is computed per file pair;
    the table shows the mean over pairs with a 95% bootstrap CI (see README, "Latent metrics").

    Exit status: 0 all pairs scored, 1 some pair failed (see its error row), 2 usage error.
    """
    options = LatentOptions(reduce=reduce, spatial=spatial, key=key, sidecars_only=sidecars)
    if out_dir is not None:  # an unusable --out fails now, not after the scoring
        prepare_run_folder(out_dir)
    console = stdout if output_format == "table" else stderr
    run = run_with_progress(
        latents, a, b, split_names(metric_names), params=parse_metric_params(params), options=options, strict=strict,
        device=device, bootstrap=BootstrapConfig(n_resamples=bootstrap_resamples, seed=seed),
        extra=_load_extra(extra, extra_file),
    )
    if run is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    finish_run(run, console, out_dir, output_format, unit="latent file pairs")
