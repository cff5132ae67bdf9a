#!/usr/bin/env bash
# Every GPU benchmark in one go (a GPU machine is usually lent for a short while: batch the work).
# Usage: bash benchmarks/gpu_suite.sh [LOG_DIR]   (run from the repository root)
set -uo pipefail
log_dir=${1:-runs/gpu-suite}
mkdir -p "$log_dir"
export PYTHONUNBUFFERED=1
run() {  # name, command...: run one benchmark, keep its output, go on if it fails
    local name=$1; shift
    echo "=== $name: $*"
    "$@" 2>&1 | grep -v -i "warn" | tee "$log_dir/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$log_dir/gpu.txt"
run pipeline   python benchmarks/pipeline_throughput.py --device cuda --sizes 256x256,768x512 --clips 8 --frames 48
run score_gpu  python benchmarks/score_throughput.py --device cuda --clips 8 --frames 48
run score_cpu  python benchmarks/score_throughput.py --device cpu --clips 8 --frames 24
run spatial    python benchmarks/spatial_metrics.py --device cuda --sizes 256x256,768x512
run temporal   python benchmarks/temporal_metrics.py --device cuda --sizes 256x256,768x512
