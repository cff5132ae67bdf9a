"""Start-up time of the command line: `foresight-eval --help` and `foresight-eval metrics --help`.

Usage: python benchmarks/cli_startup.py [--repeats 7]
Prints the median wall time of each over fresh processes (the goal is under 1 s on the 2-core machine),
beside `python -c pass` measured in the same run, so the ratio is what carries across machines.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def median_seconds(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "foresight-eval --help": [sys.executable, "-m", "foresight_eval", "--help"],
        "foresight-eval metrics --help": [sys.executable, "-m", "foresight_eval", "metrics", "--help"],
        "foresight-eval score --help": [sys.executable, "-m", "foresight_eval", "score", "--help"],
    }
    print(f"{'command':<32} {'median s':>9}")
    for label, args in cases.items():
        print(f"{label:<32} {median_seconds(args, repeats):>9.3f}")


if __name__ == "__main__":
    main()
