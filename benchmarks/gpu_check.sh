#!/usr/bin/env bash
# One command for a lent GPU machine (fits in ~8 minutes): the compiled Triton MoE kernels against
# their PyTorch twins (fp32/fp16/bf16, odd shapes, CUDA-graph replay), then the full kernel benchmark.
# JSON lines go to stdout and to $OUT/kernels-gpu.jsonl ($OUT defaults to benchmarks/results).
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset KERNELS_BACKEND TRITON_INTERPRET
t0=$(date +%s)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'

# Fixed tiles for the correctness cases: autotuning every odd test shape would only add compile time.
KERNELS_TEST_DEVICE=cuda KERNELS_AUTOTUNE=0 timeout 170 "$PY" -m pytest tests/kernels/triton_cases.py \
    --noconftest -p no:cacheprovider -o python_files=triton_cases.py -rfE 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
echo "[gpu_check] kernel tests exit $tests_rc after $(($(date +%s) - t0)) s"

rm -f "$OUT/kernels-gpu.jsonl"
timeout 270 "$PY" benchmarks/kernels.py --out "$OUT/kernels-gpu.jsonl" 2> >(tee "$OUT/bench_stderr.log" >&2)
bench_rc=$?
echo "[gpu_check] benchmark exit $bench_rc after $(($(date +%s) - t0)) s"
# Inference paths on the GPU (cached variants, compiled, graph-captured, bf16/int8), then their speed.
"$PY" -m pytest -q tests/policies/test_inference_paths.py tests/kernels/test_cached_variants.py
paths_rc=$?
timeout 240 "$PY" -m benchmarks.inference --device cuda --sizes small,paper > "$OUT/inference-gpu.jsonl"
infer_rc=$?
echo "[gpu_check] inference tests exit $paths_rc, benchmark exit $infer_rc after $(($(date +%s) - t0)) s"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$paths_rc" -eq 0 ] && [ "$infer_rc" -eq 0 ]
