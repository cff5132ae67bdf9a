"""The `foresight-eval` command. This package only parses options and prints; the work lives in
importable functions of the same names (``foresight_eval.score`` for ``foresight-eval score``)."""

from __future__ import annotations

import click

from foresight_eval.cli.check_cmd import check_command
from foresight_eval.cli.compare_cmd import compare_command
from foresight_eval.cli.generate_cmd import generate_command
from foresight_eval.cli.latents_cmd import latents_command
from foresight_eval.cli.metrics_cmd import metrics_command, weights_group
from foresight_eval.cli.profiles_cmd import profiles_group
from foresight_eval.cli.report_cmd import leaderboard_command, report_command
from foresight_eval.cli.score_cmd import score_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="foresight-eval")
def main() -> None:
    """Evaluate video prediction models: score predicted clips against references, check runs against
    gates, compare runs, and write reports."""


main.add_command(score_command)
main.add_command(generate_command)
main.add_command(metrics_command)
main.add_command(weights_group)
main.add_command(report_command)
main.add_command(leaderboard_command)
main.add_command(check_command)
main.add_command(compare_command)
main.add_command(latents_command)
main.add_command(profiles_group)
