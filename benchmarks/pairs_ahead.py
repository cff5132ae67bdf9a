"""The default suite on a GPU by the number of clip pairs decoding ahead of the one being scored
(``engine.PAIRS_AHEAD_ON_DEVICE``), against decode-only, in alternating rounds in one process:

    python benchmarks/pairs_ahead.py [--device cuda] [--rounds 7] [--ahead 1,2,3]

On ``suite_speed.py``'s camera-like clips (3 clips x 32 frame pairs at 640x360, batch 16, no cache): one setting
per number of pairs ahead of ``ab_settings.py``, which prints each round, the medians, the suite / decode-only
ratios and whether every setting gave the same metric means. On the CPU the engine does not decode ahead (each
batch is computed as it is handed one), so the settings change nothing there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ahead", default="1,2,3", help="comma-separated numbers of pairs ahead")
    args = parser.parse_args()
    command = ["--device", args.device, "--rounds", str(args.rounds), "--clips", "3", "--frames", "32",
               "--size", "640x360"]
    for ahead in args.ahead.split(","):
        command += ["--setting", f"{ahead}-ahead", f"engine.PAIRS_AHEAD_ON_DEVICE={int(ahead)}"]
    ab_settings.measure(ab_settings.build_parser().parse_args(command))


if __name__ == "__main__":
    main()
