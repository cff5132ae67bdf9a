"""`foresight-eval latents`: parse options, run :func:`foresight_eval.latents.latents`, print and write results."""

from __future__ import annotations

from pathlib import Path

import click

from foresight_eval.cli.common import DEVICE_OPTION, config_file_option, stderr, stdout
from foresight_eval.cli.score_cmd import _run_config, finish_run, run_output_options, run_with_progress
from foresight_eval.config import LatentsConfig
from foresight_eval.io.latents import REDUCTIONS, SPATIAL_MODES


@click.command("latents")
@click.argument("a", type=click.Path(exists=True, path_type=Path), required=False)
@click.argument("b", type=click.Path(exists=True, path_type=Path), required=False)
@config_file_option("A and B as a and b")
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
@click.option("--resume", is_flag=True,
              help="Finish the interrupted run in --out: file pairs it already scored (same input files, same "
                   "metric parameters and options) are kept, the rest are scored.")
def latents_command(config_file, resume, output_format, **given) -> None:
    """Compare latents A with latents B: two files, or two folders whose files pair by relative name.

    Files are .safetensors (preferred), .npy/.npz (never unpickled) or .pt (plain tensors only), shaped
    (N, D), (N, T, D) or (N, C, T, H, W); both sides hold the same N items in the same order. For
    latent_cosine, A is the predicted and B the true future. Every metric is computed per file pair;
    the table shows the mean over pairs with a 95% bootstrap CI (see README, "Latent metrics").
    A and B may come from --config FILE instead (a run folder's config.yaml replays that run).

    Exit status: 0 all pairs scored, 1 some pair failed (see its error row), 2 usage error,
    130 interrupted (Ctrl-C; --resume finishes the run).
    """
    config = _run_config(config_file, given, LatentsConfig)
    console = stdout if output_format == "table" else stderr
    run = run_with_progress(config.run, resume=resume)
    if run is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    out_dir = None if config.out is None else config.resolve(config.out)
    finish_run(run, console, out_dir, output_format, unit="latent file pairs", write=False)
