#!/usr/bin/env bash
# GPU figures of `generate --encoder hybrid` (docs/hybrid.md): the full preset with random weights in bf16,
# both encoders one after the other (encoder latencies, the hybrid's overhead, seconds per clip, peak memory),
# then the seed replay on the full preset (generate both encoders -> score -> gates -> report -> leaderboard).
# Usage, from the repository root on the GPU machine: bash benchmarks/generate_hybrid_gpu.sh [LOG_DIR]
# Needs av, diffusers, natsort and pycocotools importable besides torch/transformers (docs/hybrid.md lists the wheels).
set -uo pipefail
log_dir=${1:-runs/generate-hybrid}
mkdir -p "$log_dir"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$log_dir/gpu.txt"
python3 benchmarks/generate_latency.py --preset full --random-weights --device cuda --encoders vlm,hybrid \
    --clips 4 --json "$log_dir/generate_hybrid.json" 2>&1 | grep -v "should be kept in float32" \
    | tee "$log_dir/generate_hybrid.txt"
# The replay writes many files; only its verdicts and the report's Markdown come back with the log.
replay=$(mktemp -d)
python3 examples/seed_replay.py --preset full --random-weights --device cuda --out "$replay" 2>&1 \
    | grep -v "should be kept in float32" | tail -60 | tee "$log_dir/seed_replay.txt"
cp "$replay/seed_replay.json" "$replay/report/report.md" "$log_dir/" 2>/dev/null
