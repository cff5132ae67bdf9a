"""The program freezes its objects out of the cyclic garbage collector before it exits (the interpreter's
last collections over torch's objects took 0.6 s of every process's and every torchrun rank's exit), and
only when it is the process's program: a test calling it through CliRunner keeps a normal collector."""

from __future__ import annotations

import gc
import subprocess
import sys

from click.testing import CliRunner

from foresight_eval.cli import main
from tests.conftest import REPO


def test_the_program_freezes_the_collector_at_exit():
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
            "sys.argv = ['foresight-eval', '--version']\n"
            "from foresight_eval.cli import main\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("frozen True"), out.stdout + out.stderr


def test_a_caller_passing_arguments_keeps_a_normal_collector():
    before = gc.get_freeze_count()
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert gc.get_freeze_count() == before
