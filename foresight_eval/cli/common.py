"""Helpers shared by the CLI commands: consoles, option parsing, error-to-exit-code mapping (for the whole
application, in :func:`application_errors`)."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.markup import escape

from foresight_eval.errors import ForesightError, UsageError, render_fields
from foresight_eval.io.files import dumps_json, json_safe

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED = 128 + 2  # killed by SIGINT (Ctrl-C), as shells report it

# Not a terminal (CI logs, pipes): rich would assume 80 columns and squeeze tables into "pa…" and "0.…";
# a log has no width limit, so tables get 200 columns (or $COLUMNS), and their cells fold, never cut.
NON_TERMINAL_WIDTH = 200


def _console(stream, **kwargs: Any) -> Console:
    wide = stream.isatty() or "COLUMNS" in os.environ
    return Console(highlight=False, width=None if wide else NON_TERMINAL_WIDTH, **kwargs)


stdout = _console(sys.stdout)
stderr = _console(sys.stderr, stderr=True)


RUN_FOLDER = "foresight_eval.resumable_run_folder"  # ctx.meta key: the run folder --resume would finish


# Field names (foresight_eval.errors.field_ref) whose flag is not ``--`` + the name with ``-`` for ``_``.
FLAGS = {"run_dir": "--out", "preds": "PREDS", "refs": "REFS", "params": "--param"}


def flag_style(name: str, given: bool, value: Any) -> str:
    """``--context``, ``--resize ref``, ``--strict`` (a flag given as True): the names a command-line user typed."""
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    return f"{flag} {value}" if given and value is not True else flag


def cli_message(exc: BaseException) -> str:
    """The error's text for the command line: the options it names, as flags."""
    return render_fields(Exception.__str__(exc), flag_style) if isinstance(exc, ForesightError) else str(exc)


@contextlib.contextmanager
def application_errors(ctx: click.Context, debug: bool) -> Iterator[None]:
    """The exit statuses of every command (README, "Exit status"): a usage error prints one line and exits
    2, as click's own do; another error of this package (an unusable input, a missing weight file) exits 1,
    as failed pairs do (the command itself exits 1 for those); Ctrl-C exits 130 (not 1) and says how to
    finish the run; any other exception is a bug, printed as one line and exit 3, with the traceback under
    ``--debug``."""
    try:
        yield
    except (UsageError, FileNotFoundError) as exc:
        stderr.print(f"[bold red]error:[/] {escape(cli_message(exc))}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    except ForesightError as exc:  # raised on purpose (an unusable input, a missing weight file): not a bug
        stderr.print(f"[bold red]error:[/] {escape(cli_message(exc))}", soft_wrap=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        run_dir = ctx.meta.get(RUN_FOLDER)
        hint = (f"; the pairs already scored are journaled in {run_dir}: run the same command with "
                "--resume to finish the run") if run_dir is not None else ""
        stderr.print(f"[bold red]interrupted[/]{escape(hint)}", soft_wrap=True)
        sys.exit(EXIT_INTERRUPTED)
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise  # click's own: it prints them and picks the status
    except Exception as exc:
        if debug:
            stderr.print(escape(traceback.format_exc()), soft_wrap=True, end="")
        stderr.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(cli_message(exc))}"
                     + ("" if debug else " (run with --debug for the traceback)"), soft_wrap=True)
        sys.exit(EXIT_INTERNAL)


def remember_resumable_run(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of a resumable command's ``--out``: an interrupted run then says how to finish it."""
    if value is not None and any(p.name == "resume" for p in ctx.command.params):
        ctx.meta[RUN_FOLDER] = value
    return value


def parse_assignments(values: tuple[str, ...], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings into a dict; values are read as YAML scalars (1.5, true, alex)."""
    parsed = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects KEY=VALUE, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return parsed


def parse_metric_params(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``-p ssim.mode=skimage`` into ``{"ssim": {"mode": "skimage"}}``."""
    params: dict[str, dict[str, Any]] = {}
    for key, value in parse_assignments(values, "--param").items():
        metric, dot, name = key.partition(".")
        if not dot or not name:
            raise UsageError(f"--param expects METRIC.KEY=VALUE, got {key!r}")
        params.setdefault(metric, {})[name] = value
    return params


def split_names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise UsageError("--metrics needs at least one metric name")
    return names


def print_json(payload: Any) -> None:
    """JSON on stdout, infinities as the numbers +-1e999 (see foresight_eval.io.files.dumps_json)."""
    click.echo(dumps_json(json_safe(payload)))


# Options that mean the same in every command that takes them: one definition, one help text.
DEVICE_OPTION = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


def config_file_option(arguments: str, merging: str = "") -> Callable:
    """``--config FILE``: the command's run from a YAML file (foresight_eval.config); ``arguments`` says how the
    file names the command's arguments ("PREDS and REFS as preds and refs"), ``merging`` adds to the rule of
    which value wins."""
    return click.option(
        "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
        help=f"Take the run from a YAML file: keys are the long option names with _ for - ({arguments}). Every run "
             "folder gets its config.yaml, so --config RUN/config.yaml replays that run; an option or argument "
             f"given on the command line wins over the file's value{merging}.")


def frame_pairing_options(context_help: str) -> Callable:
    """``--context``, ``--frame-mismatch``, ``--resize`` and ``--batch-size``: how the frames of a clip pair
    line up (the fields of :class:`foresight_eval.options.ScoreOptions`), for every command that scores
    frames. ``--frames`` is ``--frame-mismatch``'s old name, still taken."""
    options = [
        click.option("--context", type=int, default=0, show_default=True, help=context_help),
        click.option("--frame-mismatch", "--frames", "frame_mismatch", type=click.Choice(["error", "min"]),
                     default="error", show_default=True,
                     help="Prediction and reference frame counts differ: make that pair an error, or score the "
                          "shorter length (--frames: the old name)."),
        click.option("--resize", type=click.Choice(["error", "ref"]), default="error", show_default=True,
                     help="Frame sizes differ: make that pair an error, or resize predictions to the reference size "
                          "(antialiased)."),
        click.option("--batch-size", type=int, default=16, show_default=True, help="Frame pairs per batch."),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
