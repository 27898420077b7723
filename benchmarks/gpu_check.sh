#!/usr/bin/env bash
# Everything that needs a GPU, in one script, in under 8 minutes, every figure under one folder.
#
#   bash benchmarks/gpu_check.sh [--cpu] [OUT_FOLDER]   the check (default OUT_FOLDER: $OUT, else
#                                                       benchmarks/results/gpu_check)
#   bash benchmarks/gpu_check.sh --wheelhouse           here, with network: fill build/gpu_wheels
#
# --cpu (or GPU_CHECK_DEVICE=cpu) rehearses every step on the CPU with tiny sizes: --gpu -1, gloo
# instead of nccl, the tiny synthetic data, CPU-sized throughput rows.
#
# How the package gets onto the GPU machine. That machine has no network and gets a copy of the
# working tree; its python3 holds torch (CUDA), triton, numpy, pandas, pyarrow, h5py,
# scikit-learn, pyyaml, tqdm, matplotlib and pytest, but not fuxictr, polars or ray. So:
#   1. here, once: `bash benchmarks/gpu_check.sh --wheelhouse` downloads the wheels of fuxictr
#      and polars for Python 3.12 on x86-64 Linux into build/gpu_wheels (~40 MB; build/ is
#      git-ignored, so the device tool must be told to carry it: carry ["build/gpu_wheels"]).
#   2. there: this script's `install` step pip-installs build/gpu_wheels/*.whl (no index, no
#      dependencies) into a folder of its own, and puts the checkout first on PYTHONPATH (the
#      package itself is not installed). ray's wheel (~80 MB) is too large to carry; FuxiCTR only
#      imports it, so the preflight writes an import-only stand-in (benchmarks/ray_stand_in.py,
#      any use raises) when ray is absent, last on PYTHONPATH.
#   3. the `preflight` step imports all of it and checks CUDA, bf16, nccl and triton in seconds;
#      if anything is missing it prints one line naming it and the script stops (exit 2).
#
# Steps, each with its own time limit (clamped so that the whole run stays inside
# GPU_CHECK_BUDGET_S, default 450 s on a GPU), each ending with a PASS/FAIL/SKIP line:
#   install, preflight   the environment (above)
#   data                 the synthetic datasets the steps use (generated once, as on first use)
#   cuda_tests           the CUDA tests (test_cuda.py, test_speed_cuda.py but compile, the
#                        GPU host-sync test): skipped, and so passing, on the CPU
#   tiny_run             Transformer_DCN_MicroLens_tiny with --gpu
#   ddp_one_gpu          the same under torchrun with FUXICTR_MMCTR_FORCE_DDP=1 at world size 1:
#                        nccl process group, DDP and every collective on one GPU (gloo on the
#                        CPU); it passes only if the log says the distributed path ran
#   second_run           Transformer_DCN_MicroLens_demo (CPU: DIN_MicroLens_tiny)
#   prediction           prediction.py of the second run's expid
#   compile              torch.compile in its own step: the GPU compile test and the compile
#                        plan tests (no recompiles after warm-up)
#   throughput           benchmarks/gpu_throughput.py in the time left: eager rows first,
#                        compiled rows last, MFU next to samples/s
# OUT_FOLDER gets summary.md (device, every step's status, seconds and last line, the result
# lines, the throughput table), gpu_throughput.{md,json} and logs.tar.gz (every step's log),
# all rewritten after each step, so a run cut off keeps what it did (at most 8 files come back
# from the device machine). Exit status: 0 all passed, 1 a step failed, 2 preflight failed.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=$REPO/build/gpu_wheels
PY=${PYTHON:-python3}
#: fuxictr: the release this package builds on; polars: the newest single-wheel release in the
#: range pyproject.toml allows (2.x splits into two wheels, 55 MB together).
WHEEL_PINS="fuxictr==2.3.10 polars==1.33.1"

