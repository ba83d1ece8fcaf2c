#!/usr/bin/env bash
# One command for a lent GPU machine, fitting 10 minutes (each step has a hard timeout; a step that fails or
# runs out of time is reported and the next one runs). JSON lines go to stdout and to $OUT/gpu_check.jsonl
# ($OUT defaults to benchmarks/results/gpu; logs beside it):
#   1. training samples/s of MoDE, the DiT with MoDE's active params and the CNN at widths 128, 512 and 1024,
#      eager, compiled (trainer.compile's torch.compile) and CUDA graphs (compile mode=reduce-overhead),
#      interleaved per run (benchmarks/train_throughput.py; ratios mode_vs_dit-w<width>-<mode>);
#   2. the MoE training and cached kernels: Triton vs torch._grouped_mm vs the loop vs the custom op
#      (benchmarks/kernels.py);
#   3. the compiled Triton kernels against their PyTorch twins (tests/kernels/triton_cases.py).
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # every step at smoke size on the CPU: checks the script, no GPU
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset KERNELS_BACKEND TRITON_INTERPRET
JSONL="$OUT/gpu_check.jsonl"
: > "$JSONL"
t0=$(date +%s)
failed=0

# step NAME TIMEOUT_S COMMAND...: run it, keep its JSON lines, say how it ended.
step() {
    local name=$1 limit=$2
    shift 2
    echo "[gpu_check] $name: $*" >&2
    timeout "$limit" "$@" 2> "$OUT/$name.log" | tee -a "$JSONL" | grep '^{'
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { failed=1; echo "[gpu_check] $name exit $rc (124: out of time); see $OUT/$name.log" >&2; }
    echo "[gpu_check] $name done after $(($(date +%s) - t0)) s" >&2
}

if [ "$DRY" -eq 1 ]; then
    TRAIN=(--device cpu --smoke --threads 1)
    step train-mode-dit 120 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --policies mode,dit,cnn
    step kernels 120 "$PY" benchmarks/kernels.py --quick --device cpu --threads 1
else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2
    "$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' >&2
    TRAIN=(--device cuda --batch 256 --rounds 3 --steps 10)
    # MoDE vs DiT first (the goal: MoDE/DiT >= 0.8x at width 512 and above), then CUDA graphs, then the CNN.
    step train-mode-dit 230 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --widths 128,512,1024 \
        --policies mode,dit --modes eager,compile
    step train-graphs 120 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --widths 128,512 \
        --policies mode,dit --modes eager,graphs
    step train-cnn 80 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --widths 128,512,1024 \
        --policies cnn --modes eager
    step kernels 90 "$PY" benchmarks/kernels.py
    # Fixed tiles for the correctness cases: autotuning every odd test shape would only add compile time.
    KERNELS_TEST_DEVICE=cuda KERNELS_AUTOTUNE=0 step kernel-tests 60 "$PY" -m pytest tests/kernels/triton_cases.py \
        --noconftest -p no:cacheprovider -o python_files=triton_cases.py -q -rfE
fi
lines=$(grep -c '^{' "$JSONL")
[ "$lines" -gt 0 ] || failed=1
echo "[gpu_check] $lines JSON lines in $JSONL after $(($(date +%s) - t0)) s" >&2
exit "$failed"
