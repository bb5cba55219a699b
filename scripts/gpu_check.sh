#!/usr/bin/env bash
# One prepared command for a GPU machine (issue #11): the CUDA tests, the benchmark tables and training speed.
#
#   scripts/gpu_check.sh                      # on the GPU machine, from a checkout: installs nothing
#   scripts/gpu_check.sh --device cpu --tiny  # the same steps, tiny, on a CPU (what the test suite runs)
#   scripts/gpu_check.sh --dry-run            # print the steps only
#
# Runs with PYTHONPATH=src and the machine's own python3 (torch, timm, onnx, onnxruntime; no TensorRT, no
# internet). Everything lands in $OUT (default ./gpu_check_out), at most 8 files, no sub-folders:
#   run.log (every step's output), steps.txt (name, exit status, seconds), summary.md (the tables and the profile),
#   bench_models.json, bench_d1.json, bench_d1_compiled.json, bench_peers.json (gpunet benchmark results),
#   train.json (scripts/train_speed.py records).
# A time budget (GPU_CHECK_BUDGET seconds, default 450: under 8 minutes with start-up) caps every step;
# a step that would start with too little time left is recorded as skipped. The benchmark writes its
# results after every record, so a step stopped at its limit keeps what it finished.
# GPU_CHECK_FULL_SUITE=1 runs the whole test suite in the pytest step (with GPU_CHECK_BUDGET raised to match).
# Golden numerics need NVIDIA's reference files: GPUNET_REFERENCE_DIR, else ./.gpu_ref/reference, else
# ../shared/reference (carry a copy with the checkout to the GPU machine: see docs/performance.md).
set -u
cd "$(dirname "$0")/.."

DEVICE=cuda
TINY=0
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --dry-run) DRY=1; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (use --device DEV, --tiny, --dry-run)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
OUT=${OUT:-./gpu_check_out}
BUDGET=${GPU_CHECK_BUDGET:-450}
RESERVE=15  # seconds kept for the summary
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
if [ -z "${GPUNET_REFERENCE_DIR:-}" ]; then
  for d in ./.gpu_ref/reference ../shared/reference; do
    if [ -f "$d/golden/weights.py" ]; then export GPUNET_REFERENCE_DIR="$PWD/$d"; break; fi
  done
fi

if [ "$TINY" = 1 ]; then
  MODELS=gpunet_0; IMG=(--img-size 32); PEERS=timm:mobilenetv3_small_050; BATCHES=1,2; BIG=2
  REPEATS=(--repeats 2 --warmup 1); TRAIN=(--models gpunet_0 --img-size 32 --batch-size 2 --steps 1 --warmup 1)
  TESTS=(tests/test_cuda.py); COMPILE_LIMIT=300  # inductor on a small CPU: minutes for a training graph
else
  MODELS=all; IMG=(); PEERS=timm:efficientnet_b0,timm:efficientnet_b2,timm:efficientnet_b3,timm:resnet50,timm:convnext_tiny
  BATCHES=1,16,128; BIG=128
  REPEATS=(--repeats 50 --warmup 10); TRAIN=(--models gpunet_0,gpunet_d1 --batch-size 64 --steps 15 --warmup 5)
  TESTS=(tests/test_cuda.py tests/test_padding.py tests/test_deploy.py tests/test_benchmark.py); COMPILE_LIMIT=90
fi
if [ "${GPU_CHECK_FULL_SUITE:-0}" = 1 ]; then TESTS=(tests -n 8); fi  # the whole suite (pytest-xdist); raise the budget
if [ "$DEVICE" = cpu ]; then PREC=fp32; AMP=bf16; else PREC=fp16; AMP=fp16; fi
# the PyTorch paths without torch.compile; triton-dw* are skipped with the reason where Triton cannot run
PT_BACKENDS=eager,fused,padded,triton-dw,cudagraph,padded-cudagraph,triton-dw-cudagraph
BENCH=("$PY" -m gpunet benchmark --device "$DEVICE" --precision "$PREC" --no-plots "${IMG[@]}")

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ "$DRY" = 0 ]; then mkdir -p "$OUT" && : > "$OUT/run.log" && : > "$OUT/steps.txt"; fi