if [ "${1:-}" = "--wheelhouse" ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" $WHEEL_PINS || exit 1
    cd "$REPO" || exit 1
    tree=$(git ls-files -z -co --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
    wheels=$(du -cb "$WHEELS"/*.whl | tail -n 1 | cut -f1)
    echo "wheelhouse: $(ls "$WHEELS" | tr '\n' ' ')"
    echo "travels: $(( (tree + wheels) / 1048576 )) MiB of the device tool's 64 (tree" \
         "$(( tree / 1048576 )), wheels $(( wheels / 1048576 ))); carry [\"build/gpu_wheels\"]"
    exit 0
fi

DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ "${1:-}" = "--cpu" ]; then DEVICE=cpu; shift; fi
case $DEVICE in
    cuda) GPU=${GPU_CHECK_GPU:-0}; TOTAL_BUDGET_S=${GPU_CHECK_BUDGET_S:-450}; TIME_SCALE=1
          SECOND_EXPID=Transformer_DCN_MicroLens_demo; DATASETS="tiny demo full"
          THROUGHPUT_ARGS="--gpu $GPU --batch-sizes 1024,8192 --seconds 2" ;;
    cpu)  GPU=-1; TOTAL_BUDGET_S=${GPU_CHECK_BUDGET_S:-1500}; TIME_SCALE=3
          SECOND_EXPID=DIN_MicroLens_tiny; DATASETS="tiny"
          THROUGHPUT_ARGS="--gpu -1 --scale tiny --batch-sizes 128 --seconds 1
                           --variants fp32,bf16,bf16+packed,bf16+compile" ;;
    *)    echo "error: GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'"; exit 2 ;;
esac
THROUGHPUT_MIN_S=$(( 90 * TIME_SCALE ))   # what the steps before it always leave to throughput

OUT_DIR=${1:-${OUT:-$REPO/benchmarks/results/gpu_check}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || exit 2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
mkdir -p "$WORK/logs" "$WORK/site" "$WORK/ray_stand_in"
trap 'rm -rf "$WORK"' EXIT   # the logs are in OUT_DIR/logs.tar.gz by then
export PYTHONPATH="$REPO:$WORK/site${PYTHONPATH:+:$PYTHONPATH}:$WORK/ray_stand_in"
export PYTHONUNBUFFERED=1
# Compilation caches of this run only: compile figures never depend on an earlier run's cache.
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor_cache" TRITON_CACHE_DIR="$WORK/triton_cache"
cd "$REPO" || exit 2
START=$(date +%s)
FAILED=0
: > "$WORK/steps.md"   # "| name | status | seconds | limit | last line |" rows of summary.md

elapsed() { echo $(( $(date +%s) - START )); }

# write_summary: summary.md and logs.tar.gz in OUT_DIR, as far as the run has come.
write_summary() {
    {
        echo "# gpu_check.sh on $(hostname) ($DEVICE mode)"
        echo
        echo "Started $(date -u -d "@$START" '+%Y-%m-%d %H:%M UTC'), $(elapsed) s until this" \
             "summary was written (after the last step listed)" \
             "(budget ${TOTAL_BUDGET_S} s); load average at the start: $LOAD_AT_START;" \
             "$(getconf _NPROCESSORS_ONLN) cores."
        echo
        grep -h '^preflight: ' "$WORK/logs/preflight.log" 2>/dev/null \
            | grep -v '^preflight: \(PASS\|FAIL\)' | sed 's/^preflight: /- /'
        echo
        echo "| step | status | seconds | limit s | last line of its log |"
        echo "|---|---|---|---|---|"
        cat "$WORK/steps.md"
        echo
        echo "Result lines:"
        echo
        grep -h '^result ' "$WORK"/logs/*.log 2>/dev/null | sed 's/^/    /'
        for table in "$OUT_DIR"/gpu_throughput.md "$OUT_DIR"/gpu_throughput_cpu_smoke.md; do
            [ -f "$table" ] && { echo; sed 's/^# /## /' "$table"; }
        done
    } > "$OUT_DIR/summary.md.tmp"
    mv "$OUT_DIR/summary.md.tmp" "$OUT_DIR/summary.md"
    tar -czf "$OUT_DIR/logs.tar.gz.tmp" -C "$WORK" logs && \
        mv "$OUT_DIR/logs.tar.gz.tmp" "$OUT_DIR/logs.tar.gz"
}

# record NAME STATUS SECONDS LIMIT NOTE: one summary row and the step's PASS/FAIL/SKIP line.
record() {
    local note=${5//|/\\|}
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "${note:0:160}" >> "$WORK/steps.md"
    echo "== $1: $2 (${3}s of ${4}s) $5"
    [ "$2" = FAIL ] && FAILED=1
    write_summary
}

# step NAME LIMIT_S [--expect PATTERN] COMMAND...: run COMMAND (limit clamped to the budget
# left), log to logs/NAME.log; PASS when it exits 0 (and its log has PATTERN, if given).
step() {
    local name=$1 limit=$(( $2 * TIME_SCALE )) expect=""; shift 2
    if [ "${1:-}" = "--expect" ]; then expect=$2; shift 2; fi
    local left=$(( TOTAL_BUDGET_S - $(elapsed) ))
    [ "$name" != throughput ] && left=$(( left - THROUGHPUT_MIN_S ))
    [ $limit -gt $left ] && limit=$left
    if [ $limit -lt 10 ]; then
        record "$name" SKIP 0 "$limit" "no time left in the ${TOTAL_BUDGET_S} s budget"
        return
    fi
    echo "== $name (limit ${limit}s, at $(elapsed)s): $(echo "$*" | head -n 1)"
    local log="$WORK/logs/$name.log" began=$(date +%s)
    echo "\$ $*" > "$log"
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
    local status=$? took=$(( $(date +%s) - began ))
    local last=$(grep -v '^\s*$' "$log" | tail -n 1)
    tail -n 4 "$log" | sed 's/^/   /'
    if [ $status -eq 124 ] || [ $status -eq 137 ]; then
        record "$name" FAIL "$took" "$limit" "timed out after ${limit}s; last: $last"
    elif [ $status -ne 0 ]; then
        record "$name" FAIL "$took" "$limit" "exit $status: $last"
    elif [ -n "$expect" ] && ! grep -q "$expect" "$log"; then
        record "$name" FAIL "$took" "$limit" "exit 0 but the log lacks '$expect'"
    else
        record "$name" PASS "$took" "$limit" "$last"
    fi
}

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
echo "gpu_check: $DEVICE mode, budget ${TOTAL_BUDGET_S}s, out $OUT_DIR, work $WORK"

# -- the environment -------------------------------------------------------------------------
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    step install 60 env PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --no-index --no-deps \
        --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl
else
    record install PASS 0 0 "no $WHEELS: nothing to install (the packages must be there)"
fi
step preflight 60 "$PY" benchmarks/gpu_preflight.py --device "$DEVICE" \
    --ray-stand-in "$WORK/ray_stand_in"
grep -h '^preflight: ' "$WORK/logs/preflight.log" | tail -n 1
if ! grep -q '^preflight: PASS' "$WORK/logs/preflight.log"; then
    echo "gpu_check: stopped after $(elapsed)s: the preflight failed (summary: $OUT_DIR/summary.md)"
    exit 2
fi

# -- checks ----------------------------------------------------------------------------------
step data 150 "$PY" -c "import sys  # the synthetic datasets the steps use
from fuxictr_mmctr.pipeline import datasets, config_check as c
d = c.read_yaml('config/dataset_config.yaml')
for preset in sys.argv[1:]:
    key = 'MicroLens_synth_' + preset
    datasets.ensure_dataset(dict(d[key], dataset_id=key))
print('datasets ready:', ', '.join(sys.argv[1:]))" $DATASETS
step cuda_tests 100 "$PY" -m pytest -rs -p no:cacheprovider -m cuda -k "not compile" \
    tests/models/test_cuda.py tests/training/test_speed_cuda.py tests/training/test_host_sync.py
step tiny_run 60 "$PY" run_expid.py --expid Transformer_DCN_MicroLens_tiny --gpu "$GPU"
step ddp_one_gpu 75 --expect "Distributed: 1 processes" \
    env FUXICTR_MMCTR_FORCE_DDP=1 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 run_expid.py \
    --expid Transformer_DCN_MicroLens_tiny --gpu "$GPU"
step second_run 120 "$PY" run_expid.py --expid "$SECOND_EXPID" --gpu "$GPU"
step prediction 60 "$PY" prediction.py --expid "$SECOND_EXPID" --gpu "$GPU"
step compile 120 "$PY" -m pytest -rs -p no:cacheprovider \
    tests/training/test_speed_cuda.py -k compile tests/training/test_compile_plan.py

# -- the throughput benchmark in the time left -----------------------------------------------
# It starts no new row once its budget is spent (those rows say 'skipped'); the step's limit
# leaves 60 s (CPU: 180 s) for the row in progress.
LEFT=$(( TOTAL_BUDGET_S - $(elapsed) ))
step throughput "$(( LEFT / TIME_SCALE ))" "$PY" benchmarks/gpu_throughput.py --out-dir "$OUT_DIR" \
    --budget-s "$(( LEFT - 60 * TIME_SCALE > 30 ? LEFT - 60 * TIME_SCALE : 30 ))" $THROUGHPUT_ARGS

write_summary
echo "gpu_check: done in $(elapsed)s; $OUT_DIR/summary.md"
cat "$WORK/steps.md"
exit $FAILED
