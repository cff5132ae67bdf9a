"""Coverage of the two-level bootstrap CI (foresight_eval.study.two_level_bootstrap) on synthetic studies
with known variance components: y_ij = a_i + e_ij, sd(a) = sd_clip, sd(e) = sd_seed, true mean 0.

    python benchmarks/study_coverage.py [--studies 1000] [--clips 30] [--seeds 3] [--resamples 1000]

Prints, per (sd_clip, sd_seed), the share of studies whose 95% CI covers 0 (docs/study.md quotes it).
"""

from __future__ import annotations

import argparse

import numpy as np

from foresight_eval.stats import BootstrapConfig
from foresight_eval.study import two_level_bootstrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    for sd_clip, sd_seed in ((1.0, 1.0), (0.3, 1.0), (1.0, 0.3)):
        rng = np.random.default_rng(0)
        covered = 0
        for study in range(args.studies):
            values = sd_clip * rng.normal(size=(args.clips, 1)) + sd_seed * rng.normal(size=(args.clips, args.seeds))
            estimate = two_level_bootstrap(values, BootstrapConfig(n_resamples=args.resamples, seed=study))
            covered += estimate.ci_low <= 0.0 <= estimate.ci_high
        print(f"sd_clip={sd_clip} sd_seed={sd_seed} clips={args.clips} seeds={args.seeds}: "
              f"coverage {covered / args.studies:.3f} over {args.studies} studies")


if __name__ == "__main__":
    main()
