#!/usr/bin/env bash
# Everything that needs a GPU, in one script, in under 8 minutes, every figure under one folder:
#
#   bash benchmarks/gpu_check.sh [OUT_FOLDER]     (default: $OUT, else benchmarks/results/gpu_check)
#
#   1. the device and the versions                         -> device.txt
#   2. the CUDA tests (tests/models/test_cuda.py, tests/training/test_speed_cuda.py)
#                                                          -> cuda_tests.log
#   3. Transformer_DCN_MicroLens_tiny and _demo with --gpu 0 (their result lines)
#                                                          -> tiny_run.log, demo_run.log
#   4. prediction of the demo's test split on the GPU      -> prediction.log, submission zip
#   5. a 1-GPU torchrun run of the tiny expid              -> torchrun.log
#   6. the throughput benchmark in the time left           -> gpu_throughput.{md,json}
#
# summary.txt lists each step with its exit status and seconds; results.txt collects the
# `result ...` lines. A step that fails does not stop the others (the exit status is 1 if any
# failed). Run from anywhere; the script works in the repository root.
set -u

TOTAL_BUDGET_S=${GPU_CHECK_BUDGET_S:-470}      # under 8 minutes, with room to write the files
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${1:-${OUT:-$REPO/benchmarks/results/gpu_check}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$REPO" || exit 2
START=$(date +%s)
FAILED=0
: > "$OUT_DIR/summary.txt"
: > "$OUT_DIR/results.txt"

elapsed() { echo $(( $(date +%s) - START )); }

# step NAME TIMEOUT_S COMMAND...: run COMMAND with a time limit, log to NAME.log, record status.
step() {
    local name=$1 limit=$2; shift 2
    local began=$(date +%s)
    echo "== $name (limit ${limit}s, at $(elapsed)s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local status=$?
    local took=$(( $(date +%s) - began ))
    [ $status -eq 0 ] || FAILED=1
    [ $status -eq 124 ] && echo "   timed out after ${limit}s" | tee -a "$OUT_DIR/$name.log"
    printf '%-14s exit=%-3s %4ss  %s\n' "$name" "$status" "$took" \
        "$(echo "$*" | tr '\n' ' ' | cut -c1-110)" >> "$OUT_DIR/summary.txt"
    grep -h '^result ' "$OUT_DIR/$name.log" | sed "s/^/$name: /" >> "$OUT_DIR/results.txt"
    tail -n 3 "$OUT_DIR/$name.log" | sed 's/^/   /'
}

{
    nvidia-smi || true
    python -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU'); print('bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
    python -c "import triton; print('triton', triton.__version__)" 2>/dev/null \
        || echo "triton: not installed (compile: true falls back to eager on the GPU)"
} > "$OUT_DIR/device.txt" 2>&1
cat "$OUT_DIR/device.txt" | tail -n 5
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA GPU visible; nothing to check" | tee -a "$OUT_DIR/summary.txt"
    exit 2
fi

# The synthetic data every step needs (generated once, as the pipeline does on first use).
step data 120 python -c "from fuxictr_mmctr.pipeline import datasets, config_check as c; \
d = c.read_yaml('config/dataset_config.yaml'); [datasets.ensure_dataset(dict(d[k], dataset_id=k)) \
for k in ('MicroLens_synth_tiny', 'MicroLens_synth_demo', 'MicroLens_synth_full')]" 
step cuda_tests 150 python -m pytest tests/models/test_cuda.py tests/training/test_speed_cuda.py -q -rs
step tiny_run 60 python run_expid.py --expid Transformer_DCN_MicroLens_tiny --gpu 0
step demo_run 120 python run_expid.py --expid Transformer_DCN_MicroLens_demo --gpu 0
step prediction 60 python prediction.py --expid Transformer_DCN_MicroLens_demo --gpu 0
cp submission/Transformer_DCN_MicroLens_demo.zip "$OUT_DIR/" 2>/dev/null || true
step torchrun 90 torchrun --standalone --nproc_per_node 1 run_expid.py \
    --expid Transformer_DCN_MicroLens_tiny --gpu 0

# The benchmark gets what is left: it starts no new row once its budget is spent (the rows it
# could not start are listed as skipped), and the time limit leaves room for the last row.
LEFT=$(( TOTAL_BUDGET_S - $(elapsed) ))
BUDGET=$(( LEFT - 60 ))
[ $BUDGET -lt 30 ] && BUDGET=30
step throughput $(( LEFT > 60 ? LEFT : 60 )) python benchmarks/gpu_throughput.py \
    --out-dir "$OUT_DIR" --budget-s "$BUDGET" --seconds 2
cp checkpoints/MicroLens_synth_demo/Transformer_DCN_MicroLens_demo.log "$OUT_DIR/" 2>/dev/null || true

echo "== done in $(elapsed)s: $OUT_DIR"
cat "$OUT_DIR/summary.txt" "$OUT_DIR/results.txt"
exit $FAILED
