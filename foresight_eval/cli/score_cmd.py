"""`foresight-eval score`: parse options, run :func:`foresight_eval.engine.score`, print and write results."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from foresight_eval.cli.common import (
    DEVICE_OPTION, EXIT_FAILED, EXIT_OK, config_file_option, frame_pairing_options, parse_assignments,
    parse_metric_params, remember_resumable_run, split_names, stderr, stdout,
)
from foresight_eval.cli.study_options import category_table, study_options
from foresight_eval.cli.tables import TextTable, emit, format_option
from foresight_eval.config import C, RunConfig, merge, read_config_file
from foresight_eval.formatting import estimate
from foresight_eval.errors import UsageError
from foresight_eval.io.latents import REDUCTIONS, SPATIAL_MODES
from foresight_eval.options import FRAME_CACHE_MODES
from foresight_eval.results import RunResult

ARROWS = {"higher": "↑", "lower": "↓", "none": "·"}  # none: descriptive
T = TypeVar("T")


def render_table(run: RunResult, unit: str = "clip pairs") -> TextTable:
    """Mean and CI per metric, both with the decimals the CI's width supports."""
    confidence = int(round(run.bootstrap.get("confidence", 0.95) * 100))
    subset = run.study.get("subset", {})
    marker = f" (subset: {subset['selected']} of {subset['found']} clips)" if subset.get("is_subset") else ""
    table = TextTable(f"{len(run.pairs) - len(run.failed)} of {len(run.pairs)} {unit} scored{marker}",
                      ["metric", "better", "mean", f"{confidence}% CI", "n", "unit"], left=("metric", "better", "unit"))
    for name, summary in run.metrics.items():
        target = summary.definition.get("target")
        better = (ARROWS.get(summary.direction, "") if target is None
                  else f"→ {target:g}" if isinstance(target, float) else "→ ref")
        table.add_row(name, better, *estimate(summary.mean, summary.ci_low, summary.ci_high), str(summary.n),
                      summary.definition.get("unit", ""))
    return table


def print_notes(run: RunResult, console) -> None:
    for name, reason in run.skipped_metrics.items():
        console.print(f"[yellow]skipped[/] {escape(name)}: {escape(reason)}", soft_wrap=True)
    for label, keys in (("predictions", run.unmatched_preds), ("references", run.unmatched_refs)):
        if keys:
            console.print(f"[yellow]unmatched {label}[/] ({len(keys)}): {escape(', '.join(keys))}", soft_wrap=True)
    for pair in run.failed:
        console.print(f"[red]error[/] {escape(pair.video)}: {escape(pair.error or '')}", soft_wrap=True)
    for name, summary in run.metrics.items():
        for warning in (summary.set_values or {}).get("warnings", []):
            console.print(f"[yellow]{escape(name)}[/]: {escape(warning)}", soft_wrap=True)


def run_output_options(command):
    """The run-folder, JSON, run-level figure and bootstrap options shared by the scoring commands."""
    options = (
        click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                     callback=remember_resumable_run, help="Write a run folder: summary.json, per_video.csv, per_frame.csv."),
        click.option("--extra", multiple=True, metavar="NAME=VALUE",
                     help="A run-level figure recorded in summary.json for gates, e.g. --extra latency_overhead=0.319."),
        click.option("--extra-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A JSON object of run-level figures, recorded like --extra; a generate_manifest.json "
                          "gives the figures `generate` measured (latency_overhead of --encoder hybrid)."),
        click.option("--bootstrap-resamples", type=click.IntRange(min=100), default=2000, show_default=True,
                     help="Resamples for the CIs."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling."),
    )
    for option in reversed(options):
        command = option(command)
    return format_option(command)


@click.command("score")
@click.argument("preds", type=click.Path(exists=True, path_type=Path), required=False)
@click.argument("refs", type=click.Path(exists=True, path_type=Path), required=False)
@config_file_option("batch_size, ref_annotations; PREDS and REFS as preds and refs",
                    " (-p and --extra per key); the file wins over environment variables")
