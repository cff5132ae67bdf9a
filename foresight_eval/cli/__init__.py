"""The `foresight-eval` command. This package only parses options and prints; the work lives in
importable functions of the same names (``foresight_eval.score`` for ``foresight-eval score``).

Commands are imported when they run, not when the program starts: the group knows each command's module
and one-line help, so `foresight-eval --help` (and every command's own `--help`) imports neither torch
nor SciPy nor matplotlib (tests/test_cli_startup.py checks that).
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

import click

# name -> (module:attribute, the one-line help shown in `foresight-eval --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("foresight_eval.cli.score_cmd:score_command",
              "Score predicted clips in PREDS against reference clips in REFS."),
    "generate": ("foresight_eval.cli.generate_cmd:generate_command",
                 "Predict future frames of context clips (Qwen2.5-VL -> query adapter -> LTX-Video)."),
    "metrics": ("foresight_eval.cli.metrics_cmd:metrics_command",
                "List every registered metric (built-in and plugin), what it needs, and whether it can run here."),
    "weights": ("foresight_eval.cli.metrics_cmd:weights_group",
                "Weight files the metrics need: where they are looked for, and fetching them when online."),
    "report": ("foresight_eval.cli.report_cmd:report_command",
               "Write a self-contained HTML comparison report of run folders."),
    "leaderboard": ("foresight_eval.cli.report_cmd:leaderboard_command",
                    "Rank RUN_DIR folders (each DIR or LABEL=DIR) and write the leaderboard as HTML, Markdown and CSV."),
    "check": ("foresight_eval.cli.check_cmd:check_command",
              "Check run folder RUN against gates and/or a baseline run."),
    "compare": ("foresight_eval.cli.compare_cmd:compare_command",
                "Compare run folders RUN_A RUN_B [RUN_C ...] metric by metric, every pair of runs."),
    "latents": ("foresight_eval.cli.latents_cmd:latents_command",
                "Compare latents A with latents B: two files, or two folders whose files pair by relative name."),
    "physics-iq": ("foresight_eval.cli.physics_iq_cmd:physics_iq_command",
                   "The Physics IQ Score: score PREDS and a second real take against REFS, as the benchmark does."),
    "profiles": ("foresight_eval.cli.profiles_cmd:profiles_group",
                 "List the compatibility profiles (`score --profile NAME`): each reproduces another tool's convention."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is run or asked for help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, short_help = COMMANDS[name]
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        command.short_help = short_help  # one text in both listings, whether or not the module was imported
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short_help) for name, (_, short_help) in COMMANDS.items()])

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """The program, when ``args`` is None (the process's own arguments) in standalone mode (exiting
        after the command): the console script and `python -m foresight_eval`. Before it exits, every object
        still alive is frozen out of the cyclic garbage collector: the interpreter's last collections over
        torch's hundreds of thousands of objects took 0.6 s of each process's exit (0.8 -> 0.2 s; each
        `torchrun` rank's too). Files are closed by then (run files are written atomically) and exit handlers
        still run. A caller passing ``args`` (a test through click's CliRunner) or returning from it keeps
        a normal collector.

        Under `torchrun` a rank other than 0 ends there without the interpreter's finalization
        (:func:`foresight_eval.distributed.leave_if_not_main`)."""
        try:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        except SystemExit as exc:
            # the module is imported only by commands that may join a process group (and then torch is too)
            if args is None and standalone_mode and "foresight_eval.distributed" in sys.modules:
                sys.modules["foresight_eval.distributed"].leave_if_not_main(exc.code)
            raise
        finally:
            if args is None and standalone_mode:
                gc.freeze()

    def invoke(self, ctx: click.Context):
        """Run the command under the application's error-to-exit-status mapping (one place for every
        command: cli.common.application_errors)."""
        from foresight_eval.cli.common import application_errors

        with application_errors(ctx, debug=ctx.params.get("debug", False)):
            return super().invoke(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="foresight-eval")
@click.option("--debug", is_flag=True, help="On an internal error (exit 3), print the traceback.")
def main(debug: bool) -> None:
    """Evaluate video prediction models: score predicted clips against references, check runs against
    gates, compare runs, and write reports.

    Exit status: 0 success; 1 some pair or check failed, or an input or weight file is unusable; 2 usage
    error; 3 internal error (a bug: --debug prints the traceback); 130 interrupted (Ctrl-C)."""
