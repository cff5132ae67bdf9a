"""benchmarks/flow_kernels.py: needs a GPU; without one it says so as a usage error (exit 2) before any work."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is what runs without a GPU")
def test_without_a_gpu_the_benchmark_is_a_usage_error(benchmark_module, capsys):
    flow_kernels = benchmark_module("flow_kernels")
    assert set(flow_kernels.SETTINGS.values()) == {True, False}  # the fused kernels against the torch ops
    with pytest.raises(SystemExit) as exit_info:
        flow_kernels.main(["--size", "176x144", "--rounds", "1"])
    assert exit_info.value.code == 2
    assert "needs a CUDA device" in capsys.readouterr().err
