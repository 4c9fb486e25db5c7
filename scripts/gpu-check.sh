#!/usr/bin/env bash
# CUDA smoke check of batched meta-training: builds the trainer and, when libtorch sees a CUDA
# device, runs a short batched meta-train on it (tasks go to CUDA device 0 automatically) and
# prints its decisions/s and inner steps/s; without a GPU it says so and exits 0.
#
#   scripts/gpu-check.sh [SECONDS=120] [K=128]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck disable=SC1090
source <(scripts/setup-libtorch.sh --env)
cargo build --release --locked -q -p lhopt-trainer

torch_python="${LHOPT_CACHE:-$HOME/.cache/lhopt}/torch-2.11.0/bin/python"
if ! command -v nvidia-smi >/dev/null 2>&1 \
    || ! "$torch_python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: no GPU (no nvidia-smi, or libtorch sees no CUDA device); nothing to check"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
scripts/batch-throughput.sh "${1:-120}" "${2:-128}" batched
