#!/usr/bin/env bash
# The whole slimformer pipeline on the built-in toy data, in a few minutes on a laptop CPU:
#   train a small supernet -> measure a cpu-ort latency table for its space -> search -> prune
#   -> fine-tune -> export (ONNX + TorchScript, parity-checked) -> benchmark against timm.
# Usage: bash scripts/end_to_end.sh [OUT_DIR]      (default runs/e2e; rerunning resumes/reuses what exists)
set -euo pipefail
OUT=${1:-runs/e2e}
LUTS="$OUT/luts"
mkdir -p "$OUT"
sf() { echo "+ slimformer $*" >&2; slimformer "$@"; }

# 1. supernet on the tiny space (32 px, 10 classes), sandwich rule + in-place KD + Gumbel architecture weights
if [ ! -f "$OUT/train/best.pt" ]; then
  sf train --space tiny --data builtin --epochs 6 --steps-per-epoch 40 --batch-size 64 --gumbel \
     --out "$OUT/train-runs" --quiet
  mkdir -p "$OUT/train" && cp "$(ls -td "$OUT"/train-runs/*/ | head -1)"/{best.pt,metrics.jsonl,curves.png} "$OUT/train/"
fi

# 2. a latency table for this machine and the tiny space (onnxruntime, one thread), then its fidelity
sf lut build --device cpu-ort-tiny --space tiny --lut-dir "$LUTS" --quiet
sf lut validate --device cpu-ort-tiny --lut-dir "$LUTS" --samples 20 --out "$OUT" --quiet

# the budget: halfway between the smallest and the largest subnet on that table
BUDGET=$(python - "$LUTS" <<'PY'
import sys
from slimformer.latency_lut import get_table
t = get_table("cpu-ort-tiny", lut_dir=sys.argv[1])
print(round((t.predict(t.space.smallest()) + t.predict(t.space.largest())) / 2, 4))
PY
)
echo "budget: $BUDGET ms" >&2

# 3. accuracy-driven latency slimming from the largest subnet
sf search --budget-ms "$BUDGET" --device cpu-ort-tiny --lut-dir "$LUTS" --supernet "$OUT/train/best.pt" \
   --data builtin --out "$OUT/search" --no-progress

# 4. Taylor importance + MILP reallocation of Q/K/V/heads/FFN at 90% of that budget
PRUNE_BUDGET=$(python -c "print(round($BUDGET * 0.9, 4))")
sf prune --supernet "$OUT/train/best.pt" --arch "$OUT/search/arch.json" --device cpu-ort-tiny --lut-dir "$LUTS" \
   --budget-ms "$PRUNE_BUDGET" --data builtin --batches 4 --out "$OUT/prune-runs"
PRUNE=$(ls -td "$OUT"/prune-runs/*/ | head -1)

# 5. fine-tune the pruned subnet with distillation from the supernet's largest subnet
sf finetune --arch "$PRUNE" --supernet "$OUT/train/best.pt" --data builtin --epochs 2 --steps-per-epoch 30 \
   --out "$OUT/finetune-runs" --quiet
FT=$(ls -td "$OUT"/finetune-runs/*/ | head -1)

# 6. export (BN folded, parity-checked against PyTorch) and benchmark against two timm baselines
sf export "$FT" --format onnx --format torchscript -o "$OUT/export" --lut-dir "$LUTS"
sf bench "$OUT/export/model.onnx" timm:mobilenetv2_100 timm:efficientvit_m0 --backend onnxruntime --repeats 10 \
   --with-lut cpu-ort-tiny --lut-dir "$LUTS" --out "$OUT"
echo "done: everything is under $OUT (try: slimformer serve --model $OUT/export/model.onnx)" >&2
