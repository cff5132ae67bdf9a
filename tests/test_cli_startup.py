"""The command line starts without the heavy libraries: `--help` and `metrics --help` import neither torch,
SciPy nor matplotlib (their time is measured by benchmarks/cli_startup.py, not here), and every command
listed lazily resolves to a real command."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from foresight_eval.cli import COMMANDS, main

HEAVY = ("torch", "scipy", "matplotlib", "pandas", "sklearn", "transformers")
PROBE = """
import sys
from foresight_eval.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["metrics", "--help"], ["weights", "--help"]])
def test_help_imports_no_heavy_library(args):
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True,
                            text=True, env={**os.environ, "COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == "HEAVY:", result.stdout


def test_every_listed_command_resolves_and_is_listed_with_its_help():
    ctx = click.Context(main)
    listing = CliRunner().invoke(main, ["--help"], terminal_width=200).output
    for name, (_, short_help) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
        assert f"{name}  " in listing and short_help in listing
    assert main.get_command(ctx, "nonsense") is None


def test_an_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["scroe"])
    assert result.exit_code == 2
    assert "No such command 'scroe'" in result.output


def test_the_package_api_is_importable_lazily():
    import foresight_eval

    assert callable(foresight_eval.score) and foresight_eval.Metric.__name__ == "Metric"
    assert set(foresight_eval.__all__) <= set(dir(foresight_eval))
    with pytest.raises(AttributeError):
        foresight_eval.not_a_name  # noqa: B018


def test_registering_the_metrics_imports_no_torchvision():
    """torchvision's import pulls in torch._dynamo (seconds, in every rank of a torchrun run): only the metrics
    that run on it import it, when they run (LPIPS, box IoU), not the listing of the registry."""
    probe = ("import sys; from foresight_eval.metrics.registry import metric_classes; metric_classes(); "
             "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'lpips') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_score_command_imports_scipy_and_scikit_image_only_where_used():
    """SciPy's optimisation, graph, k-d tree, image and statistics modules and scikit-image were 0.45 s of a
    `score` process's 2.1 s of imports on the 2-core machine (every torchrun rank's): imported by the functions
    that use them (box matching, edge matching in the workers, the CPU's Canny, rank 0's summaries), not by
    the command, the engine or the listing of the metrics."""
    probe = ("import sys; import foresight_eval.cli.score_cmd; import foresight_eval.engine; "
             "from foresight_eval.metrics.registry import metric_classes; metric_classes(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'skimage')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_worker_side_of_edge_f1_imports_no_torch():
    """The metric workers' fork server imports the module of the work handed over before the first worker
    starts (seconds with torch, on the GPU's host): edge_f1's worker functions live in a module without it,
    nor scikit-image until BSDS mode runs. OpenCV is imported: the default mode links every map with it (about
    15 ms after NumPy)."""
    from foresight_eval.metrics import edges

    handed_over = (edges.edge_f1_of_packed_candidates, edges.edge_f1_value, edges.bsds_edge_counts)  # what EdgeF1 maps
    assert {function.__module__ for function in handed_over} == {"foresight_eval.metrics.edge_matching"}
    probe = ("import sys; import foresight_eval.metrics.edge_matching; "
             "print(sorted(m for m in ('torch', 'skimage') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
