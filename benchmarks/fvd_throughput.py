"""FVD throughput through the scoring engine (decoding, resizing, I3D on both sides, Fréchet distance and
its bootstrap), in clip pairs per second, cold and with the reference features cached:

    python benchmarks/fvd_throughput.py                          # CPU, 256 clips x 16 frames x 224x224
    python benchmarks/fvd_throughput.py --device cuda
    python benchmarks/fvd_throughput.py --clips 8                # a quick CPU figure

Clips are synthetic moving shapes written as H.264 (fixtures/synthetic.py). The real I3D weights are
used when `weights fetch i3d-k400` has put them where the scoring looks (or --weights-dir); otherwise
seeded random weights in the standard file (throughput does not depend on the weights' values).
Run 1 starts from an empty feature cache; run 2 is the same run again, whose reference features come
from the cache, so only the predictions go through the network.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import make_pairs  # benchmarks/ is on sys.path when run as a script
from foresight_eval import ScoreOptions, score
from foresight_eval.errors import WeightsNotFound
from foresight_eval.metrics.fvd import I3D_WEIGHTS


def weights_folder(tmp: Path, weights_dir: Path | None) -> Path:
    try:
        return I3D_WEIGHTS.locate(weights_dir).parent
    except WeightsNotFound:
        from safetensors.torch import save_file

        from foresight_eval.metrics.i3d import InceptionI3d

        torch.manual_seed(0)
        save_file(InceptionI3d().state_dict(), str(tmp / "i3d_k400.safetensors"))
        print("note: random I3D weights (throughput only; values are not FVDs)", file=sys.stderr)
        return tmp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=256, help="clip pairs")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="clip width and height")
    parser.add_argument("--batch-size", type=int, default=16, help="engine frame batch")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        preds, refs = make_pairs(tmp / "clips", args.clips, args.frames, args.size, args.size)
        weights = weights_folder(tmp, args.weights_dir)
        rates = []
        for label in ("cold cache", "references cached"):
            start = time.perf_counter()
            run = score(preds, refs, ["fvd"], device=args.device, weights_dir=weights,
                        params={"fvd": {"frames": args.frames}}, resources={"cache_dir": tmp / "cache"},
                        options=ScoreOptions(batch_size=args.batch_size))
            seconds = time.perf_counter() - start
            rates.append(args.clips / seconds)
            cache = run.metrics["fvd"].set_values["cache"]
            print(f"{label}: {args.clips} clip pairs x {args.frames} frames x {args.size}^2 on {args.device}: "
                  f"{seconds:.1f} s, {rates[-1]:.2f} clip pairs/s (cache hits {cache['hits']}, "
                  f"misses {cache['misses']}), fvd {run.metrics['fvd'].mean:.4g}")
        print(f"speed-up of the cached run: {rates[1] / rates[0]:.2f}x")


if __name__ == "__main__":
    main()
