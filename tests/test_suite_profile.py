"""benchmarks/suite_profile.py's untraced split of the scoring thread's time (issue 17): every step it names is
timed on the scoring thread only, nested steps are not counted twice, and the code is given back after."""

from __future__ import annotations

import pytest

from foresight_eval import ScoreOptions, engine, score
from foresight_eval.decoding import Prefetched
from foresight_eval.metrics.pixel import PSNR

@pytest.fixture
def suite_profile(benchmark_module):
    return benchmark_module("suite_profile")


def test_the_scoring_threads_steps_are_timed_once_each_and_the_code_given_back(suite_profile, fixtures_dir):
    originals = (Prefetched.__next__, engine.PairInFlight.finish, engine.summarize_study, PSNR.update)
    with suite_profile.scoring_thread_steps(["psnr", "ssim"]) as spent:
        run = score(fixtures_dir / "preds" / "blur_mild", fixtures_dir / "refs", ["psnr", "ssim"], device="cpu",
                    options=ScoreOptions(context=4, batch_size=8), resources={"cache_dir": None})
    assert all(pair.ok for pair in run.pairs)
    for step in ("engine:wait for decoded batch", "engine:open pair", "engine:finish pair", "run:summaries and CIs",
                 "run:prepare metrics", "metric:psnr", "metric:ssim"):
        assert spent[step] > 0, step
    # the pool's warm-up runs inside the metrics' preparation and the per-frame rows inside finishing a pair:
    # counted in both steps, once at the top level
    nested = {suite_profile.TOP_LEVEL, "run:pool warm-up", "engine:per-frame rows"}
    assert spent["engine:per-frame rows"] > 0
    top_level = sum(seconds for step, seconds in spent.items() if step not in nested)
    assert spent[suite_profile.TOP_LEVEL] == pytest.approx(top_level, rel=1e-9)
    assert (Prefetched.__next__, engine.PairInFlight.finish, engine.summarize_study, PSNR.update) == originals
