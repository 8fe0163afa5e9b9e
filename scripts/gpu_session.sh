#!/usr/bin/env bash
# Every check of this project that needs a CUDA GPU, in one call (GPU time is short: one run, then give it back).
#   1. the training path (scripts/gpu_check.sh): default space at 224 px, AMP + channels_last sandwich steps,
#      images/s next to timm's efficientformer_l1 alone, peak memory, resume; then (last, 60 steps) the same without channels_last;
#   2. CUDA latency tables (benchmarks/lut_fidelity_matrix.py, backend torch-cuda): default space, batch 1 and 64,
#      each built and validated on 100 random subnets of a seed the build never used.
# Each step has its own time limit and the next runs whatever the last did; everything lands in OUT_DIR
# (summary.txt, env.txt, the steps' JSON, and all run folders in gpu_runs.tgz). Without a CUDA GPU it runs the
# training checks' CPU fallback and says that the CUDA tables were skipped.
# Usage: bash scripts/gpu_session.sh [OUT_DIR] [TRAIN_STEPS]   (default runs/gpu-session, 200)
set -uo pipefail
OUT=${1:-runs/gpu-session}
STEPS=${2:-200}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/gpu_session.XXXXXX)
export PYTHONUNBUFFERED=1 PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" SLIMFORMER_CACHE="$WORK/cache"
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log its output, note its exit status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$SUMMARY"
  timeout "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$SUMMARY"
}

{ date -u; nvidia-smi 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import torch, timm, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'timm', timm.__version__, 'onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers());
print('gpu:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
  nproc; grep -m1 'model name' /proc/cpuinfo; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")

if [ "$CUDA" = 1 ]; then
  step train 180 "$PY" "$HERE/scripts/gpu_check.py" --out "$WORK/gpu-check" --steps "$STEPS"
  step lut-cuda 330 "$PY" "$HERE/benchmarks/lut_fidelity_matrix.py" --cells 1x1-torch-cuda,1x64-torch-cuda \
    --lut-dir "$WORK/luts" --out "$WORK/matrix" --quiet
  step train-no-cl 60 "$PY" "$HERE/scripts/gpu_check.py" --out "$WORK/gpu-check-no-cl" --steps 60 --no-channels-last
else
  step train 300 "$PY" "$HERE/scripts/gpu_check.py" --out "$WORK/gpu-check" --device cpu
  echo "no CUDA GPU here: the torch-cuda latency cells were skipped (not GPU figures)" | tee -a "$SUMMARY"
fi

for f in gpu-check/gpu_check.json gpu-check-no-cl/gpu_check.json matrix/matrix.json matrix/matrix.md; do
  [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/${f//\//_}"
done
tar czf "$OUT/gpu_runs.tgz" -C "$WORK" --exclude cache . 2>/dev/null
cat "$SUMMARY"
echo "wrote $OUT (summary.txt, env.txt, step JSON, gpu_runs.tgz)"
