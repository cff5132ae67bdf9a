"""Start a `foresight-eval` command as N ranks on this machine, as `torchrun --standalone` does, without
torchrun's elastic agent.

    python -m foresight_eval.launch --nproc-per-node 8 score PREDS REFS --out RUN

The agent imports torch before it starts any rank and runs the interpreter's teardown over it after the
last one ends: 1.6-2.0 s before and 0.8 s after every run on the 2-core machine (benchmarks/RESULTS.md,
"fixed per-run costs"), time that does not shrink with ranks. This launcher imports no torch: it gives each
rank the environment torchrun would (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT`` on a free local port; ``OMP_NUM_THREADS=1`` unless set, as torchrun sets
it for more than one rank), starts them together and waits. As under torchrun, a rank that fails stops
the others (SIGTERM, then SIGKILL after 30 s) and the launcher exits with the first failing rank's status
(a signal's as 128 + its number); otherwise with rank 0's. One node only: several nodes need torchrun.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

TERMINATE_GRACE_S = 30.0
POLL_S = 0.02


def free_port() -> int:
    """A TCP port free on the loopback interface now (the OS picks it), for rank 0's store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_environments(ranks: int, port: int, base: dict[str, str]) -> list[dict[str, str]]:
    shared = {**base, "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks),
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    if ranks > 1:
        shared.setdefault("OMP_NUM_THREADS", "1")
    return [{**shared, "RANK": str(rank), "LOCAL_RANK": str(rank)} for rank in range(ranks)]


def exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def stop(processes: list[subprocess.Popen], first: signal.Signals) -> None:
    """Send ``first`` to the ranks still running, wait up to the grace period, then kill what is left."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(first)
    deadline = time.monotonic() + TERMINATE_GRACE_S
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_ranks(ranks: int, args: list[str]) -> int:
    """Run ``python -m foresight_eval ARGS`` as ``ranks`` ranks; the exit status described above."""
    processes = [subprocess.Popen([sys.executable, "-m", "foresight_eval", *args], env=env)
                 for env in rank_environments(ranks, free_port(), dict(os.environ))]
    try:
        while None in (returncodes := [process.poll() for process in processes]):
            failure = next((code for code in returncodes if code not in (None, 0)), None)
            if failure is not None:  # the others would wait for it at the gather: stop them
                stop(processes, signal.SIGTERM)
                return exit_status(failure)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        # From a terminal the ranks got the SIGINT too and finish their journals; otherwise pass it on.
        time.sleep(2.0)
        stop(processes, signal.SIGINT)
        return 130
    failure = next((p.returncode for p in processes if p.returncode != 0), None)
    return 0 if failure is None else exit_status(failure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m foresight_eval.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc-per-node", "--nproc_per_node", type=int, required=True,
                        help="ranks to start on this machine (one GPU each)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the foresight-eval command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.nproc_per_node < 1 or not command:
        parser.error("give --nproc-per-node N (N >= 1) and a foresight-eval command, e.g. score PREDS REFS")
    return run_ranks(args.nproc_per_node, command)


if __name__ == "__main__":
    sys.exit(main())