@click.option("--metrics", "-m", "metric_names", metavar="NAMES",
              help="Comma-separated metrics (default: every default metric that can run here; "
                   "see `foresight-eval metrics`). A metric named here that cannot run is an error.")
@click.option("--param", "-p", "params", multiple=True, metavar="METRIC.KEY=VALUE",
              help="A metric parameter, repeatable: -p ssim.mode=skimage -p lpips.net=vgg.")
@click.option("--profile", metavar="NAME|FILE",
              help="Score under a compatibility profile (another tool's convention, see `foresight-eval profiles`): "
                   "its metrics, parameters and options; a -p or option contradicting it is refused.")
@frame_pairing_options("Conditioning frames at the start of each clip, not scored; the rest are horizons 1..H.")
@click.option("--strict", is_flag=True, help="Clips without a partner on the other side are an error (exit 2).")
@DEVICE_OPTION
@click.option("--weights-dir", type=click.Path(file_okay=False, path_type=Path), envvar="FORESIGHT_WEIGHTS",
              help="Extra folder searched first for weight files (also $FORESIGHT_WEIGHTS).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="FORESIGHT_CACHE",
              help="Cache of the reference side of metrics (reference edges, motion masks, tc/flicker, FVD features) "
                   "across runs (default $FORESIGHT_CACHE, else ~/.cache/foresight-eval; docs/speed.md).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the reference cache.")
@click.option("--frame-cache", type=click.Choice(FRAME_CACHE_MODES), default="auto", show_default=True,
              help="Cache the frame metrics' reference side too (FVD's features always are): auto does on the CPU, "
                   "where a second model's run is about 1.2x faster for it, and not on a GPU, where reading it back "
                   "is slower than recomputing it (docs/speed.md).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Processes for metrics' CPU-bound work (edge_f1's matching), overlapping the device's work; "
                   "0: none (default on the CPU; on a GPU all CPUs but one, at the lowest priority: where other "
                   "jobs keep every CPU busy they get little time, and 0 is faster).")
@run_output_options
@click.option("--ref-annotations", type=click.Path(exists=True, path_type=Path),
              help="Reference boxes/masks for box_iou, mask_iou, map50, map50_95: a COCO JSON whose images carry "
                   "\"video\" (clip key) and \"frame\" (0-based index), or a folder of <clip>.boxes.json / "
                   "<clip>.masks.npz sidecars.")