# step NAME LIMIT_S COMMAND...: run under the remaining budget, log its output and its exit status
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - RESERVE - ($(date +%s) - START) ))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$DRY" = 1 ]; then echo "$name (<= ${limit}s): $*"; return 0; fi
  if [ "$limit" -lt 10 ]; then printf '%-18s skipped (time budget spent)\n' "$name" >> "$OUT/steps.txt"; return 0; fi
  echo "===== $name (limit ${limit}s): $*" >> "$OUT/run.log"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >> "$OUT/run.log" 2>&1
  local rc=$?
  local note=""; [ "$rc" = 124 ] || [ "$rc" = 137 ] && note=" (stopped at its time limit)"
  printf '%-18s rc=%-3s %4ss%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$note" >> "$OUT/steps.txt"
  echo "$name: rc=$rc$note"
}

# keep NAME: the benchmark results of step NAME (whatever it finished) as $OUT/NAME.json
keep() { [ "$DRY" = 1 ] || { [ -f "$WORK/$1/results.json" ] && cp "$WORK/$1/results.json" "$OUT/$1.json"; } || true; }

step environment 30 "$PY" -c "import torch, platform, subprocess, shutil
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
if shutil.which('nvidia-smi'): print(subprocess.run(['nvidia-smi'], capture_output=True, text=True).stdout)"

# Order: what the targets need first; torch.compile last, as it takes whatever time is left.
step bench_models 120 "${BENCH[@]}" --models "$MODELS" --batch-sizes 1 "${REPEATS[@]}" \
  --backends "$PT_BACKENDS" -o "$WORK/bench_models"
keep bench_models
step bench_d1 100 "${BENCH[@]}" --models gpunet_d1 --batch-sizes "$BATCHES" --repeats 20 --warmup 5 \
  --backends "$PT_BACKENDS" -o "$WORK/bench_d1"
keep bench_d1
# the kinds of work D1's time goes to (convolutions by kind, elementwise, pooling), for what to speed up next
step profile 45 "$PY" scripts/profile_kernels.py --model gpunet_d1 --device "$DEVICE" --precision "$PREC" \
  "${IMG[@]}" --backends fused,padded,triton-dw --batch-sizes "1,$BIG" --iters 10 --output "$WORK/profile.md"
step train_speed 75 "$PY" scripts/train_speed.py --device "$DEVICE" --amp "$AMP" --channels-last "${TRAIN[@]}" \
  --output "$OUT/train.json"
# one torchrun process: the trainer itself creates the NCCL group and wraps the model in DDP
step torchrun_ddp 45 "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 scripts/train_speed.py \
  --device "$DEVICE" --amp "$AMP" --channels-last "${TRAIN[@]/gpunet_0,gpunet_d1/gpunet_0}" --output "$OUT/train.json"
step pytest 100 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m "not slow" "${TESTS[@]}"
step bench_peers 60 "${BENCH[@]}" --models "" --peers "$PEERS" --batch-sizes 1 "${REPEATS[@]}" \
  --backends eager,fused,cudagraph -o "$WORK/bench_peers"
keep bench_peers
step train_compile "$COMPILE_LIMIT" "$PY" scripts/train_speed.py --device "$DEVICE" --amp "$AMP" --channels-last --compile \
  "${TRAIN[@]/gpunet_0,gpunet_d1/gpunet_0}" --output "$OUT/train.json"
# torch.compile (inductor) and mode="auto" (max-autotune) beside our own CUDA graphs, in one process: the
# combination that crashed. Compiling takes longest: stopped at its limit, it keeps the records it finished.
step bench_d1_compiled 150 "${BENCH[@]}" --models gpunet_d1 --batch-sizes "1,$BIG" --repeats 20 --warmup 5 \
  --backends cudagraph,compile-cudagraph,auto -o "$WORK/bench_d1_compiled"
keep bench_d1_compiled

if [ "$DRY" = 1 ]; then echo "report: scripts/gpu_report.py -> $OUT/summary.md"; exit 0; fi
"$PY" scripts/gpu_report.py --precision "$PREC" --models "$OUT/bench_models.json" --d1 "$OUT/bench_d1.json" \
  --d1 "$OUT/bench_d1_compiled.json" --peers "$OUT/bench_peers.json" --train "$OUT/train.json" \
  --steps "$OUT/steps.txt" --profile "$WORK/profile.md" > "$OUT/summary.md" 2>> "$OUT/run.log"
cat "$OUT/summary.md"
echo "gpu_check: $(( $(date +%s) - START ))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
