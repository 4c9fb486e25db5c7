#!/usr/bin/env bash
# The held-out table of the shipped policy's card: every policy given, the untuned default and
# any extra `lhopt eval` arguments, on task configurations meta-training never used, against the
# 35-run AdamW grid (cached in $LHOPT_CACHE/baselines, so a rerun only runs the controllers).
#
#   scripts/heldout-eval.sh --policy policies/v1.lhp --policy policies/default.lhp
#
# Tasks: NCF on MovieLens-100K and the text-rnn family (never trained on), and seeds 0-2 of the
# quadratic, algorithmic and image-mlp families (training samples its own seeds), at T = 300; NCF
# and image-mlp again at T = 1000 to show the policy holds on longer runs. 16 decisions, greedy,
# from each policy's start (the default hyperparameters at its file's start lr). Tables go to
# eval/heldout-300 and eval/heldout-1000.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/lhopt" eval --family ncf,text-rnn,quadratic,algorithmic,image-mlp --seeds 3 \
    --steps 300 --decisions 16 --out "$root/eval/heldout-300" "$@"
"$root/scripts/lhopt" eval --family ncf,image-mlp --seeds 3 \
    --steps 1000 --decisions 16 --out "$root/eval/heldout-1000" "$@"
