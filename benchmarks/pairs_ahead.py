"""The default suite on a GPU by the number of clip pairs decoding ahead of the one being scored
(``engine.PAIRS_AHEAD_ON_DEVICE``), against decode-only, in alternating rounds in one process:

    python benchmarks/pairs_ahead.py [--device cuda] [--rounds 7] [--ahead 1,2,3]

On ``suite_speed.py``'s camera-like clips (3 clips x 32 frame pairs at 640x360, batch 16, no cache), after an
untimed warm-up: per round decode-only, then the suite once per setting. Prints each round, the medians, the
suite / decode-only ratio per round, and whether every setting gave the same metric means. On the CPU the
engine does not decode ahead (each batch is computed as it is handed one), so the settings change nothing there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_alexnet_weights  # noqa: E402
from pipeline_throughput import decode_only  # noqa: E402
from suite_speed import make_clips, timed  # noqa: E402

from foresight_eval import RunContext, ScoreOptions, engine, score  # noqa: E402
from foresight_eval.distributed import resolve_device  # noqa: E402
from foresight_eval.metrics.registry import prepare_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ahead", default="1,2,3", help="comma-separated numbers of pairs ahead")
    args = parser.parse_args()
    device = resolve_device(args.device)
    settings = [int(value) for value in args.ahead.split(",")]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ensure_alexnet_weights(tmp)
        clips = make_clips(tmp / "clips", 3, 32, 360, 640)
        warm_up = make_clips(tmp / "warm_up", 2, 32, 360, 640)
        options = ScoreOptions(batch_size=16)
        suite = [metric.name for metric in prepare_metrics(None, {}, RunContext(device=device))[0]]

        def run(folders=clips):
            return score(*folders, suite, options=options, device=device, resources={"cache_dir": None})

        run(warm_up)
        decode_rounds: list[float] = []
        suite_rounds: dict[int, list[float]] = {ahead: [] for ahead in settings}
        means = {}
        for round_index in range(args.rounds):
            decode_rounds.append(timed(lambda: decode_only(*clips, options, device))[0])
            for ahead in settings:
                engine.PAIRS_AHEAD_ON_DEVICE = ahead
                seconds, result = timed(run)
                suite_rounds[ahead].append(seconds)
                means[ahead] = {metric: summary.mean for metric, summary in result.metrics.items()}
            print(f"round {round_index}: decode-only {decode_rounds[-1]:.3f} s; "
                  + ", ".join(f"{ahead} ahead {rounds[-1]:.3f} s" for ahead, rounds in suite_rounds.items()), flush=True)
        decode = statistics.median(decode_rounds)
        for ahead, rounds in suite_rounds.items():
            suite_s = statistics.median(rounds)
            print(f"{ahead} ahead: suite median {suite_s:.3f} s, decode-only {decode:.3f} s, ratio {suite_s / decode:.2f}x;"
                  " per round " + ", ".join(f"{s / d:.2f}" for s, d in zip(rounds, decode_rounds)))
        print("same means for every setting:", all(means[ahead] == means[settings[0]] for ahead in settings))


if __name__ == "__main__":
    main()
