#!/usr/bin/env bash
# The GPU training path: default space at 224 px, AMP + channels_last sandwich steps on synthetic ImageNet-shaped
# data, images/s next to timm's efficientformer_l1 trained alone, peak memory, and resume through `slimformer train`.
# Without a CUDA device it runs a tiny CPU fallback of the same checks (not GPU figures).
# Usage: bash scripts/gpu_check.sh [OUT_DIR] [--steps 300] [--batch 128] [--device cuda|cpu]   (default OUT_DIR runs/gpu-check)
set -euo pipefail
OUT=${1:-runs/gpu-check}
shift || true
exec python "$(dirname "$0")/gpu_check.py" --out "$OUT" "$@"
