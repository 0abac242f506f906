#!/usr/bin/env bash
# The prepared GPU run of issue 20 (`make gpu-bench`): smoke test of every kind, CPU against GPU per precision,
# syncs per batch, images/s and per-stage p50/p99 for three models, peak memory, a forced out-of-memory error.
# Writes gpu.json and gpu.md to $OUT (default .run/gpu). Fails at once without CUDA.
#   benchmarks/gpu.sh                 on a CUDA GPU
#   benchmarks/gpu.sh --device cpu    dry run at the smallest sizes (tests/engine/test_gpu_bench.py runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-.run/gpu}
exec "$PY" benchmarks/gpu_run.py --out "$OUT" "$@"
