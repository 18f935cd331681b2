#!/usr/bin/env bash
# The GPU check (issue 18): on a CUDA machine, install the carried wheels, record the
# environment, run the GPU tests, the GPU benchmarks and one GPU-scale result, and write
# everything under one output folder; without CUDA, run the CPU-side steps only.
#
#   bash scripts/gpu_check.sh [OUTDIR]          (default: $OUT, else gpu_results/)
#
# Writes at most 7 files, all directly in OUTDIR:
#   gpu_check.log      everything printed (this script's stages and their output)
#   environment.json   python/torch/CUDA/GPU/compilers/package versions, KeOps config and probe
#   pytest_gpu.xml     junit XML of `pytest -m gpu tests/test_gpu.py`
#   interact_cuda.json hot path 1 on the GPU: f32 N = 1e4 … 1e7, f64 N = 1e4, 1e5 (benchmarks.gpu)
#   sgd_cuda.json      MMN-size online SGD on the GPU beside the CPU fused loop (benchmarks.sgd)
#   nscaling_cuda.json n-scaling to N = 1e5 with 16 seeds on the GPU beside the CPU (benchmarks.n_scaling)
#   summary.json       every stage's status and time, test outcomes, goals, fits (benchmarks.gpu summary)
# Without CUDA the three benchmark files are tiny CPU smokes: *_smoke_cpu.json.
#
# Time: the whole run stays within GPU_CHECK_BUDGET_S seconds (default 450, i.e. under 8
# minutes).  Every stage runs under `timeout` with its own cap, cut to what is left of the
# budget (less a reserve for the summary); a stage that would get less than its minimum is
# skipped and recorded as such; Python stages also get --budget-s (their cap less a margin)
# so they stop on their own and write what they measured.  The script always exits 0 once it
# has written summary.json: read the statuses there (a failed test is a result, not a crash).
#
# Environment: PYTHON (interpreter; default the repository's .venv/bin/python when there is
# one, else python3), GPU_CHECK_BUDGET_S, GPU_CHECK_INSTALL
# (0: never install wheels), GPU_CHECK_WHEELS (default .whl), GPU_CHECK_SITE (pip --target,
# default /tmp/site), KEOPS_CACHE_FOLDER (default /tmp/meanfield-gpu-check/keops).
set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-${OUT:-gpu_results}}"          # relative to the caller's directory
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
[[ -n "${PYTHON:-}" && "$PYTHON" == */* && "$PYTHON" != /* ]] && PYTHON="$PWD/$PYTHON"
cd "$REPO"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"     # make's venv
else PY=python3; fi
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
RESERVE=15                                   # seconds kept for the summary
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
STAGES="$WORK/stages.tsv"
: > "$STAGES"
START=$(date +%s)
export PYTHONUNBUFFERED=1
export KEOPS_CACHE_FOLDER="${KEOPS_CACHE_FOLDER:-${TMPDIR:-/tmp}/meanfield-gpu-check/keops}"
export KEOPS_VERBOSE="${KEOPS_VERBOSE:-0}" PYKEOPS_VERBOSE="${PYKEOPS_VERBOSE:-0}"
mkdir -p "$KEOPS_CACHE_FOLDER"

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
elapsed() { echo $(( $(date +%s) - START )); }

# run_stage NAME CAP MIN CMD...: run CMD under timeout for min(CAP, budget left - RESERVE)
# seconds (exported as STAGE_S for the command), or skip it when that is under MIN.
run_stage() {
    local name="$1" cap="$2" min="$3"; shift 3
    local left=$(( BUDGET - $(elapsed) - RESERVE ))
    local lim=$(( cap < left ? cap : left ))
    if (( lim < min )); then
        log "stage $name: skipped (time budget: ${left} s left, needs >= ${min} s)"
        printf '%s\tskipped\t-\t0\t%s\ttime budget\n' "$name" "$lim" >> "$STAGES"
        return 0
    fi
    export STAGE_S=$lim
    log "stage $name: start (limit ${lim} s): $*"
    local t0; t0=$(date +%s)
    timeout -s INT -k 20 "$lim" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    local dt=$(( $(date +%s) - t0 ))
    local status=ok
    if (( rc == 124 || rc == 137 )); then status=timeout; elif (( rc != 0 )); then status=failed; fi
    log "stage $name: $status (exit $rc, ${dt} s)"
    printf '%s\t%s\t%s\t%s\t%s\t\n' "$name" "$status" "$rc" "$dt" "$lim" >> "$STAGES"
    return 0
}

log "meanfield GPU check: repo $REPO, output $OUTDIR, budget ${BUDGET} s, python $PY"

# (a) carried wheels -------------------------------------------------------------------------
WHEELS="${GPU_CHECK_WHEELS:-.whl}"
SITE="${GPU_CHECK_SITE:-/tmp/site}"
if [[ "${GPU_CHECK_INSTALL:-1}" == "0" ]]; then
    log "install: skipped (GPU_CHECK_INSTALL=0)"
elif ! compgen -G "$WHEELS/*.whl" > /dev/null; then
    log "install: no wheels in $WHEELS/, using the installed packages"
elif "$PY" -c 'import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in ("pykeops", "keopscore", "ot", "dask", "distributed")) else 1)' 2>/dev/null; then
    log "install: skipped (pykeops, keopscore, ot, dask and distributed already import)"
else
    run_stage install 90 10 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# CUDA toolkit for KeOps (headers for nvrtc, libnvrtc): found from nvcc when not configured.
if [[ -z "${CUDA_HOME:-}" ]] && command -v nvcc > /dev/null; then
    export CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
fi
if [[ -n "${CUDA_HOME:-}" && -d "$CUDA_HOME/lib64" ]] && ! (ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'); then
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$CUDA_HOME/lib64"
fi

# (b) environment ------------------------------------------------------------------------------
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>> "$LOG"; then
    CUDA=1
    log "CUDA: yes"
    command -v nvidia-smi > /dev/null && nvidia-smi 2>&1 | tee -a "$LOG" > /dev/null
else
    CUDA=0
    log "no CUDA: running the CPU-side checks only"
fi
run_stage env 120 5 "$PY" -m benchmarks.gpu env --json "$OUTDIR/environment.json"

JUNIT="$OUTDIR/pytest_gpu.xml"
if (( CUDA )); then
    # (c) the GPU tests (first: they compile the KeOps formulas the benchmarks reuse)
    run_stage pytest 170 30 "$PY" -m pytest -m gpu tests/test_gpu.py -rA -p no:cacheprovider \
        --junitxml="$JUNIT" -o junit_family=xunit1
    # (d) the GPU benchmarks
    run_stage interact 140 30 bash -c '"$0" -m benchmarks.gpu interact --device cuda \
        --json "$1" --budget-s $((STAGE_S - 15))' "$PY" "$OUTDIR/interact_cuda.json"
    run_stage sgd 60 20 bash -c '"$0" -m benchmarks.sgd --device cuda --n 800 --d 40 --replicas 1 64 \
        --steps 1000 300 5000 --check-steps 200 --repeat 3 --budget-s $((STAGE_S - 15)) --json "$1"' \
        "$PY" "$OUTDIR/sgd_cuda.json"
    # (e) one GPU-scale result: n-scaling to N = 1e5, 16 seeds, beside the CPU at N <= 1000
    run_stage nscaling 240 40 bash -c '"$0" -m benchmarks.n_scaling --device cuda --n-max 100000 \
        --seeds 16 --cpu-n-max 1000 --budget-s $((STAGE_S - 15)) --json "$1"' \
        "$PY" "$OUTDIR/nscaling_cuda.json"
else
    # (c) the GPU tests skip cleanly without CUDA
    run_stage pytest 120 10 "$PY" -m pytest -m gpu tests/test_gpu.py -rA -p no:cacheprovider \
        --junitxml="$JUNIT" -o junit_family=xunit1
    # (d, e) tiny CPU smokes of the same benchmark entry points
    run_stage interact 60 5 "$PY" -m benchmarks.gpu interact --device cpu --n 40 80 --n-f64 40 --d 3 \
        --backend torch torch-eager dense-autograd --repeat 1 --fit-min-n 1 \
        --budget-s 40 --json "$OUTDIR/interact_smoke_cpu.json"
    run_stage sgd 60 5 "$PY" -m benchmarks.sgd --device cpu --n 20 --d 3 --replicas 2 \
        --steps 5 5 20 --check-steps 5 --repeat 1 --budget-s 40 --json "$OUTDIR/sgd_smoke_cpu.json"
    run_stage nscaling 60 5 "$PY" -m benchmarks.n_scaling --device cpu --n-min 8 --n-max 40 \
        --points-per-decade 5 --seeds 2 --d 3 --m0 20 --steps 5 --n-boot 100 --cpu-n-max 25 \
        --budget-s 40 --json "$OUTDIR/nscaling_smoke_cpu.json"
fi

# summary (always) -------------------------------------------------------------------------------
log "stages done after $(elapsed) s; writing summary.json"
timeout -s INT -k 5 "$RESERVE" "$PY" -m benchmarks.gpu summary "$OUTDIR" --stages "$STAGES" \
    --junit "$JUNIT" --budget-s "$BUDGET" --elapsed-s "$(elapsed)" --cuda "$CUDA" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if (( rc != 0 )); then
    log "summary: failed (exit $rc); the stage statuses were:"
    tee -a "$LOG" < "$STAGES"
fi
rm -rf "$WORK"
log "done in $(elapsed) s (budget ${BUDGET} s); results in $OUTDIR"
exit 0