@click.option("--pred-detections", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Detections on the predicted frames, COCO results JSON (image_id of --ref-annotations, "
                   "or video + frame), for box_iou and mAP.")
@click.option("--pred-masks", type=click.Path(exists=True, path_type=Path),
              help="Predicted masks for mask_iou: a folder of <clip>.masks.npz, or COCO results JSON with "
                   "segmentations (default: the segmentations in --pred-detections).")
@click.option("--latents", "with_latents", is_flag=True,
              help="Also score the latents stored beside the clips (<clip>.latents.safetensors/.npy/.npz/.pt in "
                   "PREDS and REFS) with the latent metrics (named in --metrics, or every default one); "
                   "see `foresight-eval latents --help` for the formats.")
@click.option("--latents-reduce", type=click.Choice(REDUCTIONS), default=None,
              help="With --latents: how (N, T, D) latents become one vector per item (see `latents --reduce`).")
@click.option("--latents-spatial", type=click.Choice(SPATIAL_MODES), default=None,
              help="With --latents: how the H, W axes of (N, C, T, H, W) latents are reduced (see `latents --spatial`).")
@click.option("--resume", is_flag=True,
              help="Finish the interrupted run in --out: pairs it already scored (same input files, same metric "
                   "parameters) are kept, the rest are scored.")
@study_options
def score_command(config_file, resume, by, output_format, **given) -> None:
    """Score predicted clips in PREDS against reference clips in REFS.

    Clips are videos (mp4, webm, mkv, avi, mov, gif), folders of png/jpg frames, or .npy/.npz arrays
    shaped (T, H, W, C). They pair by relative path without extension: preds/a/clip01.mp4 with
    refs/a/clip01/ or refs/a/clip01.npy. Prints mean and 95% bootstrap CI over clips per metric.
    PREDS and REFS may come from --config FILE instead (a run folder's config.yaml replays that run).

    Under `torchrun --nproc-per-node N foresight-eval score ...` the pairs are shared out over the ranks
    and rank 0 writes the one run folder.

    Exit status: 0 all pairs scored, 1 some pair failed (see its error row), 2 usage error,
    130 interrupted (Ctrl-C; --resume finishes the run).
    """
    config = _run_config(config_file, given)
    if by == "category" and not config.categories:
        raise UsageError("--by category needs --categories")
    console = stdout if output_format == "table" else stderr
    run = run_with_progress(config.run, resume=resume)
    if run is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    by_category = [category_table(run)] if by == "category" else []
    out_dir = None if config.out is None else config.resolve(config.out)
    finish_run(run, console, out_dir, output_format, write=False, extra_tables=by_category)


# score's parameters whose RunConfig field is named differently
_CONFIG_FIELDS = {"metric_names": "metrics", "out_dir": "out", "with_latents": "latents", "seeds_folder": "seeds",
                  "preds_seeds": "preds_seed"}


def _run_config(config_file: Path | None, given: dict[str, Any],
                config_class: type[C] = RunConfig) -> C:  # type: ignore[assignment]
    """The run's config (a ``config_class``, `score`'s by default): the command line's values alone, or over
    those of ``config_file`` (given options replace the file's; environment variables fill only what the
    file leaves out)."""
    ctx = click.get_current_context()
    values, from_environment = {}, {}
    for name, value in given.items():
        source = ctx.get_parameter_source(name)
        if value is None and name in ("preds", "refs"):
            continue
        if config_file is not None and source in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            continue
        target = from_environment if source is ParameterSource.ENVIRONMENT else values
        target[_CONFIG_FIELDS.get(name, name)] = _field_value(name, value, from_here=config_file is not None)
    if config_file is None:
        return config_class(**values, **from_environment)
    file_values = read_config_file(config_file, config_class.KINDS)
    environment = {name: value for name, value in from_environment.items() if name not in file_values}
    return config_class(**merge(file_values, {**environment, **values}))


def _field_value(name: str, value: Any, from_here: bool) -> Any:
    """A command-line value as its RunConfig field takes it. ``from_here``: over a config file, whose paths
    are relative to its own cwd, a relative path given here is made absolute."""
    if name == "metric_names":
        names = split_names(value)
        return None if names is None else tuple(names)
    if name == "params":
        return parse_metric_params(value)
    if name == "extra":
        return parse_assignments(value, "--extra")
    if not from_here:
        return value
    here = Path.cwd()
    if isinstance(value, Path):
        return here / value
    if name == "preds_seeds":
        return tuple(here / path for path in value)
    if name in ("profile", "categories") and value is not None and (here / value).exists():
        return str(here / value)
    return value


def run_with_progress(run: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a scoring function (``score``, ``latents``) with a progress bar over its pairs on stderr
    (shown only on a terminal) and the command line recorded in its manifest."""
    progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.description}"), console=stderr, transient=True, disable=not stderr.is_terminal)
    with progress:
        task = progress.add_task("", total=None)
        return run(
            *args, **kwargs,
            on_start=lambda total: progress.update(task, total=total),
            on_pair=lambda pair: progress.update(task, advance=1, description=escape(pair.video)),
            command=shlex.join(["foresight-eval", *sys.argv[1:]]),
        )


def finish_run(run: RunResult, console, out_dir: Path | None, output_format: str, unit: str = "clip pairs",
               write: bool = True, extra_tables: Sequence[TextTable] = ()) -> None:
    """Print the table (``output_format``: table, csv, markdown, or json: the summary) and the notes,
    write the run folder (unless already written), exit 1 if any pair failed."""
    emit([render_table(run, unit), *extra_tables], output_format, console, run.summary_dict())
    print_notes(run, console)
    if out_dir is not None:
        if write:
            run.write(out_dir)
        console.print(f"run folder: {escape(str(out_dir))}")
    sys.exit(EXIT_FAILED if run.failed else EXIT_OK)
